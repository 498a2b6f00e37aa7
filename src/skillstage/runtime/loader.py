"""The loader agent hosts call (seed 002 §6 "One Loader"): which copy serves a request, and its
content level by level (progressive disclosure).

    from skillstage.runtime import Loader
    loader = Loader("/path/to/project")
    for skill in loader.catalog():            # level 1: name and description, for the prompt
        ...
    resolution = loader.resolve("auth-v2", subject="user-42")
    skill = loader.load(resolution)           # level 2: the SKILL.md body and the file list
    data = loader.read(resolution, "references/providers.md")   # level 3: one file
    loader.record(resolution, pattern_fidelity=0.93, outcome_quality=1.0)

Content is cached by digest: a digest names one content forever, so a cached copy is never
stale. What serves (the routing table) is rebuilt when the store's routing generation moves,
checked every `runtime.refresh_ms` by a background thread, so `resolve` itself does no I/O and no
SQL. When the store cannot be reached the last table keeps serving (stale-while-revalidate), and
`stats()` says so.

A circuit breaker per version guards each loader (seed 002 §3.3; `runtime.breaker_fail_max` and
`breaker_reset_seconds`): after that many failed executions of a version in a row, recorded
here (`exception=True`, or a critical false negative), `resolve` gives the previous good version
instead, at once: a rollout's stable arm in place of its candidate, else the version live before
(arm "fallback"); with none archived the version keeps serving and `stats()["breakers"]` says
so. After the reset timeout one resolve gets the version again (the trial, half-open) while the
others keep the fallback; its record closes the breaker or opens it again. Each opening and
closing is an event in the store (`breaker_open`, `breaker_closed`), written by `record`. The
breakers are this process's: a forked child starts with every breaker closed (see `_after_fork`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from skillstage.config import Project, load_project
from skillstage.errors import SkillReadError, SkillstageError, StoreError, UsageError
from skillstage.runtime.breaker import BREAKER_OPEN, BreakerEvent, Breakers
from skillstage.runtime.routing import (
    DISABLED,
    Resolution,
    RoutingTable,
    UnknownSkillError,
    archive_entry,
    build_table,
)
from skillstage.store import Store, Transaction
from skillstage.store.rollouts import generation, listen_for_routing

LOG = logging.getLogger("skillstage.runtime")

CATALOG = "catalog"
BODY = "body"
FILES = "files"
_LEVELS = {CATALOG: 1, BODY: 2, FILES: 3}


@dataclass(frozen=True)
class CatalogEntry:
    """What an agent puts in its system prompt for one skill (disclosure level 1)."""

    name: str
    description: str
    version: str
    digest: str
    arm: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LoadedSkill:
    """A skill's SKILL.md body and file list (disclosure level 2), from a verified copy."""

    name: str
    version: str
    digest: str
    body: str
    files: tuple[str, ...]
    path: Path  # the copy it was read from (the live directory, or the archive)
    frontmatter: dict[str, Any]


def _project(where: Project | str | os.PathLike[str]) -> Project:
    if isinstance(where, Project):
        return where
    path = Path(where)
    if path.is_file():
        return load_project(config_path=path)
    if not path.is_dir():
        raise UsageError(f"{path} is neither a project directory nor a config file")
    return load_project(start=path)


class SkillDisabledError(SkillstageError):
    """The kill switch is on for the skill asked for (`skillstage disable`)."""

    code = "SKILL_DISABLED"


def log_breaker_event(event: BreakerEvent) -> None:
    """Say on the host's log that a version's breaker opened or closed."""
    LOG.warning(
        "skillstage: the breaker of %s %s (%s) %s: %s",
        event.name,
        event.version,
        event.digest[:12],
        "opened" if event.kind == BREAKER_OPEN else "closed",
        event.reason,
    )


