"""Turning job statuses into what a task log and a failure message should say."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

    from airflow_provider_ocean.hooks.ocean import OceanComputeHook
    from airflow_provider_ocean.models import JobStatus

LOG_TAIL_BYTES = 4000


class TailBuffer(io.RawIOBase):
    """A write-only sink that keeps only the last ``limit`` bytes (constant memory for any log size)."""

    def __init__(self, limit: int = LOG_TAIL_BYTES) -> None:
        super().__init__()
        self.limit = limit
        self.data = bytearray()
        self.total = 0

    def writable(self) -> bool:
        return True

    def write(self, chunk: Any) -> int:
        size = len(chunk)
        self.total += size
        self.data += bytes(chunk)[-self.limit :]
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]
        return size

    def text(self) -> str:
        prefix = "…" if self.total > self.limit else ""
        return prefix + self.data.decode("utf-8", errors="replace")


def log_tail(
    hook: OceanComputeHook, job: JobStatus, kind: str = "algorithmLog", limit: int = LOG_TAIL_BYTES
) -> str | None:
    """The last ``limit`` bytes of the job's log of type ``kind`` (``None`` if the job has none)."""
    entry = next((r for r in job.results if r.type == kind), None)
    if entry is None:
        return None
    sink = TailBuffer(limit)
    try:
        hook.download_result(job.job_id, entry.index, sink)
    except Exception as exc:
        return f"(could not read {entry.filename}: {exc})"
    return sink.text()


def describe(job: JobStatus) -> str:
    """One line: id, outcome, status code and text."""
    text = job.status_text.strip()
    return f"job {job.job_id} {job.outcome} (status {job.status} {text!r}, stopreq {job.stopreq})"


def failure_details(hook: OceanComputeHook, job: JobStatus) -> str:
    """What went wrong, with the algorithm log tail (or the configure log for provisioning failures)."""
    lines = [describe(job)]
    # configrationLog (sic): Provider v4; configurationLog: Ocean Node
    provisioning = ("configrationLog", "configurationLog", "algorithmLog")
    kinds = provisioning if job.is_provisioning_failure else ("algorithmLog",)
    for kind in kinds:
        tail = log_tail(hook, job, kind)
        if tail:
            lines.append(f"--- {kind} (tail) ---\n{tail.rstrip()}")
    return "\n".join(lines)


def log_progress(logger: logging.Logger | Any, job: JobStatus, started: float, now: float) -> None:
    """Log one status change with the elapsed time."""
    logger.info(
        "Job %s: status %s %s (%.0f s elapsed)",
        job.job_id,
        job.status,
        job.status_text.strip(),
        now - started,
    )
