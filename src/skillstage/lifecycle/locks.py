"""One promoter per skill at a time: a file lock on one machine, an advisory lock in PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import filelock

from skillstage.config import Project
from skillstage.errors import LockError
from skillstage.store import Store

DEFAULT_LOCK_TIMEOUT = 60.0


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
    lock = filelock.FileLock(str(directory / f"{name}.lock"))
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout:
        raise LockError.busy(name, timeout) from None
    try:
        yield
    finally:
        lock.release()
