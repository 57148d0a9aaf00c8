"""The provider as a person sees it in the Airflow 3 UI, checked in headless Chromium.

1. The add-connection form offers the ``ocean`` type with the labels, placeholders, descriptions and
   hidden fields that ``get_provider_info()`` declares; enumerated extras are selects preset to their
   default with exactly the declared choices, numbers have their bounds, and no field reads ``null``.
2. A connection created through that form and pointing at the sandbox stores the defaults of the fields
   left alone and passes "Test Connection".
3. After ``airflow dags test ocean_compute_example``, the finished ``pay_and_start`` task shows the
   "Ocean job status" extra link with the Provider's status URL of that job.
4. The run's results manifest lists the plot (``summary.png``) the sample algorithm drew.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from airflow_provider_ocean.get_provider_info import get_provider_info
from airflow_provider_ocean.links import job_status_url
from tests.ui.support import DAG_ID, AirflowUI, decode_png, note, save_screenshot

pytestmark = [pytest.mark.chain, pytest.mark.slow]

CONN_ID = "ocean_ui"
#: what Airflow 3.3's select shows when it holds no value
PLACEHOLDER = "Select Value"
WAIT = 30


def _ocean_type() -> dict[str, Any]:
    return next(t for t in get_provider_info()["connection-types"] if t["connection-type"] == "ocean")


def _wait(driver: Any, condition: Any, timeout: float = WAIT, message: str = "") -> Any:
    return WebDriverWait(driver, timeout).until(condition, message)


def _dialog(driver: Any) -> Any:
    return _wait(driver, ec.visibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))


def _label_of(driver: Any, field: Any) -> str:
    """The text of the form label that belongs to an input (Chakra: label id ``field::<input id>::label``)."""
    labels = driver.find_elements(By.ID, f"field::{field.get_attribute('id')}::label")
    if labels:
        return labels[0].text.replace("*", "").strip()
    row = field.find_element(By.XPATH, "./ancestor::*[.//label][1]")
    return row.find_element(By.TAG_NAME, "label").text.replace("*", "").strip()


def _row_text(field: Any) -> str:
    """All text of the form row holding ``field`` (label, input, description)."""
    return field.find_element(By.XPATH, "./ancestor::*[.//label][1]").text


def _open_add_form(driver: Any, ui: AirflowUI) -> Any:
    driver.get(f"{ui.api.url}/connections")
    button = _wait(driver, ec.element_to_be_clickable((By.XPATH, "//button[contains(., 'Add Connection')]")))
    button.click()
    dialog = _dialog(driver)
    hook_name = _ocean_type()["hook-name"]
    combobox = dialog.find_element(By.CSS_SELECTOR, "input[role=combobox]")
    combobox.click()
    combobox.send_keys(hook_name.split()[0])
    option = _wait(
        driver,
        ec.element_to_be_clickable((By.XPATH, f"//*[@role='option'][normalize-space()='{hook_name}']")),
        message=f"connection type {hook_name!r} is not offered in the add-connection form",
    )
    option.click()
    _wait(driver, ec.visibility_of_element_located((By.NAME, "host")))
    return dialog


def _expand(driver: Any, dialog: Any, title: str) -> None:
    dialog.find_element(By.XPATH, f".//button[normalize-space()='{title}']").click()
    time.sleep(0.3)  # accordion animation


def _select_value(driver: Any, dialog: Any, name: str) -> str:
    """The value a select (``FieldDropdown``: react-select in Airflow 3.3, root ``#element_<name>``)
    submits (its hidden input), checked against what it shows (the value, or the placeholder if none)."""
    root = _dialog(driver).find_element(By.ID, f"element_{name}")
    submitted = str(
        root.find_element(By.CSS_SELECTOR, f"input[type=hidden][name=element_{name}]").get_attribute("value")
    )
    shown = str(root.text).strip()
    assert shown == submitted or (not submitted and shown == PLACEHOLDER), (name, shown, submitted)
    return submitted


def _select_choices(driver: Any, dialog: Any, name: str) -> list[str]:
    """Open a select, read its options, close it again."""
    box = _dialog(driver).find_element(By.CSS_SELECTOR, f"#element_{name} input[role=combobox]")
    box.click()
    items = _wait(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, "[id^='react-select'][id*='-option-']") or False,
        message=f"the {name} select shows no options",
    )
    choices = [str(item.text).strip() for item in items]
    # close the menu by moving the focus away (Escape would close the whole dialog)
    _dialog(driver).find_element(By.XPATH, ".//*[normalize-space()='Add Connection']").click()
    _wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "[id^='react-select'][id*='-option-']"))
    return choices


def _fill(field: Any, value: str) -> None:
    field.click()
    field.clear()
    field.send_keys(value)


def _toast(driver: Any, timeout: float = 90) -> tuple[str, str]:
    """Wait for the connection-test toast; return (type, text)."""
    selector = "[data-scope=toast][data-part=root]"
    toast = _wait(
        driver,
        lambda d: next((t for t in d.find_elements(By.CSS_SELECTOR, selector) if "Test" in t.text), False),
        timeout,
        "no 'Test Connection' toast appeared",
    )
    return str(toast.get_attribute("data-type")), toast.text


def _click_test(driver: Any, ui: AirflowUI) -> tuple[str, str]:
    driver.get(f"{ui.api.url}/connections")
    row = _wait(
        driver, ec.visibility_of_element_located((By.XPATH, f"//tr[.//*[normalize-space()='{CONN_ID}']]"))
    )
    row.find_element(By.CSS_SELECTOR, "button[aria-label='Test Connection']").click()
    return _toast(driver)


def _finished_run(ui: AirflowUI) -> str:
    """Wait for the example DAG run; return its run id."""
    first = ui.run.returncode is None
    code = ui.run.wait()
    assert code == 0, f"airflow dags test {DAG_ID} failed (exit {code}):\n{ui.run.output()}"
    if first:
        note(f"airflow dags test {DAG_ID}: {ui.run.finished - ui.run.started:.0f} s")  # type: ignore[operator]
    if ui.run.run_id:
        return ui.run.run_id
    runs = ui.api.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?order_by=-start_date&limit=1").json()
    return str(runs["dag_runs"][0]["dag_run_id"])


def _xcom(ui: AirflowUI, run_id: str, task_id: str, key: str) -> Any:
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/xcomEntries/{key}"
    response = ui.api.request("GET", path)
    assert response.status_code == 200, response.text
    return response.json()["value"]


def test_connection_form_shows_ocean_fields(driver: Any, airflow_ui: AirflowUI) -> None:
    ocean = _ocean_type()
    behaviour = ocean["ui-field-behaviour"]
    dialog = _open_add_form(driver, airflow_ui)

    for name in ("host", "password"):
        field = dialog.find_element(By.NAME, name)
        assert _label_of(driver, field) == behaviour["relabeling"][name]
        assert field.get_attribute("placeholder") == behaviour["placeholders"][name]
    assert dialog.find_element(By.NAME, "password").get_attribute("type") == "password"
    for hidden in behaviour["hidden-fields"]:
        assert not dialog.find_elements(By.NAME, hidden), f"{hidden} should be hidden"
    save_screenshot(driver, airflow_ui.screenshots, "connection-form-standard", dialog)

    _expand(driver, dialog, "Standard Fields")  # collapse, so the extra fields fit on the screenshot
    _expand(driver, dialog, "Extra Fields")
    missing_placeholders = []
    for name, spec in ocean["conn-fields"].items():
        field = _wait(driver, lambda d, n=name: d.find_element(By.NAME, f"element_{n}"))
        assert _row_text(field).startswith(spec["label"]), (name, _row_text(field))
        assert spec["description"] in _row_text(field), name
        if name in behaviour["placeholders"] and field.get_attribute("type") != "hidden":
            shown = field.get_attribute("placeholder") or ""
            examples = spec["schema"].get("examples")
            if examples:
                options = dialog.find_elements(By.CSS_SELECTOR, f"datalist#list_{name} option")
                assert [o.get_attribute("value") for o in options] == [str(e) for e in examples]
            elif shown != behaviour["placeholders"][name]:
                missing_placeholders.append(name)
    if missing_placeholders:
        # Airflow 3.3's form renders only schema "examples" (as a datalist) for extra fields; the
        # ui-field-behaviour placeholders of extras never reach the UI.
        note(f"extra-field placeholders not rendered by this Airflow UI: {', '.join(missing_placeholders)}")

    # enumerated extras: a select preset to its default, offering exactly the declared choices
    for name, spec in ocean["conn-fields"].items():
        if "enum" in spec["schema"]:
            assert _select_value(driver, dialog, name) == spec["schema"]["default"], name
    save_screenshot(driver, airflow_ui.screenshots, "connection-form-extra", dialog)
    for name, spec in ocean["conn-fields"].items():
        if "enum" in spec["schema"]:
            assert _select_choices(driver, dialog, name) == spec["schema"]["enum"], name
            assert _select_value(driver, dialog, name) == spec["schema"]["default"], name  # still
    dialog = _dialog(driver)
    # numbers: bounded inputs preset to their default (if any)
    for name, spec in ocean["conn-fields"].items():
        schema = spec["schema"]
        if "minimum" in schema or "maximum" in schema:
            field = dialog.find_element(By.NAME, f"element_{name}")
            assert field.get_attribute("aria-valuemin") == str(schema["minimum"]), name
            if "maximum" in schema:
                assert field.get_attribute("aria-valuemax") == str(schema["maximum"]), name
            if "default" in schema:
                assert field.get_attribute("value") == str(schema["default"]), name
    # nothing in the form reads "null": not a select's text, not an input's value
    assert "null" not in dialog.text.split(), dialog.text
    for field in dialog.find_elements(By.CSS_SELECTOR, "input, select, textarea"):
        assert field.get_attribute("value") != "null", field.get_attribute("name")
    # a select cleared with its x shows the placeholder and submits nothing (unset: the default), no null
    for name, spec in ocean["conn-fields"].items():
        if "enum" in spec["schema"]:
            root = _dialog(driver).find_element(By.ID, f"element_{name}")
            root.find_element(By.CSS_SELECTOR, "button[aria-label='Clear selected options']").click()
            _wait(driver, lambda d, n=name: _select_value(d, None, n) == "", message=f"{name} not cleared")
            assert "null" not in _dialog(driver).find_element(By.ID, f"element_{name}").text, name


def test_connection_created_in_form_passes_test_connection(driver: Any, airflow_ui: AirflowUI) -> None:
    box = airflow_ui.sandbox
    airflow_ui.api.request("DELETE", f"/api/v2/connections/{CONN_ID}")
    dialog = _open_add_form(driver, airflow_ui)
    _fill(dialog.find_element(By.NAME, "connection_id"), CONN_ID)
    _fill(dialog.find_element(By.NAME, "host"), box["provider_url"])
    _fill(dialog.find_element(By.NAME, "password"), box["consumer"]["key"])
    _expand(driver, dialog, "Extra Fields")
    _fill(_wait(driver, lambda d: d.find_element(By.NAME, "element_rpc_url")), box["rpc_url"])
    _fill(dialog.find_element(By.NAME, "element_chain_id"), str(box["chain_id"]))
    _fill(dialog.find_element(By.NAME, "element_aquarius_url"), box["aquarius_url"])
    dialog.find_element(By.XPATH, ".//button[normalize-space()='Save']").click()
    _wait(driver, ec.invisibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))

    stored = airflow_ui.api.request("GET", f"/api/v2/connections/{CONN_ID}").json()
    assert (stored["conn_type"], stored["host"]) == ("ocean", box["provider_url"])
    extra = json.loads(stored["extra"])
    assert (extra["rpc_url"], extra["chain_id"], extra["aquarius_url"]) == (
        box["rpc_url"],
        box["chain_id"],
        box["aquarius_url"],
    )
    # the untouched choices and numbers are stored as their defaults, never as null
    for name, spec in _ocean_type()["conn-fields"].items():
        if "default" in spec["schema"]:
            assert extra.get(name) == spec["schema"]["default"], (name, extra)

    kind, text = _click_test(driver, airflow_ui)
    if kind != "success":
        # Airflow 3.3.2: the list's Test button sends port 0 for an empty port; the API then sees "another
        # endpoint" and, as the password is masked, answers 400 "Bad Request". Confirm that is the cause,
        # apply the documented workaround (store port 0) and test again.
        probe = airflow_ui.api.request(
            "POST",
            "/api/v2/connections/test",
            json={"connection_id": CONN_ID, "conn_type": "ocean", "host": box["provider_url"], "port": 0},
        )
        assert "differs from the stored connection" in probe.text, (kind, text, probe.text)
        save_screenshot(driver, airflow_ui.screenshots, "connection-test-port-bug")
        note("Test Connection needed the Airflow 3.3 empty-port workaround (port 0): see docs/connection.md")
        patched = airflow_ui.api.request(
            "PATCH",
            f"/api/v2/connections/{CONN_ID}?update_mask=port",
            json={"connection_id": CONN_ID, "conn_type": "ocean", "port": 0},
        )
        assert patched.status_code == 200, patched.text
        kind, text = _click_test(driver, airflow_ui)
    save_screenshot(driver, airflow_ui.screenshots, "connection-test-success")
    assert kind == "success", text
    assert "Test Connection Successful" in text
    assert f"Connected to Ocean Provider 2.1.6 at {box['provider_url']} on chain {box['chain_id']}" in text
    assert box["consumer"]["address"] in text


def test_finished_task_links_to_job_status(driver: Any, airflow_ui: AirflowUI) -> None:
    run_id = _finished_run(airflow_ui)
    job_id = _xcom(airflow_ui, run_id, "pay_and_start", "return_value")
    consumer = airflow_ui.sandbox["consumer"]["address"]
    expected = (
        f"{airflow_ui.sandbox['provider_url']}/api/services/compute?consumerAddress={consumer}&jobId={job_id}"
    )
    assert job_status_url(airflow_ui.sandbox["provider_url"], consumer, job_id) == expected

    driver.get(
        f"{airflow_ui.api.url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/pay_and_start/details"
    )
    try:
        link = _wait(driver, ec.visibility_of_element_located((By.LINK_TEXT, "Ocean job status")), 60)
    except TimeoutException:
        save_screenshot(driver, airflow_ui.screenshots, "task-details-no-link")
        raise
    assert link.get_attribute("href") == expected
    dataset_link = driver.find_element(By.LINK_TEXT, "Ocean dataset DDO")
    assert urlsplit(dataset_link.get_attribute("href")).path.endswith(
        "/api/aquarius/assets/ddo/" + airflow_ui.sandbox["assets"]["dataset"]["did"]
    )
    save_screenshot(driver, airflow_ui.screenshots, "task-extra-links")

    # The link is what a person would click: the Provider answers with that finished job.
    jobs = requests.get(expected, timeout=30).json()
    assert [(j["jobId"], j["status"], j["stopreq"]) for j in jobs] == [(job_id, 70, 0)]


def test_results_manifest_lists_the_plot(airflow_ui: AirflowUI) -> None:
    run_id = _finished_run(airflow_ui)
    manifest = _xcom(airflow_ui, run_id, "collect_results", "return_value")
    by_name = {entry["name"]: entry for entry in manifest}
    assert {"summary.csv", "summary.json", "summary.png", "algorithm.log"} <= set(by_name)
    plot = by_name["summary.png"]
    assert plot["type"] == "output"
    data = Path(urlsplit(plot["uri"]).path).read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (plot["size"], plot["sha256"])
    width, height, _rows = decode_png(data)
    assert (width, height) == (760, 440)
