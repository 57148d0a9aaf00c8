"""The provider's custom OpenLineage facets (``apache-airflow-providers-openlineage`` must be installed).

Imported only by :mod:`airflow_provider_ocean.lineage`'s functions, never at the provider's import time.
Every field is public information: DIDs, service ids, URLs without credentials or query strings,
order transaction ids, fee amounts, hashes - never a key, a signature, a nonce or a signed URL.
"""

from __future__ import annotations

from typing import Any

import attrs
from openlineage.client.facet_v2 import DatasetFacet, JobFacet, RunFacet

#: The ``_schemaURL`` prefix of the custom facets (they are not part of the OpenLineage spec).
SCHEMA_URL = "https://github.com/airflow-provider-ocean/airflow-provider-ocean/blob/main/README.md"


@attrs.define
class OceanAssetDatasetFacet(DatasetFacet):
    """An Ocean asset used as a job input (facet key ``ocean_asset``).

    :param did: the asset's DID.
    :param name: the DDO's ``metadata.name``.
    :param serviceId: the compute service the job ordered.
    :param providerUrl: the Provider (or Ocean Node) that ran the job.
    :param chainId: the chain the asset is published on.
    """

    did: str | None = attrs.field(default=None)
    name: str | None = attrs.field(default=None)
    serviceId: str | None = attrs.field(default=None)  # noqa: N815 - OpenLineage field style
    providerUrl: str | None = attrs.field(default=None)  # noqa: N815
    chainId: int | None = attrs.field(default=None)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_URL + "#ocean_asset"


@attrs.define
class OceanAlgorithmJobFacet(JobFacet):
    """The algorithm of a compute job (facet key ``ocean_algorithm``): a published one (DID) or a raw
    container image.

    :param kind: ``published`` or ``raw``.
    :param did: the algorithm's DID (published).
    :param serviceId: the algorithm service (published).
    :param name: the algorithm DDO's ``metadata.name`` (published).
    :param image: ``image:tag`` of the container (raw).
    :param imageChecksum: the container image digest (raw), if given.
    :param url: where the raw algorithm is downloaded from (no query string), if given.
    """

    kind: str = attrs.field(default="published")
    did: str | None = attrs.field(default=None)
    serviceId: str | None = attrs.field(default=None)  # noqa: N815
    name: str | None = attrs.field(default=None)
    image: str | None = attrs.field(default=None)
    imageChecksum: str | None = attrs.field(default=None)  # noqa: N815
    url: str | None = attrs.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_URL + "#ocean_algorithm"


@attrs.define
class OceanComputeRunFacet(RunFacet):
    """What one compute job run was (facet key ``ocean_compute``).

    :param jobId: the job id.
    :param environment: the compute environment.
    :param agreementId: the order used as agreement id (Provider v4), if any.
    :param orders: ``[{"role", "did", "serviceId", "orderTx", "action"}]`` of the paid orders.
    :param fees: ``[{"role", "did", "kind", "currency", "amount"}]``: fees paid, in base units of the
        ``currency`` ERC-20 address (no key contains ``token``: Airflow's masker hides such values).
    :param backend: ``provider_v4`` or ``ocean_node``.
    :param chainId: the chain the orders were paid on.
    :param providerUrl: the Provider (or Ocean Node).
    """

    jobId: str | None = attrs.field(default=None)  # noqa: N815
    environment: str | None = attrs.field(default=None)
    agreementId: str | None = attrs.field(default=None)  # noqa: N815
    orders: list[dict[str, Any]] = attrs.field(factory=list)
    fees: list[dict[str, Any]] = attrs.field(factory=list)
    backend: str | None = attrs.field(default=None)
    chainId: int | None = attrs.field(default=None)  # noqa: N815
    providerUrl: str | None = attrs.field(default=None)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_URL + "#ocean_compute"


@attrs.define
class OceanResultDatasetFacet(DatasetFacet):
    """A result file of a compute job, as written (facet key ``ocean_result``).

    :param jobId: the job that produced it.
    :param type: the result type (``output``, ``algorithmLog``...).
    :param index: the result's index in the job's results.
    :param size: bytes written.
    :param sha256: SHA-256 of the bytes written (hex).
    :param archive: the archive it was unpacked from (``outputs.tar``), if any.
    """

    jobId: str | None = attrs.field(default=None)  # noqa: N815
    type: str | None = attrs.field(default=None)
    index: int | None = attrs.field(default=None)
    size: int | None = attrs.field(default=None)
    sha256: str | None = attrs.field(default=None)
    archive: str | None = attrs.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_URL + "#ocean_result"
