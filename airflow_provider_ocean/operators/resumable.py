"""Reattaching to a started job on retries: ``ResumableJobMixin`` on Airflow 3.3+, a stand-in before.

Airflow 3.3 (AIP-103) gives each task instance a ``task_state_store`` that survives retries (it is keyed by
dag, run, task and map index, not by try) and ``airflow.sdk.ResumableJobMixin``, which stores the
external job reference there and reattaches on the next try.

Airflow 3.0-3.2 have neither, and the XComs of a task instance are deleted when a new try starts
(the execution API hands the worker ``xcom_keys_to_clear`` for every non-deferral start), so XCom cannot
carry a job reference to the next try. :class:`LegacyResumableJobMixin` therefore keeps the same
decision logic as the 3.3 mixin but stores its values in Airflow Variables named after the task
instance (:class:`VariableStateStore`); they are deleted when the task succeeds.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Prefix of the Variables used by :class:`VariableStateStore`.
VARIABLE_PREFIX = "ocean_task_state"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class VariableStateStore:
    """``task_state_store`` stand-in for Airflow < 3.3: one Airflow Variable per task instance and key.

    Variables live in the metadata database (through the Task SDK's API on Airflow 3), so they survive
    retries, worker crashes and XCom clearing. Values are JSON.

    :param dag_id: the DAG id.
    :param run_id: the DAG run id.
    :param task_id: the task id.
    :param map_index: the map index (-1 when not mapped).
    """

    def __init__(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.task_id = task_id
        self.map_index = map_index

    @classmethod
    def from_context(cls, context: Context) -> VariableStateStore | None:
        """The store of the running task instance, or ``None`` without one in the context.

        :param context: the task context.
        """
        ti = context.get("ti")
        if ti is None:
            return None
        map_index = getattr(ti, "map_index", -1)
        return cls(ti.dag_id, ti.run_id, ti.task_id, -1 if map_index is None else int(map_index))

    def __repr__(self) -> str:
        return f"VariableStateStore({self.dag_id!r}, {self.run_id!r}, {self.task_id!r}, {self.map_index})"

    def variable_name(self, key: str) -> str:
        """The Variable holding ``key``: readable, unique per task instance, at most 250 characters.

        :param key: the state key.
        """
        identity = f"{self.dag_id}\x1f{self.run_id}\x1f{self.task_id}\x1f{self.map_index}\x1f{key}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        readable = _UNSAFE.sub("_", f"{self.dag_id}.{self.task_id}.{key}")[:200]
        return f"{VARIABLE_PREFIX}.{readable}.{digest}"

    def get(self, key: str, default: Any = None) -> Any:
        """Return the stored value, or ``default``.

        :param key: the state key.
        :param default: returned when nothing is stored.
        """
        from airflow.sdk import Variable

        raw = Variable.get(self.variable_name(key), default=None)
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except (TypeError, ValueError):
            return default

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable, not ``None``).

        :param key: the state key.
        :param value: the value.
        """
        from airflow.sdk import Variable

        if value is None:
            raise ValueError("Cannot set value as None")
        Variable.set(
            self.variable_name(key),
            json.dumps(value, sort_keys=True),
            description=f"airflow-provider-ocean task state ({self.run_id}, map index {self.map_index})",
        )

    def delete(self, key: str) -> None:
        """Delete ``key`` (no error when it does not exist).

        :param key: the state key.
        """
        from airflow.sdk import Variable

        name = self.variable_name(key)
        delete = getattr(Variable, "delete", None)
        if delete is None:  # an SDK without Variable.delete: a JSON null reads as "nothing stored"
            Variable.set(name, "null")
            return
        try:
            delete(name)
        except Exception as exc:  # a missing Variable is not an error here
            if "not found" not in str(exc).lower():
                raise


class LegacyResumableJobMixin:
    """Airflow 3.0-3.2 stand-in for ``airflow.sdk.ResumableJobMixin`` that really resumes.

    Same contract and decisions as the 3.3 mixin (``submit_job``, ``get_job_status``, ``is_job_active``,
    ``is_job_succeeded``, ``poll_until_complete``, ``get_job_result``; ``external_id_key``; ``durable``),
    but the external id lives in a :class:`VariableStateStore`.

    :param durable: persist the job reference to reattach on retries (``False``: every try submits).
    """

    external_id_key: str = "remote_job_id"
    #: Operators read this to pick the Variable store for their own state as well.
    uses_variable_state: bool = True
    log: Any

    def __init__(self, *, durable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.durable = durable

    def execute_resumable(self, context: Context) -> Any:
        """Submit, persist the job reference, wait, return the result; on a retry reattach instead.

        - stored job active: no submission, wait for it;
        - stored job succeeded: no submission, no waiting, return its result;
        - stored job failed/gone (or nothing stored): submit a new job.

        :param context: the task context.
        """
        if not self.durable:
            external_id = self.submit_job(context)  # type: ignore[attr-defined]
            self.poll_until_complete(external_id, context)  # type: ignore[attr-defined]
            return self.get_job_result(external_id, context)  # type: ignore[attr-defined]
        store = VariableStateStore.from_context(context)
        if store is None:
            self.log.warning("No task instance in the context: crash recovery is disabled for this run")
        else:
            external_id = store.get(self.external_id_key)
            if external_id:
                status = self.get_job_status(external_id, context)  # type: ignore[attr-defined]
                if self.is_job_active(status):  # type: ignore[attr-defined]
                    self.log.info("Reconnecting to existing job %s (status %s)", external_id, status)
                    return self.poll_until_complete(external_id, context)  # type: ignore[attr-defined]
                if self.is_job_succeeded(status):  # type: ignore[attr-defined]
                    self.log.info("Job %s already completed successfully, not resubmitting", external_id)
                    return self.get_job_result(external_id, context)  # type: ignore[attr-defined]
                self.log.warning("Prior job %s in state %s; submitting a new one", external_id, status)
        external_id = self.submit_job(context)  # type: ignore[attr-defined]
        if store is not None and external_id is not None:
            store.set(self.external_id_key, external_id)
        self.poll_until_complete(external_id, context)  # type: ignore[attr-defined]
        return self.get_job_result(external_id, context)  # type: ignore[attr-defined]


try:
    from airflow.sdk import ResumableJobMixin
except ImportError:  # Airflow < 3.3
    ResumableJobMixin = LegacyResumableJobMixin  # type: ignore[assignment,misc]

#: True when the SDK's mixin (and ``task_state_store``) are available.
HAS_SDK_RESUMABLE = ResumableJobMixin is not LegacyResumableJobMixin

__all__ = ["HAS_SDK_RESUMABLE", "LegacyResumableJobMixin", "ResumableJobMixin", "VariableStateStore"]
