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

from skillstage.store.db import Dialect
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


_COLUMNS = "id, kind, payload, status, attempts, last_error, next_attempt_at, created_at"


def _item(row: Sequence[Any], dialect: Dialect) -> OutboxItem:
    """An item from a row of `_COLUMNS`."""
    item_id, kind, payload, status, attempts, last_error, next_attempt_at, created_at = row
    payload = dict(dialect.read_json(payload))
    output = payload.pop(_OUTPUT_KEY, None)
    created = dialect.read_time(created_at)
    assert created is not None
    return OutboxItem(
        id=item_id,
        kind=kind,
        payload=payload,
        status=status,
        attempts=attempts,
        last_error=last_error,
        next_attempt_at=dialect.read_time(next_attempt_at),
        created_at=created,
        output=output if isinstance(output, str) else None,
    )


def enqueue(
    tx: Transaction, kind: str, payload: Mapping[str, Any], *, at: dt.datetime | None = None
) -> int:
    """Add a side effect to the outbox inside the caller's transaction; returns its id.

    It is due at once, but only exists if the caller's transaction commits.
    """
    now = tx.dialect.time(_utc(at))
    item_id = tx.insert_returning_id(
        "INSERT INTO outbox (kind, payload, status, attempts, last_error, next_attempt_at,"
        " created_at) VALUES (:kind, :payload, :status, 0, NULL, :now, :now)",
        {"kind": kind, "payload": tx.dialect.json(dict(payload)), "status": PENDING, "now": now},
    )
    assert item_id is not None
    return item_id


def _claimable(ids: Sequence[int] | None, after: int | None) -> tuple[str, dict[str, Any]]:
    """The condition on outbox rows that may be claimed now (parameter `:now`), with the
    parameters it adds."""
    lease_over = "(status = :delivering AND next_attempt_at <= :now)"
    params: dict[str, Any] = {
        "pending": PENDING,
        "delivering": DELIVERING,
        "failed": FAILED,
        "after": after,
    }
    if ids is None:
        condition = f"((status = :pending AND next_attempt_at <= :now) OR {lease_over})"
    else:
        # Asked for by id (a promotion delivering what it just enqueued, or `outbox --retry`):
        # run it now even if not due yet or given up on; never while another deliverer holds it.
        names = [f":id_{index}" for index in range(len(ids))]
        params.update({f"id_{index}": item_id for index, item_id in enumerate(ids)})
        condition = (
            f"(id IN ({', '.join(names)}) AND (status IN (:pending, :failed) OR {lease_over}))"
        )
    return (condition if after is None else f"(id > :after AND {condition})"), params


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
    condition, params = _claimable(ids, after)
    with store.atomic() as tx:
        d = tx.dialect
        params.update(now=d.time(moment), until=d.time(moment + lease), limit=limit)
        # Two statements, not UPDATE … WHERE id IN (SELECT … LIMIT): PostgreSQL may run such a
        # subquery once per row and so ignore its LIMIT. The rows selected here stay locked
        # until this transaction ends; the update's own condition re-checks them.
        chosen = [
            row[0]
            for row in tx.query(
                f"SELECT id FROM outbox WHERE {condition} ORDER BY id LIMIT :limit"
                + d.for_update_skip_locked,
                params,
            )
        ]
        if not chosen:
            return []
        params.update({f"chosen_{index}": item_id for index, item_id in enumerate(chosen)})
        chosen_names = ", ".join(f":chosen_{index}" for index in range(len(chosen)))
        claimed = tx.query(
            f"UPDATE outbox SET status = :delivering, next_attempt_at = :until"
            f" WHERE id IN ({chosen_names}) AND {condition} RETURNING {_COLUMNS}",
            params,
        )
        return sorted((_item(row, d) for row in claimed), key=lambda item: item.id)


def mark_delivered(
    store: Store,
    item_id: int,
    *,
    output: str | None,
    tries: int = 1,
) -> bool:
    """Record that a claimed item ran successfully after `tries` runs, with its output (the
    deployment id of a deploy hook). False when the item was not claimed (any more)."""
    with store.atomic() as tx:
        row = tx.one(
            "SELECT payload, attempts FROM outbox WHERE id = :id AND status = :delivering",
            {"id": item_id, "delivering": DELIVERING},
        )
        if row is None:
            return False
        payload = dict(tx.dialect.read_json(row[0]))
        payload.pop(_OUTPUT_KEY, None)
        if output is not None:
            payload[_OUTPUT_KEY] = output
        # The error that made the earlier attempts fail stays: it explains them.
        changed = tx.execute(
            "UPDATE outbox SET status = :delivered, attempts = :attempts, payload = :payload,"
            " next_attempt_at = NULL WHERE id = :id AND status = :delivering",
            {
                "id": item_id,
                "delivering": DELIVERING,
                "delivered": DELIVERED,
                "attempts": row[1] + tries,
                "payload": tx.dialect.json(payload),
            },
        )
        return bool(changed)


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
    due = _utc(next_attempt_at)
    with store.atomic() as tx:
        attempts = tx.scalar(
            "SELECT attempts FROM outbox WHERE id = :id AND status = :delivering",
            {"id": item_id, "delivering": DELIVERING},
        )
        if attempts is None:
            return None
        total = attempts + tries
        status = FAILED if max_attempts is not None and total >= max_attempts else PENDING
        tx.execute(
            "UPDATE outbox SET status = :status, attempts = :attempts, last_error = :error,"
            " next_attempt_at = :due WHERE id = :id AND status = :delivering",
            {
                "id": item_id,
                "delivering": DELIVERING,
                "status": status,
                "attempts": total,
                "error": error,
                "due": tx.dialect.time(due),
            },
        )
    return status


def list_items(store: Store, status: str | Sequence[str] | None = None) -> list[OutboxItem]:
    """The outbox's items, oldest first; only those in `status` (one or several) if given."""
    sql = f"SELECT {_COLUMNS} FROM outbox"
    params: dict[str, Any] = {}
    if status is not None:
        wanted = [status] if isinstance(status, str) else list(status)
        if not wanted:
            return []
        params = {f"status_{index}": value for index, value in enumerate(wanted)}
        sql += f" WHERE status IN ({', '.join(':' + name for name in params)})"
    with store.reading() as tx:
        return [_item(row, tx.dialect) for row in tx.query(sql + " ORDER BY id", params)]


def get_item(store: Store, item_id: int) -> OutboxItem | None:
    """One item by id, or None."""
    with store.reading() as tx:
        row = tx.one(f"SELECT {_COLUMNS} FROM outbox WHERE id = :id", {"id": item_id})
        return _item(row, tx.dialect) if row is not None else None
