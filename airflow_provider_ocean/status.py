"""Job status codes of both backends as enums: what each code of each vocabulary means.

A :class:`~airflow_provider_ocean.models.JobStatus` keeps its code as a plain ``int`` (JSON, XCom, trigger
events). Provider v4 jobs carry the operator-engine's codes (docs/reference/provider-v4-api.md §8), read
with :class:`V4Status`; Ocean Node jobs the node's C2D codes (docs/reference/ocean-node-api.md §3), read
with :class:`NodeStatus` by the node backend, which maps each entry onto the shared outcome fields
(``dateFinished``, ``stopreq``; 70 only for a real success).
"""

from __future__ import annotations

from enum import IntEnum


class V4Status(IntEnum):
    """Operator-engine (Provider v4) job status codes.

    The engine marks the end with ``dateFinished``; a job stopped or killed at its maximum duration ends
    at 70 too, told apart by ``stopreq``.
    """

    WARMING_UP = 1
    CONFIGURING_VOLUMES = 20
    PROVISIONING_SUCCESS = 30
    DATA_PROVISIONING_FAILED = 31
    ALGORITHM_PROVISIONING_FAILED = 32
    RUNNING = 40
    FILTERING = 50
    PUBLISHING = 60
    FINISHED = 70

    @property
    def is_failure(self) -> bool:
        """A provisioning failure (the algorithm never ran)."""
        return self in _V4_FAILURES

    @property
    def is_terminal(self) -> bool:
        """The job ended (failed provisioning, or finished)."""
        return self is V4Status.FINISHED or self.is_failure

    @property
    def is_success(self) -> bool:
        """The pipeline finished (the job succeeded when nobody stopped it: ``stopreq == 0``)."""
        return self is V4Status.FINISHED


_V4_FAILURES = frozenset({V4Status.DATA_PROVISIONING_FAILED, V4Status.ALGORITHM_PROVISIONING_FAILED})


class NodeStatus(IntEnum):
    """Ocean Node C2D job status codes (``C2DStatusNumber``).

    70 does not mean success on a node: the payment cron moves every ended job (failed ones too) to 70.
    A job succeeded when it ended (70/71) with exit code 0, not OOM-killed, with an ``outputs.tar``.
    """

    JOB_STARTED = 0
    JOB_QUEUED = 1
    JOB_QUEUE_EXPIRED = 2
    PULL_IMAGE = 10
    PULL_IMAGE_FAILED = 11
    BUILD_IMAGE = 12
    BUILD_IMAGE_FAILED = 13
    VULNERABLE_IMAGE = 14
    CONFIGURING_VOLUMES = 20
    VOLUME_CREATION_FAILED = 21
    CONTAINER_CREATION_FAILED = 22
    PROVISIONING = 30
    DATA_PROVISIONING_FAILED = 31
    ALGORITHM_PROVISIONING_FAILED = 32
    DATA_UPLOAD_FAILED = 33
    RUNNING_ALGORITHM = 40
    ALGORITHM_FAILED = 41
    DISK_QUOTA_EXCEEDED = 42
    FILTERING_RESULTS = 50
    PUBLISHING_RESULTS = 60
    RESULTS_FETCH_FAILED = 61
    RESULTS_UPLOAD_FAILED = 62
    JOB_FINISHED = 70
    JOB_SETTLING = 71

    @property
    def is_failure(self) -> bool:
        """A failure code (the job ended without results, or its algorithm could not run)."""
        return self in _NODE_FAILURES

    @property
    def is_terminal(self) -> bool:
        """The job ended: a failure, settling (71) or finished (70)."""
        return self.is_failure or self in (NodeStatus.JOB_FINISHED, NodeStatus.JOB_SETTLING)

    @property
    def is_success(self) -> bool:
        """Possibly a success: ended without a failure code (the exit code and ``outputs.tar`` decide)."""
        return self in (NodeStatus.JOB_FINISHED, NodeStatus.JOB_SETTLING)


_NODE_FAILURES = frozenset(
    {
        NodeStatus.JOB_QUEUE_EXPIRED,
        NodeStatus.PULL_IMAGE_FAILED,
        NodeStatus.BUILD_IMAGE_FAILED,
        NodeStatus.VULNERABLE_IMAGE,
        NodeStatus.VOLUME_CREATION_FAILED,
        NodeStatus.CONTAINER_CREATION_FAILED,
        NodeStatus.DATA_PROVISIONING_FAILED,
        NodeStatus.ALGORITHM_PROVISIONING_FAILED,
        NodeStatus.DATA_UPLOAD_FAILED,
        NodeStatus.ALGORITHM_FAILED,
        NodeStatus.DISK_QUOTA_EXCEEDED,
        NodeStatus.RESULTS_FETCH_FAILED,
        NodeStatus.RESULTS_UPLOAD_FAILED,
    }
)

#: The node's ``statusText`` of each code (``C2DStatusText``).
NODE_STATUS_TEXTS: dict[int, str] = {
    0: "Job started",
    1: "Job queued",
    2: "Job expired in queue",
    10: "Pulling algorithm image",
    11: "Pulling algorithm image failed",
    12: "Building algorithm image",
    13: "Building algorithm image failed",
    14: "Image has vulnerabilities",
    20: "Configuring volumes",
    21: "Volume creation failed",
    22: "Container creation failed",
    30: "Provisioning data",
    31: "Data provisioning failed",
    32: "Algorithm provisioning failed",
    33: "Data upload to container failed",
    40: "Running algorithm ",
    41: "Failed to run algorithm",
    42: "Error: disk quota exceeded",
    50: "Filtering results",
    60: "Publishing results",
    61: "Failed to get outputs folder from container",
    62: "Failed to upload results to storage",
    70: "Job finished",
    71: "Job settling",
}


def node_status(code: int) -> NodeStatus | None:
    """The :class:`NodeStatus` of a code, or ``None`` for a code this client does not know.

    :param code: the node's status number.
    """
    try:
        return NodeStatus(code)
    except ValueError:
        return None
