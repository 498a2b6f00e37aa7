"""The backup file's compression: one gzip stream whose header carries the sha256 of the whole
file, so any changed byte is found before anything is read from it (`backup.py`).

The stream is written in segments, as pigz joins blocks: each ends on a sync flush, so together
they are one valid deflate stream that `tar xzf` (and every gzip reader) opens. A segment may be
compressed elsewhere first (the skill trees, into a scratch file, while the store is being
copied) and joined later, its CRC combined with the rest; the store, most of the bytes, is
compressed in blocks on every core. Levels 1-3 use ISA-L (several times faster than zlib at the
same ratio), 0 stores and 4-9 use zlib.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from isal import isal_zlib

# The gzip header's extra field: subfield "SS", the file's sha256 as 64 hex digits.
_EXTRA_ID = b"SS"
_DIGEST_LEN = 64
_HEADER = 10 + 2 + 4  # fixed header, XLEN, subfield id and length
_BUFFER = 1 << 20  # small writes (tar headers, small files) are compressed a MiB at a time
BLOCK = 4 << 20  # a long run (the store) is compressed in blocks of this size, in parallel
_WORKERS = min(4, os.cpu_count() or 1)


def keep_freed_memory() -> None:
    """Let this process keep the memory it frees for its next allocations (glibc's malloc
    otherwise hands each freed MiB back and takes it again: a page fault every 4 KiB, which on
    virtual machines costs more than the inflating itself). Streaming a backup allocates and
    frees MiB-sized buffers all the time; a no-op where the C library is not glibc."""
    global _MEMORY_KEPT
    if _MEMORY_KEPT:
        return
    _MEMORY_KEPT = True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_TRIM_THRESHOLD, 256 << 20)  # keep up to 256 MiB of freed memory at the top
    mallopt(_M_MMAP_THRESHOLD, 64 << 20)  # blocks under 64 MiB from the heap, not mmap


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_MEMORY_KEPT = False


def deflater(level: int) -> Any:
    """A raw deflate compressor at `level` 0-9 (1-3: ISA-L's levels; 0 and 4-9: zlib's)."""
    if 1 <= level <= 3:
        return isal_zlib.compressobj(level, zlib.DEFLATED, -15)
    return zlib.compressobj(level, zlib.DEFLATED, -15)


def _compress_block(block: memoryview, level: int) -> tuple[bytes, int]:
    compressor = deflater(level)
    compressed: bytes = compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return compressed, isal_zlib.crc32(block)


class DeflateStream:
    """Raw deflate written to `out` in sync-flushed segments, with the CRC32 and length of
    what went in (a gzip member's trailer) and the sha256 of what came out."""

    def __init__(self, out: IO[bytes], level: int) -> None:
        self._out = out
        self.sha = hashlib.sha256()
        self.crc = 0
        self.size = 0
        self.level = level
        self._compressor = deflater(level)
        self._pending = bytearray()

    @property
    def position(self) -> int:
        """Bytes written so far, uncompressed: where the tar archive is."""
        return self.size + len(self._pending)

    def _raw(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.sha.update(data)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._pending += data
        if len(self._pending) >= _BUFFER:
            self._compress_pending()
        return len(data)

    def _compress_pending(self) -> None:
        if self._pending:
            self.crc = isal_zlib.crc32(self._pending, self.crc)
            self.size += len(self._pending)
            self._raw(self._compressor.compress(self._pending))
            self._pending.clear()

    def sync(self) -> None:
        """End the current segment on a byte boundary; what follows starts afresh (it may not
        refer back into what came before: that may be a segment compressed elsewhere)."""
        self._compress_pending()
        self._raw(self._compressor.flush(zlib.Z_SYNC_FLUSH))
        self._compressor = deflater(self.level)

    def join(self, segment: Path, crc: int, size: int) -> None:
        """Append a segment another DeflateStream wrote (and synced) to the file `segment`, of
        `size` bytes uncompressed with CRC32 `crc`."""
        self.sync()
        with open(segment, "rb") as reading:
            while chunk := reading.read(_BUFFER):
                self._raw(chunk)
        self.crc = isal_zlib.crc32_combine(self.crc, crc, size)
        self.size += size

    def write_blocks(self, data: memoryview, level: int) -> None:
        """Write a long run of data compressed at `level`, in blocks on every core (both
        compressors work outside the GIL); at most a few blocks are held at once."""
        self.sync()
        with ThreadPoolExecutor(_WORKERS) as pool:
            pending: deque[tuple[Future[tuple[bytes, int]], int]] = deque()

            def take_one() -> None:
                future, length = pending.popleft()
                compressed, crc = future.result()
                self._raw(compressed)
                self.crc = isal_zlib.crc32_combine(self.crc, crc, length)
                self.size += length

            for start in range(0, len(data), BLOCK):
                block = data[start : start + BLOCK]
                pending.append((pool.submit(_compress_block, block, level), len(block)))
                if len(pending) > _WORKERS + 1:
                    take_one()
            while pending:
                take_one()

    def finish(self) -> None:
        self._compress_pending()
        self._raw(self._compressor.flush(zlib.Z_FINISH))


class ChecksummedGzip(DeflateStream):
    """One gzip stream whose header's extra field holds the sha256 of the whole file (with
    those 64 bytes zeroed)."""

    def __init__(self, out: IO[bytes], level: int) -> None:
        super().__init__(out, level)
        header = b"\x1f\x8b\x08\x04" + b"\0\0\0\0" + b"\x00\xff"
        extra = _EXTRA_ID + struct.pack("<H", _DIGEST_LEN) + b"0" * _DIGEST_LEN
        self._raw(header + struct.pack("<H", len(extra)) + extra)

    def close(self) -> str:
        """Finish the stream and write the file's checksum into its header; returns it."""
        self.finish()
        self._raw(struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))
        checksum = self.sha.hexdigest()
        self._out.seek(_HEADER)
        self._out.write(checksum.encode())
        return checksum


def file_checksums(path: Path) -> tuple[str | None, str]:
    """(the checksum the file's header records, the checksum of its bytes as they are)."""
    with open(path, "rb") as reading:
        head = reading.read(_HEADER + _DIGEST_LEN)
        if len(head) < _HEADER + _DIGEST_LEN or head[:4] != b"\x1f\x8b\x08\x04":
            return None, ""
        if head[12:14] != _EXTRA_ID:
            return None, ""
        recorded = head[_HEADER:].decode("ascii", "replace")
        digest = hashlib.sha256(head[:_HEADER] + b"0" * _DIGEST_LEN)
        while chunk := reading.read(_BUFFER):
            digest.update(chunk)
    return recorded, digest.hexdigest()


# -- reading the archive -------------------------------------------------------------------------

_TAR_BLOCK = 512
_TAR_KINDS = {b"0": "file", b"\0": "file", b"5": "dir", b"2": "link"}


@dataclass
class TarMember:
    name: str  # a directory's without its trailing slash, as tarfile gives it
    kind: str  # file, dir, link, or other (not something a backup holds)
    size: int
    link: str


class TarReader:
    """The members of the tar stream a backup holds (ustar headers; PAX records for long or
    non-ASCII names), read straight from the inflating stream: tarfile's general reader
    spends longer parsing headers than inflating and hashing take together. Each header's
    checksum is checked; a stream that ends early or carries a header that makes no sense
    raises `tarfile.ReadError` or `EOFError`."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._unread = 0  # of the current member's data and padding

    def _exactly(self, size: int) -> bytes:
        data = self._stream.read(size)
        if len(data) != size:
            raise EOFError("the archive ends in the middle of a member")
        return data

    def _skip(self) -> None:
        while self._unread:
            self._unread -= len(self._exactly(min(self._unread, _BUFFER)))

    def __iter__(self) -> Iterator[TarMember]:
        extended: dict[str, str] = {}
        while True:
            self._skip()
            header = self._stream.read(_TAR_BLOCK)
            if len(header) != _TAR_BLOCK:
                raise EOFError("the archive ends without its end-of-archive blocks")
            if not header.strip(b"\0"):
                while self._stream.read(_BUFFER):  # (to the end: the gzip trailer is checked)
                    pass
                return
            member = _parse_header(header)
            if member.kind == "pax":
                extended = _pax_records(self._exactly(member.size))
                self._unread = -member.size % _TAR_BLOCK
                continue
            if member.kind == "global":
                self._unread = member.size + (-member.size % _TAR_BLOCK)
                continue
            if extended:
                member.name = extended.get("path", member.name)
                member.link = extended.get("linkpath", member.link)
                if "size" in extended:
                    member.size = int(extended["size"])
                extended = {}
            if member.kind == "dir":
                member.name = member.name.rstrip("/")
            size = member.size if member.kind == "file" else 0
            self._unread = size + (-size % _TAR_BLOCK)
            yield member

    def chunks(self, member: TarMember) -> Iterator[bytes]:
        """The data of `member`, the member just yielded, a MiB at a time."""
        left = member.size
        while left:
            chunk = self._exactly(min(left, _BUFFER))
            left -= len(chunk)
            self._unread -= len(chunk)
            yield chunk


def _parse_header(header: bytes) -> TarMember:
    import tarfile

    recorded = header[148:156].strip(b" \0")
    expected = sum(header[:148]) + 8 * 32 + sum(header[156:])
    try:
        ok = int(recorded, 8) == expected
    except ValueError:
        ok = False
    if not ok:
        raise tarfile.ReadError("a tar header's checksum does not match")
    kind = header[156:157]
    field = header[124:136]
    if field[0] & 0x80:  # base-256, for sizes octal cannot hold
        size = int.from_bytes(field[1:], "big")
    else:
        try:
            size = int(field.strip(b" \0") or b"0", 8)
        except ValueError:
            raise tarfile.ReadError("a tar header's size makes no sense") from None
    name = _text(header[:100])
    if header[257:263] == b"ustar\0" and (prefix := _text(header[345:500])):
        name = f"{prefix}/{name}"
    named = {b"x": "pax", b"g": "global"}.get(kind) or _TAR_KINDS.get(kind, "other")
    return TarMember(name, named, size, _text(header[157:257]))


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    import tarfile

    records: dict[str, str] = {}
    at = 0
    while at < len(data) and data[at : at + 1] != b"\0":
        space = data.find(b" ", at)
        try:
            length = int(data[at:space])
        except ValueError:
            raise tarfile.ReadError("a PAX header makes no sense") from None
        if length <= 0:
            raise tarfile.ReadError("a PAX header makes no sense")
        record = data[space + 1 : at + length - 1]  # (without its newline)
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        at += length
    return records
