"""HTTP to the Provider v4 and the Ocean Node: one transport, one download path, each backend's routes."""

from __future__ import annotations
