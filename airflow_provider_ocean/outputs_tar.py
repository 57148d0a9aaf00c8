"""Safe unpacking of an Ocean Node ``outputs.tar`` (a Docker archive of ``/data/outputs``).

The archive comes from the compute node, so it is treated as untrusted: members are streamed one by one
(``tarfile`` stream mode, constant memory), only regular files and directories are written, the leading
``outputs/`` folder is stripped, and any absolute path, ``..`` component, link, device or FIFO is skipped.
Every file is hashed on the way and the total size is capped.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
import tarfile
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_ocean.exceptions import UnsafeArchiveError

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
_SAFE_PART = re.compile(r"^[A-Za-z0-9._ +@=,-]+$")


@dataclass
class UnpackedFile:
    """One file written from the archive.

    :param path: relative path (``/``-separated, without the ``outputs/`` prefix).
    :param size: bytes written.
    :param sha256: hex digest of the bytes written.
    :param uri: where it was written.
    """

    path: str
    size: int
    sha256: str
    uri: str


def safe_member_path(name: str, strip: str = "outputs") -> str | None:
    """The relative path a member may be written to, or ``None`` when it must be skipped.

    :param name: the member name in the archive.
    :param strip: the leading folder to remove (Docker archives of a folder start with its name).
    """
    normalized = posixpath.normpath(name.replace("\\", "/"))
    if normalized.startswith("/") or normalized in (".", ""):
        return None
    parts = normalized.split("/")
    if any(part in ("..", "") for part in parts):
        return None
    if strip and parts[0] == strip:
        parts = parts[1:]
    if not parts or not all(_SAFE_PART.match(part) and not part.startswith(".") for part in parts):
        return None
    return "/".join(parts)


def unpack_outputs(
    source: IO[bytes],
    open_target: Callable[[str], Any],
    *,
    max_total: int | None = None,
    strip: str = "outputs",
) -> list[UnpackedFile]:
    """Stream ``source`` (a tar) and write its regular files through ``open_target(relative_path)``.

    :param source: a readable binary stream of the archive.
    :param open_target: returns ``(writable binary handle context manager, uri)`` for a relative path; it
        must create parent folders as needed.
    :param max_total: refuse archives whose files total more than this many bytes.
    :param strip: leading folder to remove from member names.
    :raises UnsafeArchiveError: not a tar archive, or above ``max_total``.
    """
    written: list[UnpackedFile] = []
    total = 0
    try:
        archive = tarfile.open(fileobj=source, mode="r|*")  # noqa: SIM115 - closed by the with below
    except tarfile.TarError as exc:
        raise UnsafeArchiveError(f"not a tar archive: {exc}") from exc
    with archive:
        for member in archive:
            if member.isdir():
                continue
            relative = safe_member_path(member.name, strip)
            if not member.isreg() or relative is None:
                log.warning("Skipping archive member %r (not a plain file inside %s/)", member.name, strip)
                continue
            stream = archive.extractfile(member)
            if stream is None:  # pragma: no cover - regular members always have data
                continue
            digest = hashlib.sha256()
            size = 0
            handle_cm, uri = open_target(relative)
            with handle_cm as handle:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    total += len(chunk)
                    if max_total is not None and total > max_total:
                        raise UnsafeArchiveError(f"the archive's files exceed {max_total} bytes")
                    digest.update(chunk)
                    handle.write(chunk)
            written.append(UnpackedFile(relative, size, digest.hexdigest(), str(uri)))
    return written
