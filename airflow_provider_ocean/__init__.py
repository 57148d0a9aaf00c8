"""Apache Airflow provider for Ocean Protocol compute-to-data (C2D)."""

from __future__ import annotations

__version__ = "0.1.0"
