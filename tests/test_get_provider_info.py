"""The provider metadata (``get_provider_info``): valid for Airflow, and every module and class it names
exists and is what it is listed as."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import airflow
import jsonschema
import pytest
from airflow.sdk import BaseHook, BaseOperator, BaseOperatorLink, BaseSensorOperator
from airflow.triggers.base import BaseTrigger

import airflow_provider_ocean
from airflow_provider_ocean.get_provider_info import get_provider_info

#: list of the provider info -> the base class every module listed there must define a subclass of
KINDS = {
    "operators": BaseOperator,
    "sensors": BaseSensorOperator,
    "triggers": BaseTrigger,
    "hooks": BaseHook,
}


def defined_in(module_name: str, base: type) -> list[type]:
    """Public subclasses of ``base`` defined (not imported) in the module; sensors are not counted as
    operators."""
    module = importlib.import_module(module_name)
    return [
        cls
        for name, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, base)
        and not (base is BaseOperator and issubclass(cls, BaseSensorOperator))
        and cls.__module__ == module_name
        and not name.startswith("_")
    ]


def import_class(path: str) -> type:
    module_name, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    assert inspect.isclass(cls), path
    return cls


def test_validates_against_airflows_schema():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_every_list_names_the_one_integration():
    info = get_provider_info()
    names = {i["integration-name"] for i in info["integrations"]}
    assert names == {"Ocean Protocol"}
    assert info["integrations"][0]["external-doc-url"].startswith("https://")
    assert info["integrations"][0]["tags"]
    for kind in KINDS:
        assert info[kind], kind
        assert {entry["integration-name"] for entry in info[kind]} <= names, kind


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_listed_module_imports_and_defines_one(kind):
    for entry in get_provider_info()[kind]:
        for module_name in entry["python-modules"]:
            assert defined_in(module_name, KINDS[kind]), f"{module_name} defines no {kind[:-1]}"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_module_that_defines_one_is_listed(kind):
    listed = {m for entry in get_provider_info()[kind] for m in entry["python-modules"]}
    package = Path(airflow_provider_ocean.__file__).parent
    found = set()
    for folder in KINDS:  # an operator may live in any of the four packages
        for module in pkgutil.iter_modules(
            [str(package / folder)], prefix=f"airflow_provider_ocean.{folder}."
        ):
            if defined_in(module.name, KINDS[kind]):
                found.add(module.name)
    assert found == listed


def test_every_named_class_exists():
    info = get_provider_info()
    for connection in info["connection-types"]:
        assert issubclass(import_class(connection["hook-class-name"]), BaseHook)
        assert import_class(connection["hook-class-name"]).conn_type == connection["connection-type"]
    assert info["extra-links"]
    for path in info["extra-links"]:
        assert issubclass(import_class(path), BaseOperatorLink), path


def test_every_extra_link_of_an_operator_is_listed():
    info = get_provider_info()
    listed = set(info["extra-links"])
    used = set()
    for kind in ("operators", "sensors"):
        for entry in info[kind]:
            for module_name in entry["python-modules"]:
                for cls in defined_in(module_name, KINDS[kind]):
                    used |= {
                        f"{type(link).__module__}.{type(link).__name__}" for link in cls.operator_extra_links
                    }
    assert used == listed


def _airflow_cli(home: Path, *args: str) -> list[dict[str, Any]]:
    """Run ``airflow <args> -o json`` in its own AIRFLOW_HOME (no metadata DB needed); return the rows."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    airflow_cli = str(Path(sys.executable).with_name("airflow"))
    result = subprocess.run(
        [airflow_cli, *args, "-o", "json"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout[result.stdout.index("[") :])
    assert isinstance(rows, list)
    return rows


class TestAirflowCli:
    """What Airflow's own CLI shows of the provider (``airflow providers ...``, a real process)."""

    def test_lists_the_providers_triggers_links_and_hooks(self, tmp_path: Path) -> None:
        info = get_provider_info()
        triggers = _airflow_cli(tmp_path, "providers", "triggers")
        ours = {row["class"] for row in triggers if row["package_name"] == "airflow-provider-ocean"}
        assert ours == {m for entry in info["triggers"] for m in entry["python-modules"]}
        assert {row["integration_name"] for row in triggers if row["class"] in ours} == {"Ocean Protocol"}

        links = {row["extra_link_class_name"] for row in _airflow_cli(tmp_path, "providers", "links")}
        assert set(info["extra-links"]) <= links

        hooks = [
            row for row in _airflow_cli(tmp_path, "providers", "hooks") if row["connection_type"] == "ocean"
        ]
        assert hooks == [
            {
                "connection_type": "ocean",
                "class": "airflow_provider_ocean.hooks.ocean.OceanComputeHook",
                "conn_id_attribute_name": "ocean_conn_id",
                "package_name": "airflow-provider-ocean",
                "hook_name": "Ocean Protocol",
            }
        ]
