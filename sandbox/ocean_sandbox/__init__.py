"""A local Ocean for development and tests: ganache + Ocean v4 contracts + a Provider-faithful C2D server.

Product code never imports this package, and it never imports Airflow.
"""

from __future__ import annotations
