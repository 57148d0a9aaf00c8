"""Run a test against both personalities of the sandbox: Provider v4 and Ocean Node.

A test that takes ``any_sandbox`` (a :class:`Personality`) and ``any_conn`` runs twice, with the ids
``[provider_v4]`` and ``[ocean_node]``: ``AIRFLOW_CONN_OCEAN_DEFAULT`` then points at the session's
Provider v4 sandbox (``sandbox``) or at its Ocean Node sandbox (``node_sandbox``, started on first use),
and the hook detects the backend from ``GET /`` as it would for a real server. The same DAG code runs on
both; only the inputs and the expected values that the two APIs define differently come from the
:class:`Personality` (which datasets a raw algorithm may use, how the engine reports a failing algorithm,
the job id format, the result files).

Fixtures (imported into ``tests/conftest.py``): ``personality`` (the name; a test may narrow it with
``@pytest.mark.parametrize("personality", [...], indirect=True)``), ``any_sandbox`` and ``any_conn``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_ocean.hooks.ocean import OceanComputeHook

PROVIDER_V4 = "provider_v4"
OCEAN_NODE = "ocean_node"
PERSONALITIES = (PROVIDER_V4, OCEAN_NODE)
ONE = 10**18

_JOB_ID = {
    PROVIDER_V4: re.compile(r"^[0-9a-f]{32}$"),
    # <engineHash>-<sha256>: the full id the start returned (the node's status echoes only the hash)
    OCEAN_NODE: re.compile(r"^0x[0-9a-f]{64}-0x[0-9a-f]{64}$"),
}
#: Every result type a successful job of the sample algorithm publishes.
_ALL_RESULT_TYPES = {
    PROVIDER_V4: {"output", "algorithmLog", "configrationLog", "publishLog"},
    OCEAN_NODE: {"output", "algorithmLog", "configurationLog", "imageLog"},  # v3.1.0: no publish.log
}


@dataclasses.dataclass(frozen=True)
class Personality:
    """One sandbox personality and what tests need to know about it.

    :param name: ``provider_v4`` or ``ocean_node``.
    :param info: the sandbox's info dict (``Sandbox.info()`` plus ``"sandbox"``).
    """

    name: str
    info: dict[str, Any]

    def __str__(self) -> str:
        return self.name

    def __getitem__(self, key: str) -> Any:
        return self.info[key]

    @property
    def is_node(self) -> bool:
        return self.name == OCEAN_NODE

    @property
    def assets(self) -> dict[str, Any]:
        return self.info["assets"]

    @property
    def job_id_re(self) -> re.Pattern[str]:
        return _JOB_ID[self.name]

    @property
    def all_result_types(self) -> set[str]:
        return set(_ALL_RESULT_TYPES[self.name])

    @property
    def weather_url(self) -> str:
        """The sample CSV as a plain URL (what a raw Ocean Node dataset points at)."""
        return self.info["provider_url"] + "/sandbox/files/weather.csv"

    def raw_datasets(self) -> list[str]:
        """Datasets a raw algorithm may run on: the asset that allows raw algorithms (v4, one order), or the
        weather CSV's URL (node: a raw ``fileObject``, no order)."""
        if self.is_node:
            return [self.weather_url]
        return [self.assets["dataset_raw"]["did"]]

    @property
    def raw_dataset_action(self) -> str:
        """The payment ``action`` of a :meth:`raw_datasets` entry: a new order (v4) or none (node)."""
        return "raw" if self.is_node else "start"

    def registered(self, column: str = "rain_mm") -> dict[str, Any]:
        """A dataset DID with the published algorithm (trusted by the dataset) and custom data.

        On a node a DID dataset must list the algorithm among its trusted ones (both lists empty = deny),
        hence ``dataset_trusted`` there.
        """
        dataset = "dataset_trusted" if self.is_node else "dataset"
        return {
            "datasets": [self.assets[dataset]["did"]],
            "algorithm": {
                "did": self.assets["algorithm"]["did"],
                "algocustomdata": {"column": column, "group_by": "station"},
            },
        }

    @property
    def registered_dataset(self) -> str:
        return self.registered()["datasets"][0]

    def paid(self) -> dict[str, Any]:
        """Operator arguments that make the registered job a paid one with orders: v4 orders both inputs
        on any environment; a node orders DID inputs (to itself) only for paid jobs, on top of the escrow."""
        if self.is_node:
            return {"environment": self.info["environments"]["paid"], "max_fee": 20 * ONE}
        return {}

    @property
    def failure_fragments(self) -> tuple[str, ...]:
        """What the failure of ``raw_algorithm("x")`` says: v4's engine refuses raw code of at most 10
        characters (status 32 with the configure log); a node runs it and it dies with a NameError."""
        if self.is_node:
            return ("exit code 1", "NameError")
        return ("Algorithm provisioning failed", "status 32", "configrationLog")

    def start_raw(self, hook: OceanComputeHook, algorithm: dict[str, Any]) -> str:
        """Pay for (v4) and start a raw algorithm on :meth:`raw_datasets`; return the job id."""
        return hook.run_compute(self.raw_datasets(), algorithm)["job_id"]

    def start_registered(self, hook: OceanComputeHook, column: str = "temperature_c") -> str:
        """Start the registered job (free environment); return the job id."""
        inputs = self.registered(column)
        return hook.run_compute(inputs["datasets"], inputs["algorithm"])["job_id"]


@pytest.fixture(params=PERSONALITIES)
def personality(request: pytest.FixtureRequest) -> str:
    """The sandbox personality a test runs against (the test id shows it)."""
    return request.param


@pytest.fixture
def any_sandbox(personality: str, request: pytest.FixtureRequest) -> Personality:
    """The session sandbox of ``personality`` (the node one is started on first use)."""
    info = request.getfixturevalue("node_sandbox" if personality == OCEAN_NODE else "sandbox")
    return Personality(personality, info)


@pytest.fixture
def any_conn(any_sandbox: Personality, monkeypatch: pytest.MonkeyPatch) -> str:
    """``AIRFLOW_CONN_OCEAN_DEFAULT`` pointing at ``any_sandbox``, as the consumer account."""
    monkeypatch.setenv("AIRFLOW_CONN_OCEAN_DEFAULT", any_sandbox.info["conn_json"])
    return "ocean_default"
