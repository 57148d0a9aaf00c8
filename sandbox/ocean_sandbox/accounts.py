"""The sandbox's well-known accounts, derived from barge's public development mnemonic.

These keys are public test keys of a local chain; they guard nothing of value.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from eth_account import Account

from ocean_sandbox.ganache import MNEMONIC

Account.enable_unaudited_hdwallet_features()


@dataclass(frozen=True)
class DevAccount:
    """A development account: address and (public, well-known) private key."""

    index: int
    address: str
    key: str

    def __repr__(self) -> str:
        return f"DevAccount({self.index}, {self.address})"


@cache
def account(index: int) -> DevAccount:
    acct = Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return DevAccount(index, acct.address, "0x" + bytes(acct.key).hex())


# Roles of the mnemonic's accounts in the sandbox.
DEPLOYER = 0  # deploys the contracts and publishes the sample assets
CONSUMER = 1  # the Airflow user: pays for orders and signs requests
PROVIDER = 2  # the Provider's signing key (provider fees, providerAddresses)
ENGINE = 3  # the C2D engine wallet: environment consumerAddress (order consumer)
OTHER = 4  # a second user for tests (e.g. someone else's jobs)
