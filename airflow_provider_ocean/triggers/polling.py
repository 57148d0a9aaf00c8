"""Shared status polling: one status request per (Provider, owner) per poll interval, for any number of
waiting jobs in one triggerer (the Provider lists all of an owner's jobs when no job id is given)."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from airflow_provider_ocean.exceptions import RateLimitedError

if TYPE_CHECKING:
    from airflow_provider_ocean.models import JobStatus

log = logging.getLogger(__name__)

Fetch = Callable[[], Awaitable[list["JobStatus"]]]


def _is_rate_limit(exc: BaseException) -> bool:
    from airflow_provider_ocean.exceptions import OceanProviderError

    return isinstance(exc, OceanProviderError) and exc.status == 429


class OwnerStatusPoller:
    """A single-flight, time-to-live cache of one owner's job list.

    Every waiter asks for a list no older than its poll interval; the first waiter after expiry fetches,
    everyone else reuses that answer or awaits the fetch already in flight.

    :param fetch: coroutine function returning every job of the owner.
    """

    _registry: weakref.WeakValueDictionary[tuple, OwnerStatusPoller] = weakref.WeakValueDictionary()

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._jobs: dict[str, JobStatus] = {}
        self._fetched_at = float("-inf")  # monotonic time the last successful fetch *started*
        self._inflight: asyncio.Task | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self.requests = 0

    @property
    def fetched_at(self) -> float:
        """Monotonic time the fetch of the current list started (``-inf`` before the first list)."""
        return self._fetched_at

    @classmethod
    def shared(cls, key: tuple, fetch: Fetch) -> OwnerStatusPoller:
        """The poller of ``key`` in the running event loop (created on first use)."""
        full_key = (*key, id(asyncio.get_running_loop()))
        poller = cls._registry.get(full_key)
        if poller is None:
            poller = cls(fetch)
            cls._registry[full_key] = poller
        return poller

    async def _refresh(self) -> None:
        started = time.monotonic()
        self.requests += 1
        try:
            jobs = await self._fetch()
        except Exception as exc:
            if _is_rate_limit(exc):
                self._backoff = min(max(self._backoff * 2, 5.0), 300.0)
                self._retry_at = time.monotonic() + self._backoff
                log.warning("Status polling rate limited; pausing %.0f s", self._backoff)
                raise RateLimitedError(self._retry_at) from exc
            raise
        self._backoff = 0.0
        self._jobs = {job.job_id: job for job in jobs}
        self._fetched_at = started

    async def get(
        self, job_id: str, *, max_age: float, fresher_than: float | None = None
    ) -> JobStatus | None:
        """The job's latest status from a list fetched at most ``max_age`` seconds ago.

        :param job_id: the job.
        :param max_age: the oldest list acceptable, in seconds.
        :param fresher_than: a monotonic time the list must have been fetched after (``None``: any).
        :return: the status, or ``None`` if the owner's list (fresh enough) does not contain the job.
        :raises RateLimitedError: polling is paused after a 429.
        """
        now = time.monotonic()
        if now < self._retry_at:
            raise RateLimitedError(self._retry_at)
        threshold = max(now - max_age, fresher_than if fresher_than is not None else float("-inf"))
        if self._fetched_at < threshold:
            if self._inflight is None or self._inflight.done():
                self._inflight = asyncio.ensure_future(self._refresh())
            inflight = self._inflight
            await asyncio.shield(inflight)
            if self._fetched_at < threshold:
                # the fetch in flight began before our threshold: fetch once more
                if self._inflight is inflight or self._inflight.done():
                    self._inflight = asyncio.ensure_future(self._refresh())
                await asyncio.shield(self._inflight)
        return self._jobs.get(job_id)
