"""Every exception of the provider is an ``OceanError`` defined in ``airflow_provider_ocean/exceptions.py``.

Two families are outside on purpose: the chain client's errors (``airflow_provider_ocean/chain/errors.py``,
importable without Airflow for the sandbox; the payment code translates them, see
tests/payment/test_errors.py) and the sandbox's own.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import airflow_provider_ocean
from airflow_provider_ocean import exceptions, locks
from airflow_provider_ocean.chain import errors as chain_errors
from airflow_provider_ocean.exceptions import (
    OceanError,
    OceanResultTooLargeError,
    RateLimitedError,
    UnsafeArchiveError,
)

#: Defined elsewhere for now: the Ocean Node client's error (a subclass of OceanProviderError).
ELSEWHERE = {"OceanNodeError"}


def product_modules() -> list[str]:
    package = Path(airflow_provider_ocean.__file__).parent
    return [
        module.name
        for module in pkgutil.walk_packages([str(package)], prefix="airflow_provider_ocean.")
        # the chain client and the wallet locks stay free of Airflow (the sandbox uses them): their errors
        # are plain exceptions, turned into Ocean errors where they are used
        if not module.name.startswith(
            ("airflow_provider_ocean.sandbox", "airflow_provider_ocean.chain", "airflow_provider_ocean.locks")
        )
    ]


def test_every_exception_is_an_ocean_error_defined_in_exceptions():
    outside = []
    for name in product_modules():
        module = importlib.import_module(name)
        for _attr, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or not issubclass(cls, BaseException):
                continue
            assert issubclass(cls, OceanError), f"{name}.{cls.__name__} is not an OceanError"
            if name != exceptions.__name__:
                outside.append(cls.__name__)
    assert set(outside) == ELSEWHERE


@pytest.mark.parametrize("module", [chain_errors, locks], ids=["chain", "locks"])
def test_chain_and_lock_errors_stay_free_of_airflow(module):
    for _name, cls in inspect.getmembers(module, inspect.isclass):
        if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
            assert cls.__mro__[-3:] == (Exception, BaseException, object)
            assert not issubclass(cls, OceanError)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (
            OceanResultTooLargeError("result exceeds the cap of 10 bytes"),
            "result exceeds the cap of 10 bytes",
        ),
        (UnsafeArchiveError("not a tar archive: bad header"), "not a tar archive: bad header"),
        (RateLimitedError(1234.4), "rate limited until 1234"),
    ],
)
def test_moved_exceptions_keep_their_messages(error, text):
    assert isinstance(error, OceanError)
    assert str(error) == text


def test_rate_limited_keeps_its_retry_time():
    assert RateLimitedError(99.5).retry_at == 99.5


def test_moved_exceptions_are_still_importable_where_they_are_raised():
    from airflow_provider_ocean.operators import results
    from airflow_provider_ocean.outputs_tar import UnsafeArchiveError as from_outputs_tar
    from airflow_provider_ocean.triggers.polling import RateLimitedError as from_polling

    assert from_outputs_tar is UnsafeArchiveError
    assert from_polling is RateLimitedError
    assert results.OceanResultTooLargeError is OceanResultTooLargeError
