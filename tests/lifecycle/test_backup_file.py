"""The backup file's format: gzip segments joined into one stream, tar headers as tarfile writes
them, and a backup that the system's `tar` and `gzip` open."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skillstage import api
from skillstage.config import Project
from skillstage.lifecycle.backup_create import tar_header
from skillstage.lifecycle.backup_file import (
    BLOCK,
    ChecksummedGzip,
    DeflateStream,
    TarReader,
    file_checksums,
)
from tests.skilltree import write_skill


def _tarfile_header(name: str, entry: dict[str, Any]) -> bytes:
    info = tarfile.TarInfo(name.rstrip("/") or name)
    info.mtime = 0
    if entry["type"] == "dir":
        info.type, info.mode = tarfile.DIRTYPE, entry["mode"]
    elif entry["type"] == "link":
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry["link"], 0o777
    else:
        info.size, info.mode = entry["size"], entry["mode"]
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


_names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"), min_size=1
)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(_names, min_size=1, max_size=8),
    kind=st.sampled_from(["file", "dir", "link"]),
    mode=st.integers(0, 0o7777),
    size=st.one_of(st.integers(0, 10**6), st.integers(8**11 - 2, 8**11 + 2)),
    link=_names,
)
def test_tar_headers_are_tarfiles(
    parts: list[str], kind: str, mode: int, size: int, link: str
) -> None:
    name = "/".join(parts) + ("/" if kind == "dir" else "")
    entry: dict[str, Any] = {"type": kind, "mode": mode, "size": size, "link": link}
    if kind != "file":
        del entry["size"]
    if kind != "link":
        del entry["link"]
    assert tar_header(name, entry) == _tarfile_header(name, entry)


_member = st.tuples(
    st.lists(_names, min_size=1, max_size=6),
    st.sampled_from(["file", "dir", "link"]),
    st.binary(max_size=3000),
    _names,
)


def _tarfile_archive(members: list[tuple[list[str], str, bytes, str]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for parts, kind, data, link in members:
            info = tarfile.TarInfo("/".join(parts))
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, link
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return out.getvalue()


@settings(max_examples=200, deadline=None)
@given(members=st.lists(_member, max_size=6))
def test_the_reader_reads_what_tarfile_writes(
    members: list[tuple[list[str], str, bytes, str]],
) -> None:
    archive = _tarfile_archive(members)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r|") as tar:
        expected = [
            (
                m.name,
                m.isdir(),
                m.issym(),
                m.linkname,
                tar.extractfile(m).read() if m.isfile() else b"",
            )  # type: ignore[union-attr]
            for m in tar
        ]
    reader = TarReader(io.BytesIO(archive))
    found = [
        (
            m.name,
            m.kind == "dir",
            m.kind == "link",
            m.link,
            b"".join(reader.chunks(m)) if m.kind == "file" else b"",
        )
        for m in reader
    ]
    assert found == expected


def test_the_reader_refuses_a_damaged_header_and_a_short_archive() -> None:
    archive = bytearray(_tarfile_archive([(["a", "b.md"], "file", b"hello" * 300, "")]))
    with pytest.raises(EOFError):
        list(TarReader(io.BytesIO(bytes(archive[:1024]))))
    archive[3] ^= 0x01  # a byte of the first name: the header's checksum no longer matches
    with pytest.raises(tarfile.ReadError, match="checksum"):
        list(TarReader(io.BytesIO(bytes(archive))))


@pytest.mark.parametrize("level", [0, 1, 3, 6, 9])
def test_segments_join_into_one_gzip_stream(tmp_path: Path, level: int) -> None:
    """A segment compressed elsewhere, a run in parallel blocks and small writes: gzip reads
    them back as one stream, its CRC and length right, and the header's checksum is the file's."""
    rng = random.Random(level)
    small = b"header " * 300
    elsewhere = bytes(rng.getrandbits(8) for _ in range(5000)) + b"tree " * 20000
    run = (b"store page " * 100 + bytes(range(256))) * (2 * BLOCK // 1356 + 7)
    with open(tmp_path / "segment", "wb") as out:
        segment = DeflateStream(out, 6)
        segment.write(elsewhere)
        segment.sync()
    with open(tmp_path / "backup.gz", "wb") as out:
        stream = ChecksummedGzip(out, 6)
        stream.write(small)
        stream.join(tmp_path / "segment", segment.crc, segment.size)
        stream.write_blocks(memoryview(run), level)
        stream.write(small)
        assert stream.position == len(small) * 2 + len(elsewhere) + len(run)
        checksum = stream.close()
    assert gzip.decompress((tmp_path / "backup.gz").read_bytes()) == (
        small + elsewhere + run + small
    )
    assert file_checksums(tmp_path / "backup.gz") == (checksum, checksum)
    subprocess.run(["gzip", "-t", str(tmp_path / "backup.gz")], check=True)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_system_tar_opens_a_backup(project: Project, tmp_path: Path) -> None:
    staging = project.root / ".claude/skills/staging"
    write_skill(staging, "alpha", files={"bin/run.sh": "#!/bin/sh\necho hi\n", "x" * 120: "long"})
    write_skill(staging, "beta", files={"data/ünïcode.txt": "ü\n", "big.bin": os.urandom(70000)})
    os.symlink("bin/run.sh", staging / "alpha" / "link")
    (staging / "alpha" / "bin" / "run.sh").chmod(0o755)
    made = api.backup_create(project)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "xzf", str(made.backup.path)], cwd=out, check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        path = out / name
        if entry["type"] == "file":
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], name
            assert path.stat().st_mode & 0o777 == entry["mode"], name
        elif entry["type"] == "link":
            assert os.readlink(path) == entry["link"]
        else:
            assert path.is_dir()
    assert (out / "stages/staged/alpha/bin/run.sh").read_bytes() == (
        staging / "alpha/bin/run.sh"
    ).read_bytes()
    assert os.access(out / "stages/staged/alpha/bin/run.sh", os.X_OK)
    assert (out / "stages/staged/beta/big.bin").read_bytes() == (
        staging / "beta/big.bin"
    ).read_bytes()
    # The store's copy is a database with the store's tables, as the manifest says.
    import sqlite3

    with sqlite3.connect(out / "store/state.db") as copied:
        events = copied.execute("SELECT count(*) FROM event").fetchone()[0]
    assert events == manifest["store"]["events"]
    # Python's own tarfile reads it as well, member by member.
    with tarfile.open(made.backup.path) as opened:
        names = opened.getnames()
    assert names[0] == "manifest.json" and "store/state.db" in names
