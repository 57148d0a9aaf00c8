"""On-chain payment for compute jobs: datatoken orders (``orders``, ``fees``, ``acquire``), the Ocean Node
Escrow (``escrow``) and the one translation of chain errors into Ocean errors (``errors``).

Nothing is imported here: the hook and the DAG parser stay free of the chain code until a payment is made.
"""

from __future__ import annotations
