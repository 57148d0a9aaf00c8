"""Compute backends: one module per server protocol, each behind :class:`~.base.ComputeBackend`."""

from __future__ import annotations
