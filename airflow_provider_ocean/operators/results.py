"""Collect the results of an Ocean compute job into local or object storage."""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_ocean.exceptions import OceanResultTooLargeError
from airflow_provider_ocean.lineage import ResultsOperatorLineageMixin
from airflow_provider_ocean.links import OceanJobStatusLink, job_status_url

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Asset, Context

    from airflow_provider_ocean.hooks.ocean import OceanComputeHook

DEFAULT_RESULT_TYPES = ("output", "algorithmLog")
#: How much of the algorithm log is copied into the task log.
TASK_LOG_BYTES = 256 * 1024


class _CappedWriter(io.RawIOBase):
    """Forwards writes to ``target`` and fails once more than ``limit`` bytes were written."""

    def __init__(self, target: Any, limit: int | None) -> None:
        super().__init__()
        self.target = target
        self.limit = limit
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, chunk: Any) -> int:
        self.written += len(chunk)
        if self.limit is not None and self.written > self.limit:
            raise OceanResultTooLargeError(f"result exceeds the cap of {self.limit} bytes")
        self.target.write(chunk)
        return len(chunk)


class OceanComputeResultsOperator(ResultsOperatorLineageMixin, BaseOperator):
    """Stream a finished job's results to ``destination`` and return a small manifest.

    Files are streamed in constant memory (never held whole, never unpickled), hashed with SHA-256 on the
    way, and named after the server's file name made safe (no paths). The algorithm log is also copied
    into the task log.

    :param job_id: the job id (templated), e.g. ``"{{ ti.xcom_pull(task_ids='start') }}"``.
    :param destination: a folder URI or path (templated): ``/data/out``, ``file:///data/out``,
        ``s3://bucket/prefix`` (any fsspec store Airflow's ``ObjectStoragePath`` knows).
    :param result_types: which result types to write (``output``, ``algorithmLog``,
        ``configrationLog`` on Provider v4 / ``configurationLog`` on Ocean Node, ``publishLog``...);
        ``None`` writes all.
    :param ocean_conn_id: the Ocean connection (templated).
    :param storage_conn_id: Airflow connection for the destination store, if it needs one (templated).
    :param max_file_size: refuse a result larger than this many bytes (default 10 GiB).
    :param asset: an Airflow Asset (or URI) to declare as outlet; its event carries the manifest summary.
    :param unpack_outputs: also unpack an Ocean Node ``outputs.tar`` into the destination (streamed, only
        regular files, the leading ``outputs/`` removed, subfolders kept, unsafe paths and links skipped,
        ``max_file_size`` capping the unpacked total); each file gets its own manifest entry with
        ``"archive": "outputs.tar"``.
    :param raw_logs: write log results exactly as served. By default an Ocean Node's Docker log frames
        (8-byte headers before each chunk of output, sent by nodes whose containers run without a TTY)
        are taken off, so ``algorithm.log`` holds only what the algorithm printed; the task-log copy is
        always decoded.
    :return: the manifest: ``[{"name", "type", "index", "size", "sha256", "uri"}]`` (XCom).
    """

    template_fields: Sequence[str] = ("job_id", "destination", "ocean_conn_id", "storage_conn_id")
    operator_extra_links = (OceanJobStatusLink(),)
    ui_color = "#e6f3ff"

    def __init__(
        self,
        *,
        job_id: str,
        destination: str,
        result_types: Sequence[str] | None = DEFAULT_RESULT_TYPES,
        ocean_conn_id: str = "ocean_default",
        storage_conn_id: str | None = None,
        max_file_size: int | None = 10 * 1024**3,
        asset: Asset | str | None = None,
        unpack_outputs: bool = False,
        raw_logs: bool = False,
        **kwargs: Any,
    ) -> None:
        if asset is not None:
            from airflow.sdk import Asset as AssetClass

            asset_obj = asset if isinstance(asset, AssetClass) else AssetClass(asset)
            kwargs["outlets"] = [*(kwargs.get("outlets") or []), asset_obj]
        else:
            asset_obj = None
        super().__init__(**kwargs)
        self.job_id = job_id
        self.destination = destination
        self.result_types = tuple(result_types) if result_types is not None else None
        self.ocean_conn_id = ocean_conn_id
        self.storage_conn_id = storage_conn_id
        self.max_file_size = max_file_size
        self.asset = asset_obj
        self.unpack_outputs = unpack_outputs
        self.raw_logs = raw_logs
        self.manifest: list[dict[str, Any]] | None = None

    def _hook(self) -> OceanComputeHook:
        from airflow_provider_ocean.hooks.ocean import OceanComputeHook

        return OceanComputeHook(ocean_conn_id=self.ocean_conn_id)

    def _folder(self) -> Any:
        from airflow.sdk import ObjectStoragePath

        destination = str(self.destination)
        if "://" not in destination:
            # a plain path: absolute, or relative to the worker's working directory
            destination = "file://" + os.path.abspath(os.path.expanduser(destination))
        folder = ObjectStoragePath(destination, conn_id=self.storage_conn_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_provider_ocean.exceptions import OceanJobError
        from airflow_provider_ocean.job_report import log_tail

        hook = self._hook()
        job = hook.get_job_status(self.job_id)
        OceanJobStatusLink.persist(
            context, job_status_url(hook.settings.provider_url, hook.consumer_address, self.job_id)
        )
        if not job.is_terminal:
            raise OceanJobError(
                f"Job {self.job_id} has not finished (status {job.status}); wait for it first"
            )
        if not job.results:
            raise OceanJobError(
                f"Job {self.job_id} published no results (status {job.status})", job_id=job.job_id
            )
        tail = log_tail(hook, job, "algorithmLog", TASK_LOG_BYTES)
        if tail is not None:
            self.log.info("Algorithm log of job %s:\n%s", self.job_id, tail.rstrip())
        from airflow_provider_ocean.wire.download import safe_filename

        chosen = [r for r in job.results if self.result_types is None or r.type in self.result_types]
        folder = self._folder()
        manifest: list[dict[str, Any]] = []
        used: set[str] = set()
        for result in chosen:
            name = safe_filename(result.filename, f"result-{result.index}")
            if name in used:
                name = f"{result.index}-{name}"
            used.add(name)
            if self.max_file_size is not None and (result.filesize or 0) > self.max_file_size:
                raise OceanJobError(
                    f"Result {result.filename} is {result.filesize} bytes, "
                    f"above max_file_size {self.max_file_size}"
                )
            target = folder / name
            partial = folder / f".{name}.part"
            try:
                with partial.open("wb") as handle:
                    written = hook.download_result(
                        self.job_id,
                        result.index,
                        _CappedWriter(handle, self.max_file_size),
                        raw_logs=self.raw_logs,
                    )
                partial.rename(target)
            except OceanResultTooLargeError as exc:
                partial.unlink(missing_ok=True)
                raise OceanJobError(f"Result {result.filename}: {exc}") from exc
            except BaseException:
                # never leave a truncated file behind (a broken download, a kill)
                partial.unlink(missing_ok=True)
                raise
            entry = {
                "name": name,
                "type": result.type,
                "index": result.index,
                "size": written.bytes_written,
                "sha256": written.sha256,
                "uri": str(target),
            }
            manifest.append(entry)
            if self.unpack_outputs and result.type == "output" and name.endswith(".tar"):
                manifest.extend(self._unpack(target, folder, name, result.index))
            self.log.info(
                "Wrote %s (%s, %s bytes, sha256 %s) to %s",
                name,
                result.type,
                entry["size"],
                entry["sha256"],
                entry["uri"],
            )
        if self.asset is not None:
            context["outlet_events"][self.asset].extra = {
                "job_id": self.job_id,
                "files": [{"name": e["name"], "sha256": e["sha256"], "size": e["size"]} for e in manifest],
            }
        self.log.info("Results written: %s file(s) to %s", len(manifest), folder)
        self.manifest = manifest  # for the OpenLineage outputs (airflow_provider_ocean/lineage.py)
        return manifest

    def _unpack(self, archive: Any, folder: Any, name: str, index: int) -> list[dict[str, Any]]:
        """Unpack a written ``outputs.tar`` next to it; returns its files' manifest entries."""
        from airflow_provider_ocean.exceptions import OceanJobError
        from airflow_provider_ocean.outputs_tar import UnsafeArchiveError, unpack_outputs

        def open_target(relative: str) -> tuple[Any, str]:
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            return path.open("wb"), str(path)

        try:
            with archive.open("rb") as source:
                files = unpack_outputs(source, open_target, max_total=self.max_file_size)
        except UnsafeArchiveError as exc:
            raise OceanJobError(f"Result {name}: {exc}") from exc
        for item in files:
            self.log.info(
                "Unpacked %s from %s (%s bytes, sha256 %s)", item.path, name, item.size, item.sha256
            )
        return [
            {
                "name": item.path,
                "type": "output",
                "index": index,
                "size": item.size,
                "sha256": item.sha256,
                "uri": item.uri,
                "archive": name,
            }
            for item in files
        ]
