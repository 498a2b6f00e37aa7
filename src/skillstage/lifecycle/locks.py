"""One promoter per skill at a time: a file lock on one machine, an advisory lock in PostgreSQL."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from skillstage.config import Project
from skillstage.errors import LockError
from skillstage.store import Store

DEFAULT_LOCK_TIMEOUT = 60.0
_POLL_SECONDS = 0.02


@contextmanager
def skill_lock(
    project: Project, store: Store, name: str, *, timeout: float = DEFAULT_LOCK_TIMEOUT
) -> Iterator[None]:
    """Hold the skill's lock for the block; a second holder waits up to `timeout` seconds."""
    if store.dialect == "postgresql":
        with store.skill_lock(name, timeout=timeout):
            yield
        return
    directory = project.state_dir / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    with _file_lock(str(directory / f"{name}.lock"), name, timeout):
        yield


@contextmanager
def _file_lock(path: str, name: str, timeout: float) -> Iterator[None]:
    # flock(2): the kernel frees the lock when the process dies, however it dies (SIGKILL
    # included), so a crashed promoter never leaves a skill locked. The file itself stays: deleting
    # it while another process waits on it would let two processes "hold" two different files.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockError.busy(name, timeout) from None
                time.sleep(_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
