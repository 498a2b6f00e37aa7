"""The outbox: side effects of a committed change (deploy and re-index hooks, notifications) that
must happen after the commit, and must not be lost when they fail.

A promotion enqueues its side effects inside its own transaction, so they exist exactly when the
promotion does; a deliverer claims them after the commit, runs them and records the outcome.

An item's life: `pending` → (claimed) `delivering` → `delivered`; a failure sends it back to
`pending` (due again at `next_attempt_at`), or to `failed` once it has used up its automatic
attempts. `failed` items wait for `skillstage outbox --retry`. While an item is `delivering`,
`next_attempt_at` is the end of the deliverer's lease: a deliverer that crashed leaves the item
claimed, and it becomes due again once the lease has run out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, Row, and_, or_, select, update

from skillstage.store import tables as t
from skillstage.store.store import Store, Transaction

PENDING: Final = "pending"
DELIVERING: Final = "delivering"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
STATUSES: Final = (PENDING, DELIVERING, FAILED, DELIVERED)

# How long a claim holds before another deliverer may take the item over (its deliverer is
# presumed dead). Deliverers that may run longer pass a longer lease.
DEFAULT_LEASE = dt.timedelta(minutes=10)

# Where a delivered item's output (a deploy hook's deployment id) is kept, until the outbox table
# has a column for it. Leading underscore: bookkeeping, not part of what was enqueued.
_OUTPUT_KEY: Final = "_output"


@dataclass(frozen=True)
class OutboxItem:
    """One side effect and where it stands. Times are aware (UTC)."""

    id: int
    kind: str  # a hook name (deploy, post_promote, post_rollback, reindex) or notify
    payload: dict[str, Any]
    status: str  # pending, delivering, delivered, failed
    attempts: int  # how many times it has been run, over all deliveries
    last_error: str | None
    next_attempt_at: dt.datetime | None  # when due (pending) or when the lease ends (delivering)
    created_at: dt.datetime
    output: str | None  # what a successful run returned, e.g. the deployment id


def _utc(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return dt.datetime.now(dt.UTC)
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r}: pass an aware datetime (e.g. in UTC)")
    return at.astimezone(dt.UTC)


def _item(row: Row[Any]) -> OutboxItem:
    payload = dict(row.payload)
    output = payload.pop(_OUTPUT_KEY, None)
    return OutboxItem(
        id=row.id,
        kind=row.kind,
        payload=payload,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        output=output if isinstance(output, str) else None,
    )


def enqueue(
    tx: Transaction, kind: str, payload: Mapping[str, Any], *, at: dt.datetime | None = None
) -> int:
    """Add a side effect to the outbox inside the caller's transaction; returns its id.

    It is due at once, but only exists if the caller's transaction commits.
    """
    now = _utc(at)
    item_id: int = tx.connection.execute(
        t.outbox.insert()
        .values(
            kind=kind,
            payload=dict(payload),
            status=PENDING,
            attempts=0,
            last_error=None,
            next_attempt_at=now,
            created_at=now,
        )
        .returning(t.outbox.c.id)
    ).scalar_one()
    return item_id


def _claimable(
    now: dt.datetime, ids: Sequence[int] | None, after: int | None
) -> ColumnElement[bool]:
    o = t.outbox.c
    lease_over = and_(o.status == DELIVERING, o.next_attempt_at <= now)
    if ids is None:
        condition = or_(and_(o.status == PENDING, o.next_attempt_at <= now), lease_over)
    else:
        # Asked for by id (a promotion delivering what it just enqueued, or `outbox --retry`):
        # run it now even if not due yet or given up on; never while another deliverer holds it.
        condition = and_(o.id.in_(list(ids)), or_(o.status.in_([PENDING, FAILED]), lease_over))
    return condition if after is None else and_(o.id > after, condition)


def claim_due(
    store: Store,
    *,
    now: dt.datetime | None = None,
    ids: Sequence[int] | None = None,
    limit: int = 100,
    lease: dt.timedelta = DEFAULT_LEASE,
    after: int | None = None,
) -> list[OutboxItem]:
    """Claim items for delivery: the pending items due at `now` (or, with `ids`, exactly those
    items that are pending or failed), plus items whose deliverer's lease has run out; with
    `after`, only items with a greater id. Oldest first, at most `limit`.

    Claimed items are `delivering` until `now + lease`. Two deliverers claiming at once never
    get the same item: on SQLite the write transaction holds the database's write lock; on
    PostgreSQL rows another claimer has locked are skipped, and the update re-checks the status.
    """
    moment = _utc(now)
    if ids is not None and not ids:
        return []
    o = t.outbox.c
    condition = _claimable(moment, ids, after)
    with store.atomic() as tx:
        # Two statements, not UPDATE … WHERE id IN (SELECT … LIMIT): PostgreSQL may run such a
        # subquery once per row and so ignore its LIMIT. The rows selected here stay locked
        # until this transaction ends; the update's own condition re-checks them.
        chosen = list(
            tx.connection.execute(
                select(o.id)
                .where(condition)
                .order_by(o.id)
                .limit(limit)
                .with_for_update(skip_locked=True)  # PostgreSQL only; SQLite renders nothing
            ).scalars()
        )
        if not chosen:
            return []
        claimed = tx.connection.execute(
            update(t.outbox)
            .where(o.id.in_(chosen), condition)
            .values(status=DELIVERING, next_attempt_at=moment + lease)
            .returning(*t.outbox.c)
        ).all()
    return sorted((_item(row) for row in claimed), key=lambda item: item.id)


def mark_delivered(
    store: Store,
    item_id: int,
    *,
    output: str | None,
    tries: int = 1,
) -> bool:
    """Record that a claimed item ran successfully after `tries` runs, with its output (the
    deployment id of a deploy hook). False when the item was not claimed (any more)."""
    o = t.outbox.c
    with store.atomic() as tx:
        row = tx.connection.execute(
            select(o.payload, o.attempts).where(o.id == item_id, o.status == DELIVERING)
        ).one_or_none()
        if row is None:
            return False
        payload = dict(row.payload)
        payload.pop(_OUTPUT_KEY, None)
        if output is not None:
            payload[_OUTPUT_KEY] = output
        result = tx.connection.execute(
            update(t.outbox)
            .where(o.id == item_id, o.status == DELIVERING)
            .values(
                status=DELIVERED,
                attempts=row.attempts + tries,
                payload=payload,
                next_attempt_at=None,
                # The error that made the earlier attempts fail stays: it explains them.
            )
        )
        return bool(result.rowcount)


def mark_failed(
    store: Store,
    item_id: int,
    *,
    error: str,
    next_attempt_at: dt.datetime,
    tries: int = 1,
    max_attempts: int | None = None,
) -> str | None:
    """Record that a claimed item failed `tries` more times with `error`.

    It goes back to `pending`, due at `next_attempt_at`, or to `failed` (retried only when
    asked, e.g. by `skillstage outbox --retry`) once its attempts reach `max_attempts`. Returns
    the new status, or None when the item was not claimed (any more).
    """
    o = t.outbox.c
    due = _utc(next_attempt_at)
    with store.atomic() as tx:
        attempts = tx.connection.execute(
            select(o.attempts).where(o.id == item_id, o.status == DELIVERING)
        ).scalar_one_or_none()
        if attempts is None:
            return None
        total = attempts + tries
        status = FAILED if max_attempts is not None and total >= max_attempts else PENDING
        tx.connection.execute(
            update(t.outbox)
            .where(o.id == item_id, o.status == DELIVERING)
            .values(status=status, attempts=total, last_error=error, next_attempt_at=due)
        )
    return status


def list_items(store: Store, status: str | Sequence[str] | None = None) -> list[OutboxItem]:
    """The outbox's items, oldest first; only those in `status` (one or several) if given."""
    query = select(t.outbox).order_by(t.outbox.c.id)
    if status is not None:
        wanted = [status] if isinstance(status, str) else list(status)
        query = query.where(t.outbox.c.status.in_(wanted))
    with store.atomic() as tx:
        return [_item(row) for row in tx.connection.execute(query)]


def get_item(store: Store, item_id: int) -> OutboxItem | None:
    """One item by id, or None."""
    with store.atomic() as tx:
        row = tx.connection.execute(select(t.outbox).where(t.outbox.c.id == item_id)).one_or_none()
    return _item(row) if row is not None else None
