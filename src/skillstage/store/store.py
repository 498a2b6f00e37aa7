"""The store: skill versions, the stage each version is in, and the events that moved them.

`Store` is the handle a command opens; `Transaction` is the same vocabulary bound to one open
transaction. Each `Store` method runs in a transaction of its own; to make several of them one
change, use `with store.atomic() as tx:` and call them on `tx`: everything inside commits together
or not at all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Protocol, Self, TypeVar

from skillstage.errors import ConflictError, LockError, StoreError
from skillstage.store.db import (
    Dialect,
    StoreURL,
    connect,
    connection_is_usable,
    dialect_of,
    parse_url,
    translate_errors,
)
from skillstage.store.schema import migrate, read_schema_state, require_current


@dataclass(frozen=True)
class VersionRecord:
    """A registered (name, version, digest) of a skill. `is_new` says this call registered it."""

    skill_id: int
    version_id: int
    name: str
    version: str
    digest: str
    created_at: dt.datetime
    is_new: bool

    @property
    def short_digest(self) -> str:
        return self.digest[:12]


@dataclass(frozen=True)
class Assignment:
    """A skill version that is currently in a stage, since `entered_at` (aware, UTC)."""

    name: str
    stage: str
    version: str
    digest: str
    path: str
    entered_at: dt.datetime
    version_id: int
    skill_id: int


@dataclass(frozen=True)
class JournalEntry:
    """An intended filesystem change that has not been closed yet."""

    id: int
    name: str
    operation: str
    details: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True)
class Event:
    """One entry of the append-only event log: a registration, promotion, rollback, approval …"""

    id: int
    kind: str
    name: str
    version: str | None
    digest: str | None
    from_stage: str | None
    to_stage: str | None
    actor: str
    reason: str | None
    success: bool
    path: str | None
    details: dict[str, Any] | None
    approver: str | None
    approval_ticket: str | None
    trigger_metric: str | None
    at: dt.datetime


def _utc(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return dt.datetime.now(dt.UTC)
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r}: pass an aware datetime (e.g. in UTC)")
    return at.astimezone(dt.UTC)


def _refuse_other_content(record: VersionRecord, digest: str, path: str) -> None:
    """A version maps to one digest forever."""
    if record.digest != digest:
        raise ConflictError(
            f"{record.name} {record.version} is already registered with digest "
            f"{record.short_digest}, but this copy has digest {digest[:12]}: the same version "
            "with other content",
            path=path,
            hint="a version's content never changes; bump the version in SKILL.md's "
            "frontmatter for the changed content",
            code="VERSION_DIGEST_CONFLICT",
        )


def _version_record(
    row: Sequence[Any], name: str, dialect: Dialect, *, is_new: bool
) -> VersionRecord:
    version_id, skill_id, version, digest, created_at = row
    created = dialect.read_time(created_at)
    assert created is not None
    return VersionRecord(
        skill_id=skill_id,
        version_id=version_id,
        name=name,
        version=version,
        digest=digest,
        created_at=created,
        is_new=is_new,
    )


_VERSION_COLUMNS = "id, skill_id, version, digest, created_at"

# PostgreSQL: the channel loaders may LISTEN on; every change to what serves NOTIFYs it.
ROUTING_CHANNEL = "skillstage_routing"

_ASSIGNMENT_QUERY = """
    SELECT s.name, a.stage, v.version, v.digest, a.path, a.entered_at, a.version_id, a.skill_id
    FROM stage_assignment a
    JOIN skill s ON s.id = a.skill_id
    JOIN skill_version v ON v.id = a.version_id
    WHERE a.left_at IS NULL"""

_EVENT_QUERY = """
    SELECT e.id, e.kind, s.name, e.version, e.digest, e.from_stage, e.to_stage, e.actor,
           e.reason, e.success, e.path, e.details, e.approver, e.approval_ticket,
           e.trigger_metric, e.at
    FROM event e JOIN skill s ON s.id = e.skill_id"""


class Transaction:
    """The store's operations on one open transaction (from `Store.atomic()`)."""

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self._connection = connection
        self.dialect = dialect
        self._savepoints = itertools.count(1)

    # -- SQL, for the modules of `skillstage.store` (and tests) ----------------------------------

    @property
    def connection(self) -> Any:
        """The DB-API connection (sqlite3 or psycopg), for `skillstage.store` and tests only."""
        return self._connection

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        """Run one statement written with `:name` parameters; the number of rows it changed."""
        cursor = self._connection.execute(self.dialect.sql(sql), params or {})
        count: int = cursor.rowcount
        return count

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement and return all its rows as tuples."""
        rows: list[tuple[Any, ...]] = self._connection.execute(
            self.dialect.sql(sql), params or {}
        ).fetchall()
        return rows

    def one(self, sql: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        """The single row a statement returns, or None when it returns none."""
        rows = self.query(sql, params)
        if len(rows) > 1:
            raise StoreError(f"expected at most one row, got {len(rows)}: {sql.strip()[:80]}")
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the single row a statement returns, or None."""
        row = self.one(sql, params)
        return row[0] if row is not None else None

    def insert_returning_id(self, sql: str, params: Mapping[str, Any]) -> int | None:
        """Run an `INSERT … RETURNING id` (perhaps `ON CONFLICT DO NOTHING`): the new id, or None
        when nothing was inserted."""
        found: int | None = self.scalar(sql + " RETURNING id", params)
        return found

    @contextmanager
    def atomic(self) -> Iterator[Transaction]:
        """A savepoint: the block's changes are undone alone if it raises."""
        name = f"skillstage_{next(self._savepoints)}"
        self._connection.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            self._connection.execute(f"ROLLBACK TO SAVEPOINT {name}")
            self._connection.execute(f"RELEASE SAVEPOINT {name}")
            raise
        self._connection.execute(f"RELEASE SAVEPOINT {name}")

    # -- helpers --------------------------------------------------------------------------------

    def _skill_id(self, name: str) -> int | None:
        found: int | None = self.scalar("SELECT id FROM skill WHERE name = :name", {"name": name})
        return found

    def _ensure_skill(self, name: str, now: dt.datetime) -> int:
        skill_id = self._skill_id(name)
        if skill_id is None:
            # Unless a concurrent writer got there first.
            skill_id = self.insert_returning_id(
                "INSERT INTO skill (name, created_at) VALUES (:name, :now)"
                " ON CONFLICT (name) DO NOTHING",
                {"name": name, "now": self.dialect.time(now)},
            ) or self._skill_id(name)
        assert skill_id is not None
        return skill_id

    def ensure_skill(self, name: str, at: dt.datetime | None = None) -> int:
        """The id of skill `name`, registering the name when it is new."""
        return self._ensure_skill(name, _utc(at))

    def skill_id(self, name: str) -> int | None:
        """The id of skill `name`, or None when the store has never seen it."""
        return self._skill_id(name)

    def _lock_skill(self, skill_id: int) -> None:
        # PostgreSQL: concurrent stage moves of one skill queue on its row. SQLite needs nothing,
        # as a write transaction already holds the database's write lock (BEGIN IMMEDIATE).
        if self.dialect.for_update:
            self.query(
                f"SELECT id FROM skill WHERE id = :id{self.dialect.for_update}", {"id": skill_id}
            )

    def _version_row(self, skill_id: int, version: str) -> tuple[Any, ...] | None:
        return self.one(
            f"SELECT {_VERSION_COLUMNS} FROM skill_version"
            " WHERE skill_id = :skill_id AND version = :version",
            {"skill_id": skill_id, "version": version},
        )

    # -- versions -------------------------------------------------------------------------------

    def find_version(self, name: str, version: str) -> VersionRecord | None:
        """The registered version `version` of skill `name`, or None."""
        row = self.one(
            f"SELECT {', '.join('v.' + c for c in _VERSION_COLUMNS.split(', '))}"
            " FROM skill_version v JOIN skill s ON s.id = v.skill_id"
            " WHERE s.name = :name AND v.version = :version",
            {"name": name, "version": version},
        )
        return _version_record(row, name, self.dialect, is_new=False) if row else None

    def check_registration(self, skill: ReadSkill) -> None:
        """What `register` would refuse, without registering: another digest under the version."""
        record = self.find_version(skill.name, skill.version)
        if record is not None:
            _refuse_other_content(record, skill.digest, str(skill.path))

    def register(self, skill: ReadSkill, *, at: dt.datetime | None = None) -> VersionRecord:
        """`ensure_version` for a skill read from disk, where it was read."""
        return self.ensure_version(
            skill.name,
            skill.version,
            skill.digest,
            path=str(skill.path),
            frontmatter=skill.frontmatter_dict(),
            at=at,
        )

    def ensure_version(
        self,
        name: str,
        version: str,
        digest: str,
        *,
        path: str,
        frontmatter: Mapping[str, Any],
        at: dt.datetime | None = None,
    ) -> VersionRecord:
        """Register (name, version) with its digest, or return the registration already there.

        A version maps to one digest forever: the same version with other content raises
        `ConflictError` (code VERSION_DIGEST_CONFLICT).
        """
        now = _utc(at)
        skill_id = self._ensure_skill(name, now)
        row = self._version_row(skill_id, version)
        is_new = False
        if row is None:
            is_new = (
                self.insert_returning_id(
                    "INSERT INTO skill_version"
                    " (skill_id, version, digest, path, frontmatter, created_at)"
                    " VALUES (:skill_id, :version, :digest, :path, :frontmatter, :now)"
                    " ON CONFLICT (skill_id, version) DO NOTHING",
                    {
                        "skill_id": skill_id,
                        "version": version,
                        "digest": digest,
                        "path": path,
                        "frontmatter": self.dialect.json(dict(frontmatter)),
                        "now": self.dialect.time(now),
                    },
                )
                is not None
            )
            row = self._version_row(skill_id, version)
            assert row is not None
        record = _version_record(row, name, self.dialect, is_new=is_new)
        _refuse_other_content(record, digest, path)
        return record

    # -- stages ---------------------------------------------------------------------------------

    def enter_stage(
        self, version_id: int, stage: str, path: str, *, at: dt.datetime | None = None
    ) -> Assignment:
        """Put a version in a stage: the skill's current version there (if any) leaves it at the
        same instant."""
        now = _utc(at)
        row = self.one(
            "SELECT v.skill_id, v.version, v.digest, s.name FROM skill_version v"
            " JOIN skill s ON s.id = v.skill_id WHERE v.id = :id",
            {"id": version_id},
        )
        if row is None:
            raise StoreError(f"no skill version with id {version_id} in the store")
        skill_id, version, digest, name = row
        self._lock_skill(skill_id)
        stamp = self.dialect.time(now)
        self.execute(
            "UPDATE stage_assignment SET left_at = :now"
            " WHERE skill_id = :skill_id AND stage = :stage AND left_at IS NULL",
            {"now": stamp, "skill_id": skill_id, "stage": stage},
        )
        self.bump_routing(now)
        self.execute(
            "INSERT INTO stage_assignment (skill_id, version_id, stage, path, entered_at)"
            " VALUES (:skill_id, :version_id, :stage, :path, :now)",
            {
                "skill_id": skill_id,
                "version_id": version_id,
                "stage": stage,
                "path": path,
                "now": stamp,
            },
        )
        return Assignment(
            name=name,
            stage=stage,
            version=version,
            digest=digest,
            path=path,
            entered_at=now,
            version_id=version_id,
            skill_id=skill_id,
        )

    def leave_stage(
        self, name: str, stage: str, *, at: dt.datetime | None = None
    ) -> Assignment | None:
        """Take skill `name` out of `stage`; the assignment that ended, or None if it was not
        there."""
        now = _utc(at)
        current = self.current_assignments(stage=stage, name=name)
        if not current:
            return None
        self.execute(
            "UPDATE stage_assignment SET left_at = :now"
            " WHERE skill_id = :skill_id AND stage = :stage AND left_at IS NULL",
            {"now": self.dialect.time(now), "skill_id": current[0].skill_id, "stage": stage},
        )
        self.bump_routing(now)
        return current[0]

    def current_assignments(
        self, stage: str | None = None, name: str | None = None
    ) -> list[Assignment]:
        """The versions now in each stage (optionally one stage, one skill), oldest first."""
        sql = _ASSIGNMENT_QUERY
        if stage is not None:
            sql += " AND a.stage = :stage"
        if name is not None:
            sql += " AND s.name = :name"
        sql += " ORDER BY a.entered_at, s.name, a.stage"
        read_time = self.dialect.read_time
        return [
            Assignment(
                name=row[0],
                stage=row[1],
                version=row[2],
                digest=row[3],
                path=row[4],
                entered_at=read_time(row[5]),  # type: ignore[arg-type]
                version_id=row[6],
                skill_id=row[7],
            )
            for row in self.query(sql, {"stage": stage, "name": name})
        ]

    def bump_routing(self, at: dt.datetime) -> None:
        """What serves changed (a stage pointer moved, a rollout changed): loaders polling the
        routing generation rebuild their table. PostgreSQL also NOTIFYs them at commit."""
        self.execute(
            "UPDATE routing_generation SET generation = generation + 1, changed_at = :at"
            " WHERE id = 1",
            {"at": self.dialect.time(at)},
        )
        if self.dialect.name == "postgresql":
            self.execute(f"NOTIFY {ROUTING_CHANNEL}")

    # -- journal --------------------------------------------------------------------------------

    def open_journal(
        self,
        name: str,
        operation: str,
        details: Mapping[str, Any],
        *,
        at: dt.datetime | None = None,
    ) -> int:
        """Record the intent of a filesystem change before making it; returns the entry's id."""
        now = _utc(at)
        skill_id = self._ensure_skill(name, now)
        journal_id = self.insert_returning_id(
            "INSERT INTO journal (skill_id, operation, state, details, created_at)"
            " VALUES (:skill_id, :operation, 'open', :details, :now)",
            {
                "skill_id": skill_id,
                "operation": operation,
                "details": self.dialect.json(dict(details)),
                "now": self.dialect.time(now),
            },
        )
        assert journal_id is not None
        return journal_id

    def close_journal(
        self, journal_id: int, *, outcome: str, at: dt.datetime | None = None
    ) -> bool:
        """Close an open entry with its outcome (e.g. committed, rolled_back). False when it was
        not open (another process closed it first)."""
        details = self.scalar(
            "SELECT details FROM journal WHERE id = :id AND state = 'open'", {"id": journal_id}
        )
        if details is None:
            return False
        changed = self.execute(
            "UPDATE journal SET state = 'closed', closed_at = :now, details = :details"
            " WHERE id = :id AND state = 'open'",
            {
                "id": journal_id,
                "now": self.dialect.time(_utc(at)),
                "details": self.dialect.json(
                    {**self.dialect.read_json(details), "outcome": outcome}
                ),
            },
        )
        return bool(changed)

    def open_journals(self, name: str | None = None) -> list[JournalEntry]:
        """Entries whose change may be half done, oldest first."""
        sql = (
            "SELECT j.id, s.name, j.operation, j.details, j.created_at FROM journal j"
            " JOIN skill s ON s.id = j.skill_id WHERE j.state = 'open'"
        )
        if name is not None:
            sql += " AND s.name = :name"
        d = self.dialect
        return [
            JournalEntry(
                id=row[0],
                name=row[1],
                operation=row[2],
                details=d.read_json(row[3]),
                created_at=d.read_time(row[4]),  # type: ignore[arg-type]
            )
            for row in self.query(sql + " ORDER BY j.id", {"name": name})
        ]

    # -- events ---------------------------------------------------------------------------------

    def append_event(
        self,
        kind: str,
        *,
        name: str,
        version: str | None = None,
        digest: str | None = None,
        from_stage: str | None = None,
        to_stage: str | None = None,
        actor: str,
        reason: str | None = None,
        success: bool = True,
        path: str | None = None,
        details: Mapping[str, Any] | None = None,
        approver: str | None = None,
        approval_ticket: str | None = None,
        trigger_metric: str | None = None,
        at: dt.datetime | None = None,
    ) -> int:
        """Record what happened to a skill; returns the event's id.

        The event links to the registered version when `version` (and `digest`, if given)
        match one; a refused attempt on content that conflicts is recorded as it was seen.
        """
        now = _utc(at)
        skill_id = self._ensure_skill(name, now)
        version_id: int | None = None
        if version is not None:
            row = self._version_row(skill_id, version)
            if row is not None and digest in (None, row[3]):
                version_id = row[0]
                digest = row[3]
        event_id = self.insert_returning_id(
            "INSERT INTO event (kind, skill_id, version_id, version, digest, from_stage,"
            " to_stage, actor, reason, approver, approval_ticket, trigger_metric, success, path,"
            " details, at) VALUES (:kind, :skill_id, :version_id, :version, :digest,"
            " :from_stage, :to_stage, :actor, :reason, :approver, :approval_ticket,"
            " :trigger_metric, :success, :path, :details, :at)",
            {
                "kind": kind,
                "skill_id": skill_id,
                "version_id": version_id,
                "version": version,
                "digest": digest,
                "from_stage": from_stage,
                "to_stage": to_stage,
                "actor": actor,
                "reason": reason,
                "approver": approver,
                "approval_ticket": approval_ticket,
                "trigger_metric": trigger_metric,
                "success": success,
                "path": path,
                "details": self.dialect.json(dict(details) if details is not None else None),
                "at": self.dialect.time(now),
            },
        )
        assert event_id is not None
        return event_id

    def events(
        self,
        name: str | None = None,
        limit: int = 50,
        *,
        kind: str | None = None,
        event_id: int | None = None,
        where: str | None = None,
    ) -> list[Event]:
        """The latest events, newest first (optionally of one skill, of one kind, the one with
        `event_id`, or those matching `where`, SQL over `e`, the event, for the store's
        modules)."""
        sql = _EVENT_QUERY + " WHERE 1 = 1"
        if name is not None:
            sql += " AND s.name = :name"
        if kind is not None:
            sql += " AND e.kind = :kind"
        if event_id is not None:
            sql += " AND e.id = :event_id"
        if where is not None:
            sql += f" AND ({where})"
        sql += " ORDER BY e.at DESC, e.id DESC LIMIT :limit"
        d = self.dialect
        params = {"name": name, "kind": kind, "event_id": event_id, "limit": limit}
        return [
            Event(
                id=row[0],
                kind=row[1],
                name=row[2],
                version=row[3],
                digest=row[4],
                from_stage=row[5],
                to_stage=row[6],
                actor=row[7],
                reason=row[8],
                success=bool(row[9]),
                path=row[10],
                details=d.read_json(row[11]),
                approver=row[12],
                approval_ticket=row[13],
                trigger_metric=row[14],
                at=d.read_time(row[15]),  # type: ignore[arg-type]
            )
            for row in self.query(sql, params)
        ]


