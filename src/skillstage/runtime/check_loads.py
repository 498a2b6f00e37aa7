"""Loading every serving skill at once from N threads and from N processes, timed (the loads of
`skillstage check-runtime`, runtime/check.py).

Threads share one `Loader`, as the threads of an agent host do. Each process is a fresh Python
interpreter (`python -m skillstage.runtime.check_loads`) with a loader of its own, so its peak
memory (RSS high-water mark, `getrusage`) is what a host process that loaded every skill uses:
the interpreter, skillstage and the loaded skills, nothing of the process checking.

A worker process speaks JSON lines on stdout: `{"ready": …}` once its loader is built, then it
waits for `go` on stdin (so the N processes load at the same time, not one after another's
start-up), then one line per load, then `{"done": …}`. A load that takes longer than the timeout
fails; a worker that says nothing for that long is stopped (its process group killed) and the
load it was in is named.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import pickle
import queue
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from skillstage.runtime.routing import Resolution

if TYPE_CHECKING:
    from skillstage.config import Project
    from skillstage.runtime.loader import Loader

THREADS = "threads"
PROCESSES = "processes"
# Seconds a worker process may take to start (import, open the store, build its table): not a
# load, so not held to the load timeout; generous for a busy machine.
READY_TIMEOUT = 60.0
_GO = b"go\n"


@dataclass(frozen=True)
class Evidence:
    """One fact behind a criterion's status: what, and whose and where when it is a skill's."""

    detail: str
    skill: str | None = None
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"skill": self.skill, "path": self.path, "detail": self.detail}


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The nearest-rank `p`th percentile of ascending values (None when there are none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class LoadPass:
    """Every load of one mode: how many workers, how many loads were asked for and done, how
    long each took, and what failed (an error, or a load over the timeout)."""

    mode: str
    workers: int
    expected: int  # workers x versions
    times_ms: list[float] = field(default_factory=list)
    failures: list[Evidence] = field(default_factory=list)
    workers_started: int = 0  # threads or processes that began loading
    peak_rss_kb: list[int] = field(default_factory=list)  # processes: each one's high-water mark
    baseline_rss_kb: list[int] = field(default_factory=list)  # ... before it loaded anything
    # Who loaded: thread idents or process ids, and when each worker began and ended its loads
    # (time.monotonic: one clock for every process on Linux), showing they loaded at once.
    loaders: list[int] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return len(self.times_ms)

    def summary(self) -> dict[str, float | None]:
        ordered = sorted(self.times_ms)
        return {
            "p50_ms": percentile(ordered, 50),
            "p95_ms": percentile(ordered, 95),
            "p99_ms": percentile(ordered, 99),
            "max_ms": ordered[-1] if ordered else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "workers": self.workers,
            "workers_started": self.workers_started,
            "loads_expected": self.expected,
            "loads_done": self.done,
            **{key: _round(value) for key, value in self.summary().items()},
            "seconds": round(self.seconds, 3),
            "loaders": self.loaders,
            "failures": [failure.to_dict() for failure in self.failures],
        }


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _label(version: Resolution) -> str:
    return f"{version.name} {version.version}"


def _slow(version: Resolution, seconds: float, timeout: float, who: str) -> Evidence:
    return Evidence(
        f"{_label(version)}: a load took {seconds:.3g} s, over the {timeout:g} s limit ({who})",
        version.name,
        version.path,
    )


def _raised(version: Resolution, error: str, who: str) -> Evidence:
    return Evidence(
        f"{_label(version)}: the load failed ({who}): {error}", version.name, version.path
    )


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def warm_up() -> None:
    """Import what a first load would (the skill reader, the YAML parser), so that the loads
    timed are loads, not this process's one-time imports."""
    import skillstage.skill.read  # noqa: F401 (imported for its cost)
    from skillstage.skill.frontmatter import parse_skill_md

    parse_skill_md(b"---\nname: warm-up\n---\n", Path("SKILL.md"))


# -- threads ----------------------------------------------------------------------------------


