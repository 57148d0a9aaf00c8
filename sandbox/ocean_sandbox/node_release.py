"""Which Ocean Node release the sandbox's node personality answers like, in one place.

The personality follows **Ocean Node v3.1.0** as it runs C2D jobs on a local Docker engine (what the filer
of tracker issue 18 saw on a real node built from its public source). Everything that differs between
node releases and that a client can see is a field of :class:`NodeRelease`; following a later release is
one new instance and one change of :data:`RELEASE`.

What v3.1.0 does, and the personality with it:

- **logs**: the container runs without a TTY, so ``algorithm.log`` and ``computeStreamableLogs`` are the
  Docker engine's multiplexed stream: each line behind an 8-byte header (stream 1 stdout / 2 stderr,
  three zero bytes, big-endian length); ``configuration.log`` and ``image.log`` are the node's own plain
  text. (Newer node sources create the container with ``Tty: true``: plain text with ``\\r\\n``.)
- **statuses**: a start answers 10 "Pulling algorithm image" (1 "Job queued" with ``queueMaxWaitTime``);
  the job passes 60 "Publishing results" (for one engine pass) before 71 "Job settling".
- **ids**: environment and job ids are ``0x<cluster hash>-0x<sha256>`` (the node's ``create256Hash``).
- **stop**: ``docker stop`` sends SIGTERM to the container's PID 1, which an algorithm that installs no
  handler ignores, and SIGKILL after Docker's grace: the job ends with exit code 137. The sandbox sends
  SIGKILL at once (no 10 s grace).
- **results**: ``image.log``, ``configuration.log``, ``algorithm.log``, ``outputs.tar`` with explicit indexes;
  no ``publish.log`` (the node never writes one).
- ``GET /``: ``nodePublicKey`` is the key's bytes serialised as a JSON object (``{"0": 2, "1": 171, ...}``,
  what ``JSON.stringify`` makes of a ``Uint8Array``), not a hex string.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

#: (listed file name, path under the job folder, result type) in the node's listing order.
ResultFiles = tuple[tuple[str, str, str], ...]

_V3_RESULTS: ResultFiles = (
    ("image.log", "adminlogs/image.log", "imageLog"),
    ("configuration.log", "adminlogs/configuration.log", "configurationLog"),
    ("algorithm.log", "data/logs/algorithm.log", "algorithmLog"),
    ("outputs.tar", "outputs.tar", "output"),
)


@dataclass(frozen=True)
class NodeRelease:
    """What one Ocean Node release shows a client.

    :param version: the node release followed (the ``version`` field of ``GET /`` stays ``0.0.1``: the
        node hard-codes it).
    :param framed_logs: the algorithm's container has no TTY: logs are Docker's multiplexed frames.
    :param start_status: the status of a job just started without a queue.
    :param id_prefix: what precedes each hex hash of an environment or job id.
    :param stop_signal: what a stop sends the algorithm (SIGKILL: exit code 137).
    :param result_files: the files a finished job lists, in order.
    :param public_key_as_bytes: ``GET /`` shows ``nodePublicKey`` as a JSON object of bytes.
    """

    version: str
    framed_logs: bool
    start_status: int
    id_prefix: str
    stop_signal: int
    result_files: ResultFiles
    public_key_as_bytes: bool

    def hash_id(self, hex_digest: str) -> str:
        """One hash of an id as this release writes it.

        :param hex_digest: a lowercase hex digest without prefix.
        """
        return self.id_prefix + hex_digest

    def public_key(self, compressed: bytes) -> Any:
        """``nodePublicKey`` of ``GET /`` for the node's compressed public key.

        :param compressed: the 33-byte compressed secp256k1 public key.
        """
        if self.public_key_as_bytes:
            return {str(i): b for i, b in enumerate(compressed)}
        return "0x" + compressed.hex()


V3_1_0 = NodeRelease(
    version="3.1.0",
    framed_logs=True,
    start_status=10,
    id_prefix="0x",
    stop_signal=signal.SIGKILL,
    result_files=_V3_RESULTS,
    public_key_as_bytes=True,
)

#: The release the personality follows.
RELEASE = V3_1_0
