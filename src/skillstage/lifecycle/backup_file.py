"""The backup file's compression: one gzip stream whose header carries the sha256 of the whole
file, so any changed byte is found before anything is read from it (`backup.py`)."""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

# The gzip header's extra field: subfield "SS", the file's sha256 as 64 hex digits.
_EXTRA_ID = b"SS"
_DIGEST_LEN = 64
_HEADER = 10 + 2 + 4  # fixed header, XLEN, subfield id and length


# -- the file: gzip with the file's own checksum in its header ----------------------------------


class ChecksummedGzip:
    """Writes one gzip stream whose header's extra field holds the sha256 of the whole file
    (with those 64 bytes zeroed). Segments may use different compression levels (the tree at 6,
    the store at 1 in parallel blocks), joined as pigz joins blocks: each ends on a sync flush,
    so together they are one valid deflate stream."""

    def __init__(self, out: IO[bytes], level: int) -> None:
        self._out = out
        self._sha = hashlib.sha256()
        self._crc = 0
        self._size = 0
        header = b"\x1f\x8b\x08\x04" + b"\0\0\0\0" + b"\x00\xff"
        extra = _EXTRA_ID + struct.pack("<H", _DIGEST_LEN) + b"0" * _DIGEST_LEN
        self._raw(header + struct.pack("<H", len(extra)) + extra)
        self.level = level
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        self._window = b""

    def _raw(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self._sha.update(data)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        data = bytes(data)
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._raw(self._compressor.compress(data))
        self._window = (self._window + data)[-32768:]
        return len(data)

    def write_blocks(self, blocks: Iterator[bytes], level: int) -> None:
        """Write a long run of data compressed at `level`, two blocks at a time (zlib works
        outside the GIL)."""
        self._raw(self._compressor.flush(zlib.Z_SYNC_FLUSH))

        def compress(job: tuple[bytes, bytes]) -> bytes:
            dictionary, block = job
            compressor = _compressor(level, dictionary)
            compressed: bytes = compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)
            return compressed

        def jobs() -> Iterator[tuple[bytes, bytes]]:
            previous = self._window
            for block in blocks:
                self._crc = zlib.crc32(block, self._crc)
                self._size += len(block)
                yield previous[-32768:], block
                previous = block
            self._window = previous[-32768:]

        # At most three blocks in memory at once, whatever the store's size.
        with ThreadPoolExecutor(2) as pool:
            pending: deque[Future[bytes]] = deque()
            for job in jobs():
                pending.append(pool.submit(compress, job))
                if len(pending) >= 3:
                    self._raw(pending.popleft().result())
            while pending:
                self._raw(pending.popleft().result())
        self._compressor = _compressor(self.level, self._window)

    def close(self) -> str:
        """Finish the stream and write the file's checksum into its header; returns it."""
        self._raw(self._compressor.flush(zlib.Z_FINISH))
        self._raw(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        checksum = self._sha.hexdigest()
        self._out.seek(_HEADER)
        self._out.write(checksum.encode())
        return checksum

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        """Bytes written so far, uncompressed: where tarfile is in the archive."""
        return self._size


def _compressor(level: int, dictionary: bytes) -> Any:
    """A raw deflate compressor that continues a stream whose last 32 KiB were `dictionary`."""
    if dictionary:
        return zlib.compressobj(level, zlib.DEFLATED, -15, zdict=dictionary)
    return zlib.compressobj(level, zlib.DEFLATED, -15)


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
        while chunk := reading.read(1 << 20):
            digest.update(chunk)
    return recorded, digest.hexdigest()
