"""Unpacking an Ocean Node ``outputs.tar`` safely (untrusted archive)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ocean.exceptions import UnsafeArchiveError
from airflow_provider_ocean.outputs_tar import safe_member_path, unpack_outputs


def archive(entries: list[tuple[str, Any]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(content, tuple):  # (link type, target)
                info.type, info.linkname = content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    buffer.seek(0)
    return buffer


def local_target(root: Path):
    def open_target(relative: str) -> tuple[Any, str]:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("wb"), str(path)

    return open_target


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("outputs/summary.json", "summary.json"),
        ("outputs/sub/report.json", "sub/report.json"),
        ("outputs/./a.txt", "a.txt"),
        ("/etc/passwd", None),
        ("outputs/../../evil", None),
        ("../evil", None),
        ("outputs/.hidden", None),
        ("outputs", None),
    ],
)
def test_safe_member_path(name: str, expected: str | None) -> None:
    assert safe_member_path(name) == expected


def test_unpack_keeps_subfolders_and_skips_unsafe_members(tmp_path: Path) -> None:
    data = archive(
        [
            ("outputs", "dir"),
            ("outputs/summary.json", b'{"ok": true}'),
            ("outputs/sub", "dir"),
            ("outputs/sub/report.csv", b"a,b\n1,2\n"),
            ("outputs/link", (tarfile.SYMTYPE, "/etc/passwd")),
            ("outputs/hard", (tarfile.LNKTYPE, "outputs/summary.json")),
            ("outputs/../../escape.txt", b"no"),
        ]
    )
    files = unpack_outputs(data, local_target(tmp_path))
    assert [f.path for f in files] == ["summary.json", "sub/report.csv"]
    assert (tmp_path / "sub" / "report.csv").read_bytes() == b"a,b\n1,2\n"
    assert files[0].sha256 == hashlib.sha256(b'{"ok": true}').hexdigest()
    assert files[0].size == 12
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["report.csv", "sub", "summary.json"]
    assert not (tmp_path.parent / "escape.txt").exists()


def test_size_cap_and_garbage(tmp_path: Path) -> None:
    data = archive([("outputs/big.bin", b"x" * 1000)])
    with pytest.raises(UnsafeArchiveError, match="exceed"):
        unpack_outputs(data, local_target(tmp_path), max_total=999)
    with pytest.raises(UnsafeArchiveError, match="not a tar"):
        unpack_outputs(io.BytesIO(b"not a tar at all" * 100), local_target(tmp_path))