class Loader:
    """Resolve, load and record skills for one agent host. Thread-safe and fork-safe.

    `Loader(project)` reads the store and the skill directories of a project on this machine;
    `Loader(url="http://host:8750", token=...)` asks a `skillstage serve` server for both
    instead (a `RemoteLoader`, runtime/remote.py), by the same rules."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Loader:
        if cls is Loader and kwargs.get("url") is not None:
            from skillstage.runtime.remote import RemoteLoader

            return object.__new__(RemoteLoader)
        return object.__new__(cls)

    def __init__(
        self,
        project: Project | str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        stage: str | None = None,
        refresh_ms: int | None = None,
        breaker_fail_max: int | None = None,
        breaker_reset_seconds: float | None = None,
    ) -> None:
        # `url` and `token` are the remote loader's (`__new__` made one when `url` is given).
        if project is None:
            raise UsageError(
                "a loader needs a project (its directory or config file), or the url of a "
                "skillstage server",
                hint='Loader("path/to/project") or Loader(url="http://host:8750", token=...)',
            )
        self.project = _project(project)
        stages = list(self.project.config.stages)
        runtime = self.project.config.runtime
        self._start_state(
            stage=stage,
            stages=stages,
            refresh_ms=refresh_ms or runtime.refresh_ms,
            breaker_fail_max=(
                runtime.breaker_fail_max if breaker_fail_max is None else breaker_fail_max
            ),
            breaker_reset_seconds=(
                runtime.breaker_reset_seconds
                if breaker_reset_seconds is None
                else breaker_reset_seconds
            ),
        )
        self._store: Store | None = None
        self._sqlite_path = _sqlite_file(self.project.database_url)
        self._store = Store.open(self.project.database_url)
        self._store_file = _file_identity(self._sqlite_path)
        self._table: RoutingTable = self._build()
        self._thread: threading.Thread | None = None
        self._start_refresher()
        # After a fork the child has no refresher thread and must not share the parent's
        # connection: it opens its own and starts a new thread (its table is the parent's).
        reference = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(reference))

    def _start_state(
        self,
        *,
        stage: str | None,
        stages: list[str],
        refresh_ms: int,
        breaker_fail_max: int,
        breaker_reset_seconds: float,
    ) -> None:
        """The stage served, the breakers and the empty caches: the local and the remote
        loader's alike."""
        self.stage = stage or stages[-1]
        if self.stage not in stages:
            raise UsageError(f"unknown stage {self.stage!r}", hint=f"stages: {', '.join(stages)}")
        self.refresh_s = refresh_ms / 1000
        fail_max, reset = breaker_fail_max, breaker_reset_seconds
        if fail_max < 1 or reset <= 0:
            raise UsageError(
                f"a breaker needs breaker_fail_max >= 1 and breaker_reset_seconds > 0, "
                f"not {fail_max} and {reset}"
            )
        self._breakers = Breakers(fail_max=fail_max, reset_seconds=reset)
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()  # one refresh at a time (the thread, or a load)
        self._loaded: dict[str, LoadedSkill] = {}
        self._files: dict[tuple[str, str], bytes] = {}
        self._levels: dict[tuple[str, str], str] = {}
        self._counts = {
            "hits": 0,
            "misses": 0,
            "refreshes": 0,
            "refresh_errors": 0,
            "breaker_event_errors": 0,  # a breaker_open/closed event the store did not take
        }
        self._drift: dict[str, str] = {}  # digest -> what was wrong with the live copy
        self._stale_since: dt.datetime | None = None
        self._last_error: str | None = None
        self._closed = threading.Event()

    # -- the routing table --------------------------------------------------------------------

    @property
    def table(self) -> RoutingTable:
        """The routing table serving now (immutable: replaced whole when what serves changes)."""
        return self._table

    @property
    def stale(self) -> bool:
        """Whether the table is the last one read before the store became unreachable."""
        return self._stale_since is not None

    @property
    def stale_since(self) -> dt.datetime | None:
        return self._stale_since

    def _build(self) -> RoutingTable:
        assert self._store is not None
        with self._store.reading() as tx:
            return build_table(self.project, tx, built_at=dt.datetime.now(dt.UTC))

    def _start_refresher(self) -> None:
        self._thread = threading.Thread(
            target=self._refresh_loop, name="skillstage-loader-refresh", daemon=True
        )
        self._thread.start()

    def _refresh_loop(self) -> None:
        # The generation is polled every refresh interval on every store; on PostgreSQL a
        # LISTEN connection also wakes the loop the moment a change commits.
        listener = listen_for_routing(self.project.database_url)
        try:
            while not self._closed.is_set():
                if listener is not None:
                    try:
                        listener.wait(self.refresh_s)
                    except Exception:  # the connection broke: poll from now on
                        listener.close()
                        listener = None
                elif self._closed.wait(self.refresh_s):
                    break
                if not self._closed.is_set():
                    self.refresh()
        finally:
            if listener is not None:
                listener.close()

    def refresh(self) -> bool:
        """Check the store now; rebuild the table when what serves changed. True if rebuilt.
        A failure keeps the table there is (and `stats()` reports it); it never raises."""
        with self._refreshing:
            return self._refresh()

    def _refresh(self) -> bool:
        try:
            self._check_store_file()
            if self._store is None:
                self._store = Store.open(self.project.database_url)
                self._store_file = _file_identity(self._sqlite_path)
            with self._store.reading() as tx:
                now = generation(tx)
                rebuilt = now != self._table.generation
                if rebuilt:
                    table = build_table(self.project, tx, built_at=dt.datetime.now(dt.UTC))
        except Exception as exc:  # the store went away: keep serving what we had
            with self._lock:
                self._counts["refresh_errors"] += 1
                if self._stale_since is None:
                    self._stale_since = dt.datetime.now(dt.UTC)
                    LOG.warning(
                        "skillstage: the store cannot be read (%s); serving the last table", exc
                    )
                self._last_error = f"{type(exc).__name__}: {exc}"
            return False
        with self._lock:
            if self._stale_since is not None:
                LOG.warning("skillstage: the store can be read again")
            self._stale_since, self._last_error = None, None
            if rebuilt:
                # Swapped in and counted together: whoever sees the new table sees it counted.
                self._table = table
                self._counts["refreshes"] += 1
        return rebuilt

    def _check_store_file(self) -> None:
        """SQLite: a kept connection reads the file it opened even after it was moved or
        replaced, so the file at the store's path is checked: gone, the store is unreachable
        (opening it would create an empty one); another file, it is opened anew."""
        if self._sqlite_path is None:
            return
        now = _file_identity(self._sqlite_path)
        if now is None:
            raise StoreError(f"the store {self._sqlite_path} is gone", path=self._sqlite_path)
        if now != self._store_file and self._store is not None:
            self._store.close()
            self._store = None

    def close(self) -> None:
        """Stop the refresher and close the store."""
        self._closed.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _after_fork(self) -> None:
        # The child starts with every breaker closed: a breaker counts this process's
        # executions, a trial the parent let through is recorded in the parent, and a lock a
        # parent thread held at the fork would never be released here.
        self._breakers = self._breakers.fresh()
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._store = None  # opened again by the child's first refresh
        self._closed = threading.Event()
        self._start_refresher()

    # -- level 1 ------------------------------------------------------------------------------

    def catalog(
        self,
        stage: str | None = None,
        *,
        subject: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> list[CatalogEntry]:
        """Every skill serving in `stage` (default: the loader's): name, description, version and
        digest of the copy `subject` resolves to. Reads no file."""
        stage = stage or self.stage
        table = self._table
        entries = []
        for name in table.names(stage):
            route = table.route(name, stage)
            if route.disabled:
                continue  # the kill switch: the agent is not told the skill exists
            # What would serve, breakers included; a look only, which lets no trial through.
            resolution = self._breakers.serve(
                table.resolve(name, stage, subject, context), table, admit=False
            )
            entries.append(
                CatalogEntry(
                    name,
                    route.description,
                    resolution.version,
                    resolution.digest,
                    resolution.arm,
                )
            )
        with self._lock:
            for entry in entries:
                self._levels.setdefault((stage, entry.name), CATALOG)
        return entries

    # -- routing ------------------------------------------------------------------------------

    def resolve(
        self,
        name: str,
        subject: str | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        stage: str | None = None,
    ) -> Resolution:
        """The copy of `name` that serves this request (no I/O: the table in memory). While the
        breaker of the version routing chose is open, the previous good version: the stable arm
        for a candidate, else the route's fallback (arm "fallback")."""
        table = self._table
        return self._breakers.serve(
            table.resolve(name, stage or self.stage, subject, context), table
        )

    # -- level 2 and 3 ------------------------------------------------------------------------

    def load(self, resolution: Resolution) -> LoadedSkill:
        """The SKILL.md body and file list of the resolved copy, read once per digest."""
        if resolution.arm == DISABLED:
            raise SkillDisabledError(
                f"{resolution.name} is switched off in {resolution.stage}: nothing serves it",
                hint=f"`skillstage enable {resolution.name}` serves it again",
            )
        loaded = self._loaded.get(resolution.digest)
        if loaded is None:
            loaded = self._read_copy(resolution)
            with self._lock:
                self._counts["misses"] += 1
                self._loaded[resolution.digest] = loaded
        else:
            with self._lock:
                self._counts["hits"] += 1
        self._reached(resolution, BODY)
        return loaded

    def read(self, resolution: Resolution, relpath: str) -> bytes:
        """One file of the resolved copy (level 3), by its path relative to the skill."""
        loaded = self.load(resolution)
        clean = PurePosixPath(relpath)
        if clean.is_absolute() or ".." in clean.parts or str(clean) not in loaded.files:
            raise UsageError(
                f"{resolution.name} {resolution.version} has no file {relpath!r}",
                hint="its files: " + ", ".join(loaded.files[:20]),
            )
        key = (resolution.digest, str(clean))
        data = self._files.get(key)
        if data is None:
            data = self._read_file(loaded, str(clean))
            with self._lock:
                self._files[key] = data
        self._reached(resolution, FILES)
        return data

    def _read_file(self, loaded: LoadedSkill, relpath: str) -> bytes:
        return (loaded.path / relpath).read_bytes()

    def _reached(self, resolution: Resolution, level: str) -> None:
        key = (resolution.stage, resolution.name)
        current = self._levels.get(key)
        if current is None or _LEVELS[level] > _LEVELS[current]:
            with self._lock:
                self._levels[key] = level

    def _read_copy(self, resolution: Resolution) -> LoadedSkill:
        """The resolved copy, verified against its digest; the archive's copy of the same digest
        when the live one is missing or was changed (drift, reported once)."""
        from skillstage.skill.read import read_skill

        policy = self.project.config.validation
        places = [Path(resolution.path)]
        entry = archive_entry(self.project, resolution.name, resolution.version, resolution.digest)
        if entry != places[0]:
            places.append(entry)
        problems = []
        for place in places:
            try:
                skill = read_skill(place, policy)
            except SkillReadError as exc:
                problems.append(f"{place}: {exc}")
                continue
            if skill.digest != resolution.digest:
                problems.append(
                    f"{place} holds digest {skill.digest[:12]}, not {resolution.digest[:12]}"
                )
                continue
            if problems and self._names_live(resolution):
                self._report_drift(resolution, problems[0])
            return LoadedSkill(
                resolution.name,
                resolution.version,
                resolution.digest,
                skill.body,
                tuple(f.path for f in skill.files),
                place,
                skill.frontmatter_dict(),
            )
        raise SkillstageError(
            f"no intact copy of {resolution.name} {resolution.version} "
            f"({resolution.digest[:12]}) to serve: " + "; ".join(problems),
            hint="`skillstage doctor` reports the drift; `skillstage doctor --repair` restores it",
        )

    def _names_live(self, resolution: Resolution) -> bool:
        """Whether the store, read now, names `resolution`'s digest live at its path: only then
        is a live copy holding other content drift. A resolution made before a promotion (or by
        a table a refresh behind) names a version that merely stopped serving."""
        self.refresh()
        route = self._table.routes.get((resolution.stage, resolution.name))
        return (
            route is not None
            and route.stable.digest == resolution.digest
            and route.stable.path == resolution.path
        )

    def _report_drift(self, resolution: Resolution, problem: str) -> None:
        with self._lock:
            if resolution.digest in self._drift:
                return
            self._drift[resolution.digest] = problem
        LOG.warning(
            "skillstage: the live copy of %s %s is not the version the store names (%s); "
            "serving the archive's copy. `skillstage doctor` reports it.",
            resolution.name,
            resolution.version,
            problem,
        )

    # -- recording ----------------------------------------------------------------------------

    def record(self, resolution: Resolution, **metrics: Any) -> None:
        """Record one execution of the resolved copy, with its arm, rollout, digest and subject,
        so rollout analysis is per arm without the host doing anything more.

        It counts for the breaker of the copy's version: `exception=True`, or `false_negative`
        with `critical`, is a failure, anything else a success. The breaker counts what the host
        reports even when the record itself is refused (a field not valid)."""
        failed = bool(metrics.get("exception")) or (
            bool(metrics.get("false_negative")) and bool(metrics.get("critical"))
        )
        breaker, events = self._breakers.outcome(resolution, failed=failed)
        try:
            self._write_record(resolution, breaker, metrics)
        finally:
            if events:
                self._announce(events)

    def _write_record(
        self, resolution: Resolution, breaker: str | None, metrics: dict[str, Any]
    ) -> None:
        from skillstage.metrics.record import record_execution

        record_execution(
            self.project.metrics_inbox,
            **_record_fields(
                resolution, breaker, metrics, self.project.config.metrics.max_clock_skew
            ),
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Whether every record is where it goes: at once here (`record` writes the inbox
        itself); a remote loader waits up to `timeout` s for the server to take its queue."""
        return True

    def _announce(self, events: list[BreakerEvent]) -> None:
        """Write breaker events to the store; a failure is logged and counted, never raised into
        the host's call."""
        actor = f"loader@{socket.gethostname()}:{os.getpid()}"
        for event in events:
            log_breaker_event(event)
            try:
                store = self._store
                if store is None:  # after a fork, or a replaced SQLite file: reopened by refresh
                    self.refresh()
                    store = self._store
                if store is None:
                    raise StoreError("the store cannot be opened")
                with store.atomic() as tx:
                    append_breaker_event(tx, event, actor=actor)
            except Exception as exc:
                with self._lock:
                    self._counts["breaker_event_errors"] += 1
                LOG.warning(
                    "skillstage: the %s event of %s %s could not be written to the store (%s: %s)",
                    event.kind,
                    event.name,
                    event.version,
                    type(exc).__name__,
                    exc,
                )

    # -- what happened ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Cache hits and misses, the routing generation, whether the table is stale (the store
        unreachable), drift seen, the disclosure level each skill reached, and each breaker
        not closed or that ever opened (`breakers`)."""
        table = self._table
        breakers = self._breakers.report()
        with self._lock:
            return {
                **self._counts,
                "generation": table.generation,
                "table_built_at": table.built_at.isoformat(),
                "stale": self._stale_since is not None,
                "stale_since": self._stale_since.isoformat() if self._stale_since else None,
                "last_error": self._last_error,
                "cached_digests": len(self._loaded),
                "cached_files": len(self._files),
                "drift": dict(self._drift),
                "levels": {
                    f"{stage}/{name}": level for (stage, name), level in self._levels.items()
                },
                "breakers": breakers,
            }


def _record_fields(
    resolution: Resolution,
    breaker: str | None,
    metrics: dict[str, Any],
    max_clock_skew: dt.timedelta,
) -> dict[str, Any]:
    """The fields of the execution record of `resolution` (`record_execution`'s keywords): the
    host's metrics, tagged with the arm, stage, rollout, bucket and breaker state."""
    tags = dict(metrics.pop("tags", None) or {})
    tags.update(
        {
            "arm": resolution.arm,
            "stage": resolution.stage,
            **({"rollout_id": resolution.rollout_id} if resolution.rollout_id else {}),
            **(
                {"bucket": resolution.bucket if resolution.sticky else "random"}
                if resolution.bucket is not None
                else {}
            ),
            # "open": served because a breaker was open; "half-open": the trial.
            **({"breaker": breaker} if breaker else {}),
        }
    )
    metrics.setdefault("subject", resolution.subject)
    metrics.setdefault("max_clock_skew", max_clock_skew)
    return {
        "skill": resolution.name,
        "version": resolution.version,
        "digest": resolution.digest,
        "tags": tags,
        **metrics,
    }


def append_breaker_event(tx: Transaction, event: BreakerEvent, *, actor: str) -> None:
    """A breaker's opening or closing, as the store's event (`history` shows it)."""
    tx.append_event(
        event.kind,
        name=event.name,
        version=event.version,
        digest=event.digest,
        from_stage=event.stage,
        actor=actor,
        reason=event.reason,
        details=event.details,
        trigger_metric=event.trigger_metric,
        at=event.at,
    )


def _sqlite_file(url: str) -> Path | None:
    from skillstage.store.db import parse_url

    parsed = parse_url(url)
    if parsed.backend != "sqlite" or parsed.database is None:
        return None
    return Path(parsed.database)


def _file_identity(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_dev, found.st_ino)


def _after_fork(reference: weakref.ReferenceType[Loader]) -> None:
    loader = reference()
    if loader is not None and not loader._closed.is_set():
        loader._after_fork()


__all__ = [
    "CatalogEntry",
    "LoadedSkill",
    "Loader",
    "Resolution",
    "SkillDisabledError",
    "UnknownSkillError",
]