def load_in_threads(
    loader: Loader, versions: Sequence[Resolution], *, workers: int, timeout: float
) -> LoadPass:
    """`workers` threads, started together, each loading every version through `loader`."""
    result = LoadPass(THREADS, workers, workers * len(versions))
    lock = threading.Lock()
    stuck: set[int] = set()  # threads reported as over the timeout, no longer waited for
    # Each thread's load in progress: (index into versions, when it began).
    current: dict[int, tuple[int, float]] = {}
    barrier = threading.Barrier(workers)

    def work(number: int) -> None:
        try:
            barrier.wait(timeout=READY_TIMEOUT)
        except threading.BrokenBarrierError:
            return
        with lock:
            result.workers_started += 1
            result.loaders.append(threading.get_ident())
        began_all = time.monotonic()
        for index, version in enumerate(versions):
            began = time.perf_counter()
            with lock:
                current[number] = (index, began)
            failure = None
            try:
                loader.load(version)
            except Exception as exc:
                failure = _raised(version, _error_text(exc), f"thread {number + 1}")
            seconds = time.perf_counter() - began
            with lock:
                del current[number]
                if number in stuck:
                    return  # already reported as over the timeout
                result.times_ms.append(seconds * 1000)
                if failure is not None:
                    result.failures.append(failure)
                elif seconds > timeout:
                    result.failures.append(_slow(version, seconds, timeout, f"thread {number + 1}"))
        with lock:
            result.spans.append((began_all, time.monotonic()))

    started = time.perf_counter()
    # Daemon threads: one stuck in a load must not keep the process alive after the check.
    threads = [
        threading.Thread(target=work, args=(n,), name=f"check-runtime-{n + 1}", daemon=True)
        for n in range(workers)
    ]
    for thread in threads:
        thread.start()
    while True:
        running = [n for n, thread in enumerate(threads) if thread.is_alive() and n not in stuck]
        if not running:
            break
        threads[running[0]].join(timeout=min(0.05, timeout))
        now = time.perf_counter()
        with lock:
            for number, (index, began) in current.items():
                if number not in stuck and now - began > timeout:
                    stuck.add(number)
                    result.failures.append(
                        Evidence(
                            f"{_label(versions[index])}: a load did not finish within "
                            f"{timeout:g} s (thread {number + 1}); the thread was left behind",
                            versions[index].name,
                            versions[index].path,
                        )
                    )
    result.seconds = time.perf_counter() - started
    return result


# -- processes --------------------------------------------------------------------------------


def worker_command() -> list[str]:
    """How a worker process is started: this interpreter, this module."""
    return [sys.executable, "-m", "skillstage.runtime.check_loads"]


@dataclass
class _Worker:
    number: int
    process: subprocess.Popen[bytes]
    stderr: IO[bytes]
    ready: bool = False
    finished: bool = False  # it said done, or said why it could not start
    gone: bool = False  # its stdout closed
    next_index: int = 0
    last_heard: float = field(default_factory=time.perf_counter)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"process {self.number + 1}, pid {self.process.pid}"

    def send(self, data: bytes) -> None:
        """Write to its stdin; a worker that already ended is reported by its stdout closing."""
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.write(data)
            self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode("utf-8", "replace").strip()
        return " | ".join(text.splitlines()[-3:]) or "nothing on stderr"


def _read_lines(worker: _Worker, inbox: queue.Queue[tuple[int, dict[str, Any] | None]]) -> None:
    assert worker.process.stdout is not None
    for raw in worker.process.stdout:
        try:
            message = json.loads(raw)
        except ValueError:
            message = {"noise": raw.decode("utf-8", "replace").strip()}
        inbox.put((worker.number, message))
    inbox.put((worker.number, None))


def load_in_processes(
    project: Project,
    stage: str,
    versions: Sequence[Resolution],
    *,
    workers: int,
    timeout: float,
    command: Sequence[str] | None = None,
) -> LoadPass:
    """`workers` processes, each with its own loader, loading every version at the same time.
    `command` starts a worker (default: `worker_command()`)."""
    result = LoadPass(PROCESSES, workers, workers * len(versions))
    job = json.dumps(
        {
            "project": base64.b64encode(pickle.dumps(project)).decode("ascii"),
            "stage": stage,
            "versions": [version.to_dict() for version in versions],
        }
    ).encode()
    env = {**os.environ, "SKILLSTAGE_DATABASE_URL": project.database_url}
    inbox: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
    pool: list[_Worker] = []
    started = time.perf_counter()
    with contextlib.ExitStack() as cleanup:
        for number in range(workers):
            stderr = cleanup.enter_context(tempfile.TemporaryFile())
            process = subprocess.Popen(
                list(command or worker_command()),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=project.root,
                env=env,
                start_new_session=True,  # its own process group, killed whole on a timeout
            )
            worker = _Worker(number, process, stderr)
            pool.append(worker)
            cleanup.callback(worker.stop)  # every worker ends with the pass, however it ends
            threading.Thread(target=_read_lines, args=(worker, inbox), daemon=True).start()
            worker.send(job + b"\n")
        _run_workers(pool, versions, inbox, result, timeout)
    result.seconds = time.perf_counter() - started
    return result


