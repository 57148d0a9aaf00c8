"""A small EVM client over ``requests`` + ``eth-account`` + ``eth-abi`` (no web3.py)."""

from __future__ import annotations
