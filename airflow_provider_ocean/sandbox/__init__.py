"""A local Ocean for development and tests: ganache + Ocean v4 contracts + a Provider-faithful C2D server.

Product code never imports this subpackage.
"""

from __future__ import annotations
