"""The store: skill versions, the stage each version is in, and the events that moved them.

`Store` is the handle a command opens; `Transaction` is the same vocabulary bound to one open
transaction. Each `Store` method runs in a transaction of its own; to make several of them one
change, use `with store.atomic() as tx:` and call them on `tx`: everything inside commits together
or not at all.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from sqlalchemy import Connection, Engine, Insert, Row, Table, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL

from skillstage.errors import ConflictError, LockError, StoreError
from skillstage.store import tables as t
from skillstage.store.engine import (
    SQLITE_BEGIN_OPTION,
    create_store_engine,
    display_url,
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


def _version_record(row: Row[Any], name: str, *, is_new: bool) -> VersionRecord:
    return VersionRecord(
        skill_id=row.skill_id,
        version_id=row.id,
        name=name,
        version=row.version,
        digest=row.digest,
        created_at=row.created_at,
        is_new=is_new,
    )


class Transaction:
    """The store's operations on one open transaction (from `Store.atomic()`)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def connection(self) -> Connection:
        """The SQLAlchemy connection, for other modules of `skillstage.store` only."""
        return self._connection

    @contextmanager
    def atomic(self) -> Iterator[Transaction]:
        """A savepoint: the block's changes are undone alone if it raises."""
        with self._connection.begin_nested():
            yield self

    # -- helpers --------------------------------------------------------------------------------

    def _insert(self, table: Table) -> Any:
        # The dialect's own INSERT, for ON CONFLICT DO NOTHING (same syntax on both).
        if self._connection.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def _insert_once(self, statement: Insert, conflict: list[str]) -> int | None:
        """Insert unless a concurrent writer got there first; the new id, or None."""
        query = statement.on_conflict_do_nothing(index_elements=conflict)  # type: ignore[attr-defined]
        new_id: int | None = self._connection.execute(query).scalar_one_or_none()
        return new_id

    def _skill_id(self, name: str) -> int | None:
        found: int | None = self._connection.execute(
            select(t.skill.c.id).where(t.skill.c.name == name)
        ).scalar_one_or_none()
        return found

    def _ensure_skill(self, name: str, now: dt.datetime) -> int:
        skill_id = self._skill_id(name)
        if skill_id is None:
            statement = (
                self._insert(t.skill).values(name=name, created_at=now).returning(t.skill.c.id)
            )
            skill_id = self._insert_once(statement, ["name"]) or self._skill_id(name)
        assert skill_id is not None
        return skill_id

    def _lock_skill(self, skill_id: int) -> None:
        # PostgreSQL: concurrent stage moves of one skill queue on its row. SQLite needs nothing,
        # as a write transaction already holds the database's write lock (BEGIN IMMEDIATE).
        self._connection.execute(
            select(t.skill.c.id).where(t.skill.c.id == skill_id).with_for_update()
        )

    def _version_row(self, skill_id: int, version: str) -> Row[Any] | None:
        return self._connection.execute(
            select(t.skill_version).where(
                t.skill_version.c.skill_id == skill_id, t.skill_version.c.version == version
            )
        ).one_or_none()

    # -- versions -------------------------------------------------------------------------------

    def find_version(self, name: str, version: str) -> VersionRecord | None:
        """The registered version `version` of skill `name`, or None."""
        skill_id = self._skill_id(name)
        row = self._version_row(skill_id, version) if skill_id is not None else None
        return _version_record(row, name, is_new=False) if row is not None else None

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
            statement = (
                self._insert(t.skill_version)
                .values(
                    skill_id=skill_id,
                    version=version,
                    digest=digest,
                    path=path,
                    frontmatter=dict(frontmatter),
                    created_at=now,
                )
                .returning(t.skill_version.c.id)
            )
            is_new = self._insert_once(statement, ["skill_id", "version"]) is not None
            row = self._version_row(skill_id, version)
            assert row is not None
        if row.digest != digest:
            raise ConflictError(
                f"{name} {version} is already registered with digest {row.digest[:12]}, "
                f"but this copy has digest {digest[:12]}: the same version with other content",
                path=path,
                hint="a version's content never changes; bump the version in SKILL.md's "
                "frontmatter for the changed content",
                code="VERSION_DIGEST_CONFLICT",
            )
        return _version_record(row, name, is_new=is_new)

    # -- stages ---------------------------------------------------------------------------------

    def enter_stage(
        self, version_id: int, stage: str, path: str, *, at: dt.datetime | None = None
    ) -> Assignment:
        """Put a version in a stage: the skill's current version there (if any) leaves it at the
        same instant."""
        now = _utc(at)
        row = self._connection.execute(
            select(t.skill_version.c.skill_id, t.skill_version.c.version, t.skill_version.c.digest)
            .add_columns(t.skill.c.name)
            .join(t.skill, t.skill.c.id == t.skill_version.c.skill_id)
            .where(t.skill_version.c.id == version_id)
        ).one_or_none()
        if row is None:
            raise StoreError(f"no skill version with id {version_id} in the store")
        self._lock_skill(row.skill_id)
        a = t.stage_assignment
        self._connection.execute(
            update(a)
            .where(a.c.skill_id == row.skill_id, a.c.stage == stage, a.c.left_at.is_(None))
            .values(left_at=now)
        )
        self._connection.execute(
            a.insert().values(
                skill_id=row.skill_id, version_id=version_id, stage=stage, path=path, entered_at=now
            )
        )
        return Assignment(
            name=row.name,
            stage=stage,
            version=row.version,
            digest=row.digest,
            path=path,
            entered_at=now,
            version_id=version_id,
            skill_id=row.skill_id,
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
        a = t.stage_assignment
        self._connection.execute(
            update(a)
            .where(a.c.skill_id == current[0].skill_id, a.c.stage == stage, a.c.left_at.is_(None))
            .values(left_at=now)
        )
        return current[0]

    def current_assignments(
        self, stage: str | None = None, name: str | None = None
    ) -> list[Assignment]:
        """The versions now in each stage (optionally one stage, one skill), oldest first."""
        a, s, v = t.stage_assignment, t.skill, t.skill_version
        query = (
            select(
                s.c.name,
                a.c.stage,
                v.c.version,
                v.c.digest,
                a.c.path,
                a.c.entered_at,
                a.c.version_id,
                a.c.skill_id,
            )
            .join(s, s.c.id == a.c.skill_id)
            .join(v, v.c.id == a.c.version_id)
            .where(a.c.left_at.is_(None))
            .order_by(a.c.entered_at, s.c.name, a.c.stage)
        )
        if stage is not None:
            query = query.where(a.c.stage == stage)
        if name is not None:
            query = query.where(s.c.name == name)
        return [Assignment(**row._asdict()) for row in self._connection.execute(query)]

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
        journal_id: int = self._connection.execute(
            t.journal.insert()
            .values(
                skill_id=skill_id,
                operation=operation,
                state="open",
                details=dict(details),
                created_at=now,
            )
            .returning(t.journal.c.id)
        ).scalar_one()
        return journal_id

    def close_journal(
        self, journal_id: int, *, outcome: str, at: dt.datetime | None = None
    ) -> bool:
        """Close an open entry with its outcome (e.g. committed, rolled_back). False when it was
        not open (another process closed it first)."""
        row = self._connection.execute(
            select(t.journal.c.details).where(
                t.journal.c.id == journal_id, t.journal.c.state == "open"
            )
        ).one_or_none()
        if row is None:
            return False
        result = self._connection.execute(
            update(t.journal)
            .where(t.journal.c.id == journal_id, t.journal.c.state == "open")
            .values(state="closed", closed_at=_utc(at), details={**row.details, "outcome": outcome})
        )
        return bool(result.rowcount)

    def open_journals(self, name: str | None = None) -> list[JournalEntry]:
        """Entries whose change may be half done, oldest first."""
        j, s = t.journal, t.skill
        query = (
            select(j.c.id, s.c.name, j.c.operation, j.c.details, j.c.created_at)
            .join(s, s.c.id == j.c.skill_id)
            .where(j.c.state == "open")
            .order_by(j.c.id)
        )
        if name is not None:
            query = query.where(s.c.name == name)
        return [JournalEntry(**row._asdict()) for row in self._connection.execute(query)]

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
            if row is not None and digest in (None, row.digest):
                version_id = row.id
                digest = row.digest
        event_id: int = self._connection.execute(
            t.event.insert()
            .values(
                kind=kind,
                skill_id=skill_id,
                version_id=version_id,
                version=version,
                digest=digest,
                from_stage=from_stage,
                to_stage=to_stage,
                actor=actor,
                reason=reason,
                approver=approver,
                approval_ticket=approval_ticket,
                trigger_metric=trigger_metric,
                success=success,
                path=path,
                details=dict(details) if details is not None else None,
                at=now,
            )
            .returning(t.event.c.id)
        ).scalar_one()
        return event_id

    def events(
        self, name: str | None = None, limit: int = 50, *, kind: str | None = None
    ) -> list[Event]:
        """The latest events, newest first (optionally of one skill, of one kind)."""
        e, s = t.event, t.skill
        query = (
            select(e, s.c.name)
            .join(s, s.c.id == e.c.skill_id)
            .order_by(e.c.at.desc(), e.c.id.desc())
            .limit(limit)
        )
        if name is not None:
            query = query.where(s.c.name == name)
        if kind is not None:
            query = query.where(e.c.kind == kind)
        return [
            Event(
                id=row.id,
                kind=row.kind,
                name=row.name,
                version=row.version,
                digest=row.digest,
                from_stage=row.from_stage,
                to_stage=row.to_stage,
                actor=row.actor,
                reason=row.reason,
                success=bool(row.success),
                path=row.path,
                details=row.details,
                approver=row.approver,
                approval_ticket=row.approval_ticket,
                trigger_metric=row.trigger_metric,
                at=row.at,
            )
            for row in self._connection.execute(query)
        ]


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _as_store_method(
    method: Callable[Concatenate[Transaction, _P], _R], *, write: bool
) -> Callable[Concatenate[Store, _P], _R]:
    """A `Transaction` method as a `Store` method that runs in a transaction of its own."""

    @functools.wraps(method)
    def run(store: Store, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with store.atomic() if write else store._reading() as tx:
            return method(tx, *args, **kwargs)

    return run


class Store:
    """The state store. Open with `Store.open(url)`, preferably as a context manager."""

    def __init__(self, engine: Engine, url: URL) -> None:
        self._engine = engine
        self._url = url
        # The transaction this thread has open on this store, so that a store method called
        # inside `atomic()` joins it instead of waiting on its own write lock.
        self._local = threading.local()

    @classmethod
    def open(cls, url: str) -> Store:
        """Open the store at `url` (SQLite or PostgreSQL).

        A database with no tables is given the schema. A store at an older or newer schema is
        refused with `SchemaOutdatedError`; an unreachable or unusable database with `StoreError`.
        """
        parsed = parse_url(url)
        engine = create_store_engine(url)
        try:
            with translate_errors(parsed, "opening the store", connecting=True):
                connection = engine.connect()
            with translate_errors(parsed, "reading the schema revision"), connection:
                state = read_schema_state(connection)
            if state.is_empty:
                migrate(engine, parsed)
            else:
                require_current(state, parsed)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, parsed)

    @property
    def url(self) -> str:
        """Where the store is, for messages: a SQLite path or a URL without its password."""
        return display_url(self._url)

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._engine.dialect.name

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @contextmanager
    def _connection(self, *, write: bool) -> Iterator[Transaction]:
        with translate_errors(self._url, "opening a transaction", connecting=True):
            connection = self._engine.connect()
        try:
            if write:
                connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            doing = "writing" if write else "reading"
            with translate_errors(self._url, doing), connection.begin():
                tx = Transaction(connection)
                self._local.transaction = tx
                try:
                    yield tx
                finally:
                    self._local.transaction = None
        finally:
            connection.close()

    @contextmanager
    def skill_lock(self, name: str, *, timeout: float) -> Iterator[None]:
        """PostgreSQL: hold an advisory lock on skill `name` for the block, on a connection of its
        own (the block may run many transactions); the server frees it if this process dies.
        Raises `LockError` when another session holds it for longer than `timeout` seconds."""
        digest = hashlib.sha256(b"skillstage:skill:" + name.encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        with translate_errors(self._url, "taking a lock", connecting=True):
            connection = self._engine.connect()
        try:
            deadline = time.monotonic() + timeout
            while not connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": key}
            ).scalar():
                connection.commit()
                if time.monotonic() > deadline:
                    raise LockError.busy(name, timeout)
                time.sleep(0.05)
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
        finally:
            connection.close()

    @contextmanager
    def atomic(self) -> Iterator[Transaction]:
        """One transaction: everything done through the yielded `Transaction` commits when the
        block ends, or is rolled back if it raises. Nested, it is a savepoint of the outer one."""
        outer: Transaction | None = getattr(self._local, "transaction", None)
        if outer is not None:
            with outer.atomic() as tx:
                yield tx
            return
        with self._connection(write=True) as tx:
            yield tx

    @contextmanager
    def _reading(self) -> Iterator[Transaction]:
        outer: Transaction | None = getattr(self._local, "transaction", None)
        if outer is not None:
            yield outer
            return
        with self._connection(write=False) as tx:
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