def _run_workers(
    pool: list[_Worker],
    versions: Sequence[Resolution],
    inbox: queue.Queue[tuple[int, dict[str, Any] | None]],
    result: LoadPass,
    timeout: float,
) -> None:
    """Wait until every worker is ready, say go to all at once, and follow their loads."""
    deadline = time.perf_counter() + READY_TIMEOUT
    while not all(w.ready or w.gone for w in pool) and time.perf_counter() < deadline:
        _take(pool, versions, inbox, result, timeout, wait=0.05)
    for worker in pool:
        if not worker.ready and not worker.gone:
            worker.stop()
            worker.gone = True
            result.failures.append(
                Evidence(f"{worker.name} was not ready within {READY_TIMEOUT:g} s; stopped")
            )
    going = [w for w in pool if w.ready and not w.gone]
    for worker in going:
        worker.last_heard = time.perf_counter()
        worker.send(_GO)
    result.workers_started = len(going)
    while any(not w.gone for w in going):
        _take(pool, versions, inbox, result, timeout, wait=min(0.05, timeout))
        now = time.perf_counter()
        for worker in going:
            if worker.gone or now - worker.last_heard <= timeout:
                continue
            worker.stop()
            worker.gone = True
            if worker.next_index < len(versions):
                version = versions[worker.next_index]
                result.failures.append(
                    Evidence(
                        f"{_label(version)}: a load did not finish within {timeout:g} s "
                        f"({worker.name}); the process was stopped",
                        version.name,
                        version.path,
                    )
                )
            else:
                result.failures.append(
                    Evidence(f"{worker.name} did not finish within {timeout:g} s; stopped")
                )


def _take(
    pool: list[_Worker],
    versions: Sequence[Resolution],
    inbox: queue.Queue[tuple[int, dict[str, Any] | None]],
    result: LoadPass,
    timeout: float,
    *,
    wait: float,
) -> None:
    """Handle what the workers said (at most `wait` s for the first message)."""
    try:
        number, message = inbox.get(timeout=wait)
    except queue.Empty:
        return
    while True:
        _handle(pool[number], message, versions, result, timeout)
        try:
            number, message = inbox.get_nowait()
        except queue.Empty:
            return


def _handle(
    worker: _Worker,
    message: dict[str, Any] | None,
    versions: Sequence[Resolution],
    result: LoadPass,
    timeout: float,
) -> None:
    worker.last_heard = time.perf_counter()
    if worker.gone:
        return  # stopped already: what it said after is not counted
    if message is None:  # its stdout closed
        worker.gone = True
        if not worker.finished:
            code = worker.process.wait()
            result.failures.append(
                Evidence(
                    f"{worker.name} ended (exit {code}) after {worker.next_index} of "
                    f"{len(versions)} loads: {worker.stderr_tail()}"
                )
            )
        return
    if "ready" in message:
        worker.ready = True
        result.baseline_rss_kb.append(int(message["ready"]["rss_kb"]))
    elif "load" in message:
        index = int(message["load"])
        worker.next_index = index + 1
        version, seconds = versions[index], float(message["ms"]) / 1000
        result.times_ms.append(seconds * 1000)
        if message.get("error"):
            result.failures.append(_raised(version, str(message["error"]), worker.name))
        elif seconds > timeout:
            result.failures.append(_slow(version, seconds, timeout, worker.name))
    elif "done" in message:
        worker.finished = True
        worker.report = message["done"]
        result.peak_rss_kb.append(int(message["done"]["rss_kb"]))
        result.loaders.append(worker.process.pid)
        result.spans.append((float(worker.report["began"]), float(worker.report["ended"])))
    elif "error" in message:  # it could not start its loader
        worker.finished = True
        result.failures.append(Evidence(f"{worker.name} could not start: {message['error']}"))


# -- the worker process -----------------------------------------------------------------------


def peak_rss_kb() -> int:
    """This process's resident-set high-water mark, in KiB.

    On Linux, the kernel's own mark for this process's memory (VmHWM): `getrusage`'s ru_maxrss
    outlives exec, so a worker started by a big parent would report the parent's size. Elsewhere
    ru_maxrss (KiB on most systems, bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def worker_main() -> int:
    """A worker process: read the job, build a loader, say ready, wait for go, load and time
    every version, say done with the peak memory."""
    from skillstage.runtime.loader import Loader

    job = json.loads(sys.stdin.buffer.readline())
    # The job comes from the parent that started this process: its own pickled Project.
    project = pickle.loads(base64.b64decode(job["project"]))
    versions = [Resolution.from_dict(v) for v in job["versions"]]
    try:
        loader = Loader(project, stage=job["stage"])
    except Exception as exc:
        _say({"error": _error_text(exc)})
        return 1
    with loader:
        warm_up()
        _say({"ready": {"rss_kb": peak_rss_kb()}})
        if sys.stdin.buffer.readline() != _GO:
            return 1
        began = time.monotonic()
        for index, version in enumerate(versions):
            start = time.perf_counter()
            error = None
            try:
                loader.load(version)
            except Exception as exc:
                error = _error_text(exc)
            elapsed = (time.perf_counter() - start) * 1000
            _say({"load": index, "ms": elapsed, "error": error})
        stats = loader.stats()
        done = {"rss_kb": peak_rss_kb(), "began": began, "ended": time.monotonic()}
        _say({"done": {**done, "hits": stats["hits"], "misses": stats["misses"]}})
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
