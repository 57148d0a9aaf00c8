"""Packaging: the provider's wheel holds nothing of the sandbox, and the sandbox never imports Airflow.

The sandbox is its own distribution (``sandbox/``, package ``ocean_sandbox``); it uses the provider's chain
client only, so it must run without Airflow being imported, directly or through the provider.
"""

from __future__ import annotations

import ast
import configparser
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SANDBOX_PACKAGE = REPO / "sandbox" / "ocean_sandbox"
#: Not part of a clean checkout: local state, caches and earlier build output (a stale ``build/`` would
#: leak into the wheel).
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    ".sandbox",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".airflow",
    "airflow_home",
    ".demo-results",
)


@pytest.fixture(scope="module")
def provider_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The provider's wheel, built from a copy of the repository root (sandbox/ included)."""
    work = tmp_path_factory.mktemp("provider-wheel")
    source = work / "src"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    out = work / "dist"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--quiet",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    (wheel,) = out.glob("airflow_provider_ocean-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        yield archive


def _entry_points(archive: zipfile.ZipFile) -> configparser.ConfigParser:
    (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # keep the names' case
    parser.read_string(archive.read(name).decode())
    return parser


@pytest.mark.slow
def test_provider_wheel_holds_no_sandbox_file(provider_wheel: zipfile.ZipFile) -> None:
    names = provider_wheel.namelist()
    sandbox_files = [n for n in names if {"sandbox", "ocean_sandbox"} & set(n.split("/")[:-1])]
    assert sandbox_files == []
    assert not [n for n in names if n.endswith(("weather.csv", "sample_algorithm.py"))]
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"airflow_provider_ocean"}
    assert "airflow_provider_ocean/py.typed" in names
    assert "airflow_provider_ocean/chain/escrow_abi.py" in names


@pytest.mark.slow
def test_provider_wheel_declares_no_sandbox_script_or_extra(provider_wheel: zipfile.ZipFile) -> None:
    entry_points = _entry_points(provider_wheel)
    scripts = dict(entry_points["console_scripts"]) if entry_points.has_section("console_scripts") else {}
    assert "ocean-sandbox" not in scripts
    assert not any("ocean_sandbox" in target for target in scripts.values())
    # the provider's own entry point is still there
    assert entry_points["apache_airflow_provider"]["provider_info"].strip() == (
        "airflow_provider_ocean.get_provider_info:get_provider_info"
    )
    (metadata,) = [n for n in provider_wheel.namelist() if n.endswith(".dist-info/METADATA")]
    extras = [
        line.split(":", 1)[1].strip()
        for line in provider_wheel.read(metadata).decode().splitlines()
        if line.startswith("Provides-Extra:")
    ]
    assert "sandbox" not in extras


def _provider_modules_the_sandbox_imports() -> list[str]:
    """Every ``airflow_provider_ocean`` module named in an import of the sandbox, lazy ones included."""
    found: set[str] = set()
    for path in SANDBOX_PACKAGE.rglob("*.py"):
        if path.parent.name == "data":  # sample files run as algorithms, not sandbox code
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            found.update(m for m in modules if m.split(".")[0] == "airflow_provider_ocean")
    return sorted(found)


# Import every ocean_sandbox module, then the provider modules it imports lazily (inside functions);
# print the ocean_sandbox modules imported and every ``airflow`` module loaded.
_NO_AIRFLOW_CHECK = """
import importlib, json, pkgutil, sys
import ocean_sandbox.cli, ocean_sandbox.node_api, ocean_sandbox.provider, ocean_sandbox.server
import ocean_sandbox.runtime
for module in pkgutil.iter_modules(ocean_sandbox.__path__):
    importlib.import_module("ocean_sandbox." + module.name)
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:  # ``from package import name`` where name is not a module
        importlib.import_module(name.rpartition(".")[0])
print(json.dumps({
    "sandbox": sorted(m for m in sys.modules if m.startswith("ocean_sandbox.")),
    "airflow": sorted(m for m in sys.modules if m == "airflow" or m.startswith("airflow.")),
}))
"""


def test_the_sandbox_never_imports_airflow(tmp_path: Path) -> None:
    provider_modules = _provider_modules_the_sandbox_imports()
    assert "airflow_provider_ocean.chain.escrow_abi" in provider_modules
    result = subprocess.run(
        [sys.executable, "-c", _NO_AIRFLOW_CHECK, json.dumps(provider_modules)],
        cwd=tmp_path,  # the installed packages, not the checkout's working directory
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {f"ocean_sandbox.{p.stem}" for p in SANDBOX_PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert expected <= set(loaded["sandbox"])
    assert loaded["airflow"] == []
