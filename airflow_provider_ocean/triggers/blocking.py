"""Blocking calls awaited from a trigger without holding the triggerer's shutdown.

``asyncio.to_thread`` runs a call in the loop's default executor, whose worker threads the loop's
``shutdown_default_executor()`` (run by ``asyncio.run``) and ``concurrent.futures``' exit hook both
join: an HTTP request in flight when the triggerer stops held the stop for up to its read timeout.
:func:`run_blocking` runs each call in a daemon thread of its own instead, which neither of them waits
for: once the awaiting coroutine is cancelled, the thread's late result (or error) is dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Blocking calls running at once per event loop (the default executor runs min(32, CPUs + 4)).
MAX_THREADS = 32

#: Each running loop's slots. A plain dict: a semaphore that has made a caller wait refers to its loop,
#: so weak keys would never be dropped; closed loops are dropped on the next call instead.
_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def _slots_of(loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
    for closed in [other for other in _slots if other.is_closed()]:
        del _slots[closed]
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(MAX_THREADS)
    return slots


def _settle(future: asyncio.Future[Any], slots: asyncio.Semaphore, ok: bool, value: Any) -> None:
    """In the loop: free the slot, then hand the outcome over unless the awaiter has gone."""
    slots.release()
    if future.done():  # the awaiting coroutine was cancelled: nobody wants the outcome
        log.debug("Dropped the late %s of a cancelled blocking call", "result" if ok else "error")
    elif ok:
        future.set_result(value)
    else:
        future.set_exception(value)


async def run_blocking(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run ``func(*args, **kwargs)`` in a daemon thread and await its result.

    Unlike ``asyncio.to_thread``, neither the loop's shutdown nor the interpreter's exit waits for the
    call: cancelling the awaiting coroutine returns at once, and whatever the call later returns or
    raises is dropped (also after the loop has closed). At most :data:`MAX_THREADS` calls run at once
    per loop; the context variables of the caller are visible to the call.

    :param func: the blocking callable.
    :param args: its positional arguments.
    :param kwargs: its keyword arguments.
    :return: what ``func`` returned.
    :raises Exception: what ``func`` raised.
    """
    loop = asyncio.get_running_loop()
    slots = _slots_of(loop)
    await slots.acquire()
    future: asyncio.Future[T] = loop.create_future()
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)

    def work() -> None:
        try:
            outcome: tuple[bool, Any] = (True, call())
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            if isinstance(exc, StopIteration):  # a Future cannot carry StopIteration
                exc = RuntimeError(f"blocking call raised {exc!r}")
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(_settle, future, slots, *outcome)
        except RuntimeError:  # the loop has closed: nobody is left to tell
            pass

    try:
        threading.Thread(
            target=work, name=f"ocean-blocking-{getattr(func, '__name__', 'call')}", daemon=True
        ).start()
    except BaseException:
        slots.release()
        raise
    return await future
