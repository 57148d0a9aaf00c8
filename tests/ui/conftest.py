"""Browser tests: Debian's Chromium, driven by Selenium, against a real ``airflow api-server``.

Everything runs on 127.0.0.1 in the test session's own AIRFLOW_HOME (see ``tests/conftest.py``):

- ``chromium_browser``: finds ``/usr/bin/chromium`` + ``/usr/bin/chromedriver``, installing the Debian
  packages ``chromium chromium-driver`` when missing and we are root with apt-get (else: skip);
- ``airflow_ui``: starts ``airflow dags test ocean_compute_example`` against the sandbox in the
  background, then ``airflow api-server`` (SimpleAuthManager with every user an admin, so no login;
  connection testing enabled), and stops the server by its PID at the end;
- ``driver``: a headless Chromium with a fresh profile.

Without a browser the browser tests skip; the results-manifest test needs none and still runs.

Screenshots go to a pytest temporary folder (printed at the end of the run by ``tests/conftest.py``, which
also collects the summary from the pytest-xdist workers). With
``OCEAN_UI_SCREENSHOTS_TO_DOCS=1`` they are also copied to ``docs/screenshots/`` when under 300 KB.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui import chromium
from tests.ui.support import (
    REPORT,
    AirflowUI,
    note,
    start_api_server,
    start_dag_run,
    stop_process,
)


@pytest.fixture(scope="session")
def chromium_browser() -> chromium.Browser:
    """Chromium + ChromeDriver, installed with apt-get if needed and possible; otherwise skip."""
    try:
        browser = chromium.ensure()
    except chromium.ChromiumUnavailable as exc:
        note(f"browser tests skipped: {exc}")
        pytest.skip(f"No Chromium for the browser tests: {exc}")
    if browser.installed_seconds:
        note(f"installed Debian chromium + chromium-driver in {browser.installed_seconds:.0f} s")
    return browser


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui-screenshots")
    REPORT["dir"] = path
    return path


@pytest.fixture(scope="module")
def airflow_ui(
    sandbox: dict[str, Any],
    airflow_db: str,
    screenshot_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AirflowUI]:
    """The example DAG running against the sandbox, and an api-server on a free 127.0.0.1 port."""
    workdir = tmp_path_factory.mktemp("airflow-ui")
    run = start_dag_run(sandbox, workdir)
    try:
        api = start_api_server(workdir)
    except BaseException:
        stop_process(run.process)
        raise
    try:
        yield AirflowUI(api=api, run=run, sandbox=sandbox, screenshots=screenshot_dir)
    finally:
        stop_process(api.process)
        stop_process(run.process)


@pytest.fixture(scope="module")
def driver(chromium_browser: chromium.Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium (fresh profile) driven through Debian's ChromeDriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_browser.chromium
    for flag in chromium.CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    service = Service(executable_path=chromium_browser.chromedriver, log_output=str(profile / "driver.log"))
    browser = webdriver.Chrome(service=service, options=options)
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()
