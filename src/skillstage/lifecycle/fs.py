"""Filesystem moves the promoter makes: copies, the immutable archive, and the atomic swap.

A reader of a live skill directory must see the whole old version or the whole new one, never a mix
and never nothing. On Linux `renameat2(RENAME_EXCHANGE)` swaps two directories in one step; where it
is missing the promoter falls back to two renames, and its journal makes the gap recoverable.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import stat
import time
from pathlib import Path
from typing import Any

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2

_renameat2: Any
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    _renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    _renameat2.restype = ctypes.c_int
except (AttributeError, OSError):  # not glibc >= 2.28, or not Linux
    _renameat2 = None


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically. False when the system cannot (the caller falls back)."""
    if _renameat2 is None or os.environ.get("SKILLSTAGE_NO_EXCHANGE"):
        return False
    result = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False  # the kernel or this filesystem has no RENAME_EXCHANGE
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def sibling(path: Path, purpose: str) -> Path:
    """A fresh hidden path beside `path`, on the same filesystem, so a rename to it is atomic."""
    # os.urandom rather than uuid4: importing uuid costs a promotion ~2 ms of start-up.
    return path.parent / f".skillstage-{purpose}-{path.name}-{os.urandom(6).hex()}"


def write_atomically(path: Path, text: str) -> None:
    """Write a text file whole or not at all (a full disk leaves the old file, or none, never
    an empty or cut one): written under a scratch name beside it, then renamed over it."""
    scratch = sibling(path, "writing")
    try:
        scratch.write_text(text, encoding="utf-8")
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


def is_scratch(name: str) -> bool:
    """Whether a directory name is one `sibling` made (an orphan after a crash)."""
    return name.startswith(".skillstage-")


def copy_tree(source: Path, destination: Path) -> None:
    """Copy a skill directory, keeping executable bits and symlinks, with owner-writable files
    (archived copies are read-only). `destination` must not exist."""
    _copy_directory(os.fspath(source), os.fspath(destination), read_only=False)


def archive_copy(source: Path, destination: Path) -> bool:
    """Put an immutable copy of `source` at `destination` unless one is there. True if copied.

    Copied under a scratch name and renamed, so an archive entry is complete or absent.
    """
    if destination.exists():
        return False
    destination.parent.mkdir(parents=True, exist_ok=True)
    scratch = sibling(destination, "archiving")
    _copy_directory(os.fspath(source), os.fspath(scratch), read_only=True)
    os.rename(scratch, destination)
    return True


def _copy_directory(source: str, destination: str, *, read_only: bool) -> None:
    # Plain system calls rather than shutil.copytree: a promotion copies every file of a skill
    # once or twice, and copytree's per-file metadata copying (mode, times, flags: three more
    # calls) and buffered file objects were most of its cost. Times are not kept: nothing reads
    # them, and the digest covers content and executable bits only.
    os.mkdir(destination, stat.S_IRWXU)
    with os.scandir(source) as entries:
        for entry in entries:
            target = os.path.join(destination, entry.name)
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
            elif entry.is_dir(follow_symlinks=False):
                _copy_directory(entry.path, target, read_only=read_only)
            elif entry.is_file(follow_symlinks=False):
                mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode) | stat.S_IRUSR
                _copy_file(entry.path, target, mode & ~0o222 if read_only else mode | stat.S_IWUSR)
            else:
                raise OSError(errno.EINVAL, "not a file, directory or symlink", entry.path)
    mode = stat.S_IMODE(os.stat(source).st_mode) | stat.S_IRWXU
    os.chmod(destination, mode & ~0o222 if read_only else mode)


def _copy_file(source: str, destination: str, mode: int) -> None:
    reading = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        writing = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            while os.sendfile(writing, reading, None, 1 << 30):
                pass
            os.fchmod(writing, mode)  # exactly `mode`, whatever the umask
        finally:
            os.close(writing)
    finally:
        os.close(reading)


def remove_tree(path: Path) -> None:
    """Remove a directory tree: first renamed aside (one step), then deleted. Missing is fine."""
    if not os.path.lexists(path):
        return
    aside = sibling(path, "removing")
    os.rename(path, aside)
    delete_scratch(aside)


# How long a swapped-out copy outlives its swap: a reader (an agent loading the skill) that
# opened the live directory just before the exchange reads the old version whole from it.
RETIRE_GRACE_SECONDS = 60.0


def retire(path: Path, retired: Path) -> None:
    """Move a copy that was live a moment ago (now under its scratch name) into `retired`
    instead of deleting it at once, and delete the retired copies older than the grace period.

    Deleting it at once pulls its files from under a reader that holds the directory open; in
    `retired` (in the state directory, out of every stage folder) the directory keeps its inode,
    so such a reader finishes. Where `retired` is on another filesystem it is deleted at once."""
    if os.path.lexists(path):
        try:
            retired.mkdir(parents=True, exist_ok=True)
            os.rename(path, retired / path.name)
        except OSError:
            delete_scratch(path)
    # At most once a second per process: the sweep looks at every copy waiting out its minute,
    # and a process promoting every few milliseconds has hundreds of them.
    now = time.monotonic()
    if now - _last_sweep.get(retired, -SWEEP_INTERVAL_SECONDS) >= SWEEP_INTERVAL_SECONDS:
        _last_sweep[retired] = now
        sweep_retired(retired)


SWEEP_INTERVAL_SECONDS = 1.0
_last_sweep: dict[Path, float] = {}  # retired directory -> when this process last swept it


def sweep_retired(retired: Path, *, grace: float | None = None) -> list[Path]:
    """Delete the retired copies older than `grace` seconds (by the time they were moved;
    default RETIRE_GRACE_SECONDS); the copies deleted."""
    if not retired.is_dir():
        return []
    grace = RETIRE_GRACE_SECONDS if grace is None else grace
    now = time.time()
    deleted = []
    for entry in retired.iterdir():
        try:
            moved = entry.lstat().st_ctime
        except FileNotFoundError:
            continue  # another process swept it
        if now - moved > grace:
            delete_scratch(entry)
            deleted.append(entry)
    return deleted


def delete_scratch(path: Path) -> None:
    """Delete a scratch tree, read-only parts included (or a scratch file: a killed writer's
    half-written archive record)."""

    def make_writable_and_retry(function, target, _excinfo):  # type: ignore[no-untyped-def]
        os.chmod(os.path.dirname(target), stat.S_IRWXU)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, stat.S_IRWXU)
        function(target)

    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        # (a skill directory that is a symlink: the link goes, never what it points to, and
        # rmtree's error handler must not make the folder holding it private; a file is unlinked:
        # rmtree refuses it)
        os.unlink(path)
    elif os.path.lexists(path):
        shutil.rmtree(path, onerror=make_writable_and_retry)


# -- fault injection ---------------------------------------------------------------------------

FAULT_ENV = "SKILLSTAGE_FAULT"


def fault_point(name: str) -> None:
    """Die here, as from `kill -9`, when SKILLSTAGE_FAULT names this point (or take a Ctrl-C,
    when it names it followed by `+sigint`).

    The crash-safety tests SIGKILL the promoter at each step of its journal; this makes every step
    reachable on purpose instead of by timing luck.
    """
    fault = os.environ.get(FAULT_ENV)
    if fault == name:
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == f"{name}+sigint":
        os.kill(os.getpid(), signal.SIGINT)