class ReadSkill(Protocol):
    """A skill version as read from its directory (`skillstage.skill.SkillVersion`)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def digest(self) -> str: ...
    @property
    def path(self) -> os.PathLike[str]: ...
    def frontmatter_dict(self) -> dict[str, Any]: ...


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _as_store_method(
    method: Callable[Concatenate[Transaction, _P], _R], *, write: bool
) -> Callable[Concatenate[Store, _P], _R]:
    """A `Transaction` method as a `Store` method that runs in a transaction of its own."""

    @functools.wraps(method)
    def run(store: Store, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with store.atomic() if write else store.reading() as tx:
            return method(tx, *args, **kwargs)

    return run


class Store:
    """The state store. Open with `Store.open(url)`, preferably as a context manager.

    Each thread gets a connection of its own, kept open for the store's life (an in-memory
    SQLite store has one connection, shared)."""

    def __init__(self, url: StoreURL, connection: Any) -> None:
        self._url = url
        self._dialect = dialect_of(url)
        self._shared = connection if url.backend == "sqlite" and url.database is None else None
        self._connections = [connection]
        self._guard = threading.Lock()
        self._local = threading.local()
        self._local.connection = (os.getpid(), connection)
        # The transaction this thread has open on this store, so that a store method called
        # inside `atomic()` joins it instead of waiting on its own write lock.
        self._local.transaction = None

    @classmethod
    def open(cls, url: str) -> Store:
        """Open the store at `url` (SQLite or PostgreSQL).

        A database with no tables is given the schema. A store at an older or newer schema is
        refused with `SchemaOutdatedError`; an unreachable or unusable database with `StoreError`.
        """
        parsed = parse_url(url)
        with translate_errors(parsed, "opening the store", connecting=True):
            connection = connect(parsed)
        try:
            with translate_errors(parsed, "reading the schema revision"):
                state = read_schema_state(
                    lambda sql: connection.execute(sql).fetchall(), parsed.backend
                )
            if state.is_empty:
                migrate(
                    parsed, sqlite_connection=connection if parsed.backend == "sqlite" else None
                )
            else:
                require_current(state, parsed)
        except BaseException:
            connection.close()
            raise
        return cls(parsed, connection)

    @property
    def url(self) -> str:
        """Where the store is, for messages: a SQLite path or a URL without its password."""
        return self._url.display

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._dialect.name

    @property
    def single_connection(self) -> bool:
        """Whether every thread shares one connection (an in-memory SQLite store), so that only
        one of them may use the store at a time."""
        return self._shared is not None

    def close(self) -> None:
        """Close every connection this store opened."""
        with self._guard:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def release_connection(self) -> None:
        """Close the calling thread's connection (a worker thread done with the store), so a
        long-lived store does not collect one per thread that ever used it."""
        if self._shared is not None:
            return
        pid, connection = getattr(self._local, "connection", (None, None))
        self._local.connection = (None, None)
        if connection is None or pid != os.getpid():
            return
        with self._guard:
            if connection in self._connections:
                self._connections.remove(connection)
        connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def _checkout(self) -> Any:
        """This thread's connection, opened on first use (again after a fork or a break)."""
        if self._shared is not None:
            return self._shared
        pid, connection = getattr(self._local, "connection", (None, None))
        if pid == os.getpid() and connection is not None and connection_is_usable(connection):
            return connection
        with translate_errors(self._url, "opening a transaction", connecting=True):
            connection = connect(self._url)
        with self._guard:
            self._connections.append(connection)
        self._local.connection = (os.getpid(), connection)
        return connection

    def _begin(self, *, write: bool) -> Any:
        connection = self._checkout()
        # Write transactions on SQLite take the write lock up front (BEGIN IMMEDIATE), so two
        # writers queue on the busy timeout instead of one failing mid-transaction on a lock
        # upgrade.
        begin = "BEGIN IMMEDIATE" if write and self._dialect.name == "sqlite" else "BEGIN"
        try:
            connection.execute(begin)
        except Exception:
            if connection_is_usable(connection):
                raise
            # A kept PostgreSQL connection the server dropped (a restart): reconnect once.
            self._local.connection = (None, None)
            connection = self._checkout()
            connection.execute(begin)
        return connection

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Transaction]:
        doing = "writing" if write else "reading"
        with translate_errors(self._url, doing):
            connection = self._begin(write=write)
            tx = Transaction(connection, self._dialect)
            self._local.transaction = tx
            try:
                yield tx
            except BaseException:
                with contextlib.suppress(Exception):
                    connection.execute("ROLLBACK")
                raise
            else:
                try:
                    connection.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(Exception):
                        connection.execute("ROLLBACK")
                    raise
            finally:
                self._local.transaction = None

    @contextmanager
    def skill_lock(self, name: str, *, timeout: float) -> Iterator[None]:
        """PostgreSQL: hold an advisory lock on skill `name` for the block, on a connection of its
        own (the block may run many transactions); the server frees it if this process dies.
        Raises `LockError` when another session holds it for longer than `timeout` seconds."""
        digest = hashlib.sha256(b"skillstage:skill:" + name.encode()).digest()
        key = {"key": int.from_bytes(digest[:8], "big", signed=True)}
        with translate_errors(self._url, "taking a lock", connecting=True):
            connection = connect(self._url)
        try:
            with translate_errors(self._url, "taking a lock"):
                deadline = time.monotonic() + timeout
                locked = self._dialect.sql("SELECT pg_try_advisory_lock(:key)")
                while not connection.execute(locked, key).fetchone()[0]:
                    if time.monotonic() > deadline:
                        raise LockError.busy(name, timeout)
                    time.sleep(0.05)
            try:
                yield
            finally:
                with translate_errors(self._url, "releasing a lock"):
                    connection.execute(self._dialect.sql("SELECT pg_advisory_unlock(:key)"), key)
        finally:
            connection.close()

    @contextmanager
    def bulk_writes(self) -> Iterator[None]:
        """For a long run of write transactions on this thread (ingestion): commits wait for no
        disk flush, and SQLite keeps a larger page cache. The database stays consistent; a power
        cut may lose the last commits, which ingestion's checkpoints make it read again."""
        connection = self._checkout()
        if self._dialect.name == "sqlite":
            settings = ("synchronous", "cache_size")
            saved = [connection.execute(f"PRAGMA {name}").fetchone()[0] for name in settings]
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA cache_size = -65536")  # 64 MiB
            try:
                yield
            finally:
                for name, value in zip(settings, saved, strict=True):
                    connection.execute(f"PRAGMA {name} = {int(value)}")
            return
        connection.execute("SET synchronous_commit = off")
        try:
            yield
        finally:
            if connection_is_usable(connection):
                connection.execute("SET synchronous_commit = on")

    @contextmanager
    def atomic(self) -> Iterator[Transaction]:
        """One transaction: everything done through the yielded `Transaction` commits when the
        block ends, or is rolled back if it raises. Nested, it is a savepoint of the outer one."""
        outer: Transaction | None = getattr(self._local, "transaction", None)
        if outer is not None:
            with outer.atomic() as tx:
                yield tx
            return
        with self._transaction(write=True) as tx:
            yield tx

    @contextmanager
    def reading(self) -> Iterator[Transaction]:
        """A read-only transaction (or the one this thread has open)."""
        outer: Transaction | None = getattr(self._local, "transaction", None)
        if outer is not None:
            yield outer
            return
        with self._transaction(write=False) as tx:
            yield tx

    # The vocabulary of `Transaction`, each call in a transaction of its own (or joining the one
    # this thread has open in `atomic()`).
    find_version = _as_store_method(Transaction.find_version, write=False)
    current_assignments = _as_store_method(Transaction.current_assignments, write=False)
    events = _as_store_method(Transaction.events, write=False)
    ensure_version = _as_store_method(Transaction.ensure_version, write=True)
    enter_stage = _as_store_method(Transaction.enter_stage, write=True)
    leave_stage = _as_store_method(Transaction.leave_stage, write=True)
    append_event = _as_store_method(Transaction.append_event, write=True)
    open_journal = _as_store_method(Transaction.open_journal, write=True)
    close_journal = _as_store_method(Transaction.close_journal, write=True)
    open_journals = _as_store_method(Transaction.open_journals, write=False)
