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
from concurrent.futures import Future, ThreadPoolExecutor
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
