"""The mapped fan-out example (``dags/ocean_compute_mapped.py``), run with ``airflow dags test`` against the
sandbox: one algorithm over three datasets, one job per dataset, each wait deferred, manifests gathered.

The status requests are counted in the sandbox server's access log (``server.log`` in its state folder,
one line per request with its time): the trigger's shared poll lists the owner's jobs
(``GET /api/services/compute?consumerAddress=…`` without ``jobId``), the operators check one job
(``…&jobId=…``). ``airflow dags test`` runs each deferred task's trigger in line, one after the other, so
here every wait has the owner's poll to itself; the sharing between concurrent triggers of one triggerer
is tested in ``tests/triggers/test_ocean_trigger.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.dags.test_example_dags import CliRun, check_summary
from tests.faults import airflow_cli

pytestmark = [pytest.mark.chain, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "ocean_compute_mapped"
DATASETS = ("dataset", "dataset_raw", "dataset_trusted")
POLL_INTERVAL = 2.0  # the DAG's poll_interval
#: one access-log line of the sandbox server: time, method, path and query
ACCESS = re.compile(r'^(\S+ \S+) INFO \S+: \S+ "(GET|POST|PUT|DELETE) (\S+) HTTP/[\d.]+"')


@dataclass
class MappedRun:
    run: CliRun
    results_dir: Path
    seconds: float
    requests: list[tuple[float, str, str]]  # (time, method, path with query) in the server's order


def _access_log(path: Path, offset: int) -> list[tuple[float, str, str]]:
    with path.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    found = []
    for line in text.splitlines():
        match = ACCESS.match(line)
        if match:
            stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((stamp, match[2], match[3]))
    return found


@pytest.fixture(scope="module")
def mapped_run(
    sandbox: dict[str, Any], airflow_db: str, tmp_path_factory: pytest.TempPathFactory
) -> MappedRun:
    results_dir = tmp_path_factory.mktemp("ocean-results-mapped")
    home = tmp_path_factory.mktemp("airflow-home-mapped")
    dids = [sandbox["assets"][name]["did"] for name in DATASETS]
    # a pristine migrated DB: the session one holds what this worker's earlier tests wrote
    env = airflow_cli.fresh_home(
        home,
        REPO / "dags",
        AIRFLOW_CONN_OCEAN_DEFAULT=sandbox["conn_json"],
        AIRFLOW_VAR_OCEAN_DATASET_DIDS=json.dumps(dids),
        AIRFLOW_VAR_OCEAN_ALGORITHM_DID=sandbox["assets"]["algorithm"]["did"],
        AIRFLOW_VAR_OCEAN_RESULTS_DIR=str(results_dir),
    )
    log = Path(sandbox["sandbox"].state_dir) / "server.log"
    offset = log.stat().st_size
    airflow = str(Path(sys.executable).with_name("airflow"))
    started = time.monotonic()
    process = subprocess.run(
        [airflow, "dags", "test", DAG_ID],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )
    seconds = time.monotonic() - started
    time.sleep(0.2)  # the server's last log lines
    run = CliRun(DAG_ID, home, process.returncode, process.stdout)
    return MappedRun(run, results_dir, seconds, _access_log(log, offset))


def _mapped_xcoms(run: CliRun, task_id: str) -> list[Any]:
    rows = run.query(
        "SELECT map_index, value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' "
        "ORDER BY map_index",
        run.dag_id,
        task_id,
    )
    return [json.loads(value) if isinstance(value, str | bytes) else value for _index, value in rows]


def test_one_job_per_dataset_waited_deferred_and_gathered(mapped_run: MappedRun) -> None:
    run = mapped_run.run
    assert run.returncode == 0, run.output[-3000:]
    run_id, state = run.dag_run()
    assert state == "success", run.output[-3000:]
    states = run.query(
        "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? ORDER BY task_id, map_index",
        DAG_ID,
    )
    n = len(DATASETS)
    assert states == [
        *[("collect", i, "success") for i in range(n)],
        *[("compute", i, "success") for i in range(n)],
        ("dataset_inputs", -1, "success"),
        ("gather", -1, "success"),
    ]
    job_ids = _mapped_xcoms(run, "compute")
    assert len(set(job_ids)) == n  # one job per dataset
    # every mapped wait deferred: the trigger ran (in line, under `dags test`) once per job
    assert run.output.count("[DAG TEST] running trigger in line") == n, run.output[-3000:]

    manifests = _mapped_xcoms(run, "collect")
    for index, manifest in enumerate(manifests):
        folder = mapped_run.results_dir / run_id.replace(":", "_") / str(index)
        assert sorted(e["name"] for e in manifest) == sorted(p.name for p in folder.iterdir())
        check_summary(folder / "summary.csv")
    [gathered] = _mapped_xcoms(run, "gather")
    assert gathered["jobs"] == n
    assert gathered["files"] == sum(len(m) for m in manifests)
    assert [[e["uri"] for e in files] for files in gathered["results"]] == [
        [e["uri"] for e in m] for m in manifests
    ]
    assert mapped_run.seconds < 90, f"the mapped DAG took {mapped_run.seconds:.0f} s"


def test_status_requests_per_poll_interval(mapped_run: MappedRun, capsys: pytest.CaptureFixture) -> None:
    """The waits' list requests (the shared poll) come at most once per poll interval per owner; each job
    is checked by id only by its own task (once before deferring, plus the results' check)."""
    assert mapped_run.run.returncode == 0, mapped_run.run.output[-3000:]
    job_ids = _mapped_xcoms(mapped_run.run, "compute")
    requests = mapped_run.requests
    starts = [t for t, method, path in requests if method == "POST" and path == "/api/services/compute"]
    assert len(starts) == len(DATASETS)
    status = [
        (t, path)
        for t, method, path in requests
        if method == "GET" and path.startswith("/api/services/compute?")
    ]
    polls = [t for t, path in status if "jobId=" not in path]
    by_id = {job: sum(f"jobId={job}" in path for _t, path in status) for job in job_ids}
    assert polls, "no deferred wait polled the owner's job list"

    # within one wait (between two starts) consecutive polls are one interval apart; the log stamps the
    # end of each request, so allow for the answer's time
    segments: list[list[float]] = [[] for _ in starts]
    for t in polls:
        segments[max(i for i, s in enumerate(starts) if s <= t)].append(t)
    gaps = [b - a for seg in segments for a, b in zip(seg, seg[1:], strict=False)]
    assert all(gap >= POLL_INTERVAL - 0.5 for gap in gaps), gaps

    # so in any window of one poll interval a wait polls this owner (one owner here) at most once; across
    # waits `dags test` runs one trigger after the other, each on its own event loop (its own poller), so
    # the next wait's first poll may follow the last one's final poll within an interval
    def most_per_interval(times: list[float]) -> int:
        return max((sum(1 for u in times if t <= u < t + POLL_INTERVAL - 0.5) for t in times), default=0)

    most = max(most_per_interval(seg) for seg in segments)
    assert most == 1
    overall = most_per_interval(polls)
    waited = sum(seg[-1] - seg[0] + POLL_INTERVAL for seg in segments if seg)
    with capsys.disabled():
        print(
            f"\n[mapped fan-out] {len(job_ids)} jobs in {mapped_run.seconds:.0f} s; owner list polls: "
            f"{len(polls)} ({[len(s) for s in segments]} per wait), at most {most} per {POLL_INTERVAL:.0f} s "
            f"interval within a wait ({overall} across consecutive waits), "
            f"gaps {[round(g, 2) for g in gaps]}, "
            f"~{len(polls) / (waited / POLL_INTERVAL):.2f} per interval waited; by-id checks per job: "
            f"{sorted(by_id.values())}"
        )
    assert all(count <= 3 for count in by_id.values()), by_id
