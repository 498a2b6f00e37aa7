"""Delivering the outbox: run each claimed side effect, retry it with backoff, record the outcome.

A promotion enqueues its hooks and notifications in its own transaction (`store.outbox.enqueue`
with a payload from `hooks.hook_item` or `notify.notification_items`) and calls `deliver` with
their ids after the commit. Nothing here raises into the caller: a failure is a `Delivery` with
`ok` False, recorded in the outbox for `skillstage outbox --retry` and never undoing the change.

Retries (seed 001): each delivery runs an item up to 1 + `hooks.retries` times, waiting
`hooks.retry_base_seconds` × 1, 2, 4, … between runs. An item that still fails is due again
later (the backoff continues); after `AUTOMATIC_DELIVERIES` such deliveries it is `failed` and
runs again only when asked (`outbox --retry`). An item that cannot succeed by retrying (an
invalid URL, a hook script that cannot start) is `failed` at once.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_attempt, wait_exponential

from skillstage.config import Project
from skillstage.integrations.hooks import HOOK_NAMES, run_hook
from skillstage.integrations.notify import redact_url, send
from skillstage.store import Store
from skillstage.store import outbox as box

NOTIFY_KIND: Final = "notify"

# Deliveries (each of 1 + hooks.retries runs) before an item stops being retried by itself.
AUTOMATIC_DELIVERIES: Final = 3

# Errors are kept whole enough to act on, not whole megabytes of a hook's output.
_MAX_ERROR_CHARS = 4000

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Outcome:
    """What one run of a side effect returned."""

    ok: bool
    error: str | None = None
    output: str | None = None  # e.g. a deploy hook's deployment id
    retryable: bool = True  # False: running it again cannot help until someone fixes something


Handler = Callable[[Project, Mapping[str, Any]], Outcome]


def _hook(project: Project, payload: Mapping[str, Any]) -> Outcome:
    result = run_hook(project, payload)
    return Outcome(result.ok, result.error, result.deployment_id, retryable=result.runnable)


def _notify(project: Project, payload: Mapping[str, Any]) -> Outcome:
    result = send(payload)
    return Outcome(result.ok, result.error, retryable=result.retryable)


GIT_COMMIT_KIND: Final = "git_commit"


def _git_commit(project: Project, payload: Mapping[str, Any]) -> Outcome:
    from skillstage.integrations.git import GitError, commit_paths

    try:
        commit = commit_paths(
            Path(payload["repo_root"]),
            [Path(p) for p in payload["paths"]],
            payload["message"],
            timeout=project.config.git.timeout_seconds,
        )
    except GitError as exc:
        # Not a repository, no identity, nothing to commit: a person has to act first.
        return Outcome(False, str(exc), retryable=False)
    return Outcome(True, output=commit)


def _smoke(project: Project, payload: Mapping[str, Any]) -> Outcome:
    from skillstage.watch.watcher import smoke_check

    ok, error, done = smoke_check(project, payload)
    # Never run again: a failed smoke check has already rolled the version back.
    return Outcome(ok, None if ok else f"{error}; {done}", done, retryable=False)


def _github_issue(project: Project, payload: Mapping[str, Any]) -> Outcome:
    from skillstage.integrations.github import create_issue

    ok, error, url, retryable = create_issue(project, payload)
    return Outcome(ok, error, url, retryable=retryable)


_HANDLERS: dict[str, Handler] = {
    **{name: _hook for name in HOOK_NAMES},
    NOTIFY_KIND: _notify,
    GIT_COMMIT_KIND: _git_commit,
    "smoke": _smoke,
    "github_issue": _github_issue,  # seed 001's promotion issue (`report NAME --gh`)
}


def register_handler(kind: str, handler: Handler) -> None:
    """Deliver outbox items of `kind` with `handler` (e.g. git commits). A handler should not
    raise; if it does, the run counts as a failure with the exception as its error."""
    _HANDLERS[kind] = handler


def target(kind: str, payload: Mapping[str, Any]) -> str:
    """What an item acts on, safe to show: a hook's command, a notification's redacted URL."""
    if kind == NOTIFY_KIND:
        return str(payload.get("target") or redact_url(str(payload.get("url") or "")))
    command = payload.get("command")
    return str(command) if command else kind


@dataclass(frozen=True)
class Delivery:
    """How delivering one outbox item went."""

    id: int
    kind: str
    name: str  # the hook's command or the notification's target, without secrets
    ok: bool
    attempts: int  # runs in this delivery
    error: str | None
    deployment_id: str | None
    skill: str | None = None
    status: str = box.DELIVERED  # the item's status afterwards: delivered, pending or failed
    output: str | None = None  # what the side effect returned (a deployment id, a commit hash)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lease(project: Project) -> dt.timedelta:
    # A claim must outlast the whole delivery (every run at its timeout plus the waits), or a
    # second deliverer would take the item over while the first is still running it.
    hooks = project.config.hooks
    runs = hooks.retries + 1
    waits = hooks.retry_base_seconds * (2**hooks.retries - 1)
    needed = dt.timedelta(seconds=runs * hooks.timeout_seconds + waits + 60)
    return max(box.DEFAULT_LEASE, needed)


def _run_with_retries(project: Project, item: box.OutboxItem, sleep: Sleep) -> tuple[Outcome, int]:
    handler = _HANDLERS.get(item.kind)
    if handler is None:
        known = ", ".join(sorted(_HANDLERS))
        error = f"no handler for outbox items of kind {item.kind!r} (known: {known})"
        return Outcome(False, error, retryable=False), 0
    runs = 0

    def run_once() -> Outcome:
        nonlocal runs
        runs += 1
        try:
            return handler(project, item.payload)
        except Exception as exc:  # a side effect's bug must not undo or abort the promotion
            return Outcome(False, f"unexpected error: {type(exc).__name__}: {exc}")

    def last_outcome(state: RetryCallState) -> Outcome:
        assert state.outcome is not None
        outcome: Outcome = state.outcome.result()
        return outcome

    hooks = project.config.hooks
    retrying = Retrying(
        stop=stop_after_attempt(hooks.retries + 1),
        wait=wait_exponential(multiplier=hooks.retry_base_seconds, exp_base=2, min=0),
        retry=retry_if_result(lambda outcome: not outcome.ok and outcome.retryable),
        retry_error_callback=last_outcome,
        sleep=sleep,
    )
    outcome: Outcome = retrying(run_once)
    return outcome, runs


def _deliver_one(
    project: Project,
    store: Store,
    item: box.OutboxItem,
    clock: Callable[[], dt.datetime],
    sleep: Sleep,
) -> Delivery:
    outcome, runs = _run_with_retries(project, item, sleep)
    hooks = project.config.hooks
    if outcome.ok:
        recorded = box.mark_delivered(store, item.id, output=outcome.output, tries=runs)
        status: str | None = box.DELIVERED if recorded else None
        timeline = item.payload.get("timeline")
        if recorded and isinstance(timeline, Mapping):
            # A step of an automated rollback's timeline (the alert sent, the re-index done).
            from skillstage.store.controls import record_step

            with store.atomic() as tx:
                record_step(
                    tx,
                    int(timeline["event_id"]),
                    str(timeline["step"]),
                    at=clock(),
                    detail=target(item.kind, item.payload),
                )
    else:
        # The next delivery continues the backoff where this one stopped.
        wait = hooks.retry_base_seconds * 2 ** max(runs, 1)
        per_delivery = hooks.retries + 1
        status = box.mark_failed(
            store,
            item.id,
            error=(outcome.error or "failed")[:_MAX_ERROR_CHARS],
            next_attempt_at=clock() + dt.timedelta(seconds=wait),
            tries=runs,
            max_attempts=per_delivery * AUTOMATIC_DELIVERIES if outcome.retryable else 0,
        )
    if status is None:
        # Our lease ran out and another deliverer took the item over: report what it says now.
        current = box.get_item(store, item.id)
        status = current.status if current is not None else "missing"
    skill = item.payload.get("skill")
    return Delivery(
        id=item.id,
        kind=item.kind,
        name=target(item.kind, item.payload),
        ok=outcome.ok,
        attempts=runs,
        error=outcome.error,
        deployment_id=outcome.output if item.kind == "deploy" else None,
        output=outcome.output,
        skill=str(skill) if skill is not None else None,
        status=status,
    )


def deliver(
    project: Project,
    store: Store,
    *,
    ids: Sequence[int] | None = None,
    now: dt.datetime | None = None,
    sleep: Sleep = time.sleep,
) -> list[Delivery]:
    """Deliver the outbox items due at `now` (default: the current time), or exactly `ids`.

    Each item is claimed just before it runs, so concurrent deliverers (two commands, two
    machines on one PostgreSQL store) never run one item twice. Retries wait through `sleep`.
    Never raises for a failing side effect; store failures raise `StoreError`.

    Call it after the change's transaction has committed, outside any `store.atomic()` block:
    inside one, the claims would join that transaction and hold the store's write lock (SQLite)
    while hooks run.
    """

    def clock() -> dt.datetime:
        return now if now is not None else dt.datetime.now(dt.UTC)

    lease = _lease(project)
    deliveries = []
    if ids is not None:
        for item_id in dict.fromkeys(ids):
            for item in box.claim_due(store, now=clock(), ids=[item_id], lease=lease):
                deliveries.append(_deliver_one(project, store, item, clock, sleep))
        return deliveries
    last: int | None = None
    while True:
        # One at a time, oldest first, each after the last: an item that failed and is due
        # again at once (zero backoff) waits for the next delivery instead of looping here.
        claimed = box.claim_due(store, now=clock(), limit=1, lease=lease, after=last)
        if not claimed:
            return deliveries
        item = claimed[0]
        last = item.id
        deliveries.append(_deliver_one(project, store, item, clock, sleep))


def retry(
    project: Project,
    store: Store,
    *,
    now: dt.datetime | None = None,
    sleep: Sleep = time.sleep,
) -> list[Delivery]:
    """Deliver every pending and failed item now, due or not (`skillstage outbox --retry`)."""
    waiting = box.list_items(store, status=[box.PENDING, box.FAILED, box.DELIVERING])
    return deliver(project, store, ids=[item.id for item in waiting], now=now, sleep=sleep)


@dataclass(frozen=True)
class ReportItem:
    """One outbox item as `skillstage outbox` shows it."""

    id: int
    kind: str
    target: str
    skill: str | None
    event: str | None
    status: str
    attempts: int
    last_error: str | None
    output: str | None
    created_at: dt.datetime
    next_attempt_at: dt.datetime | None
    age_seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["next_attempt_at"] = self.next_attempt_at.isoformat() if self.next_attempt_at else None
        return data


@dataclass(frozen=True)
class OutboxReport:
    """The outbox's items (oldest first) and how many are in each status."""

    items: list[ReportItem]

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(box.STATUSES, 0)
        for item in self.items:
            counts[item.status] = counts.get(item.status, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "items": [item.to_dict() for item in self.items]}


def _report_items(items: Iterable[box.OutboxItem], now: dt.datetime) -> list[ReportItem]:
    rows = []
    for item in items:
        skill, event = item.payload.get("skill"), item.payload.get("event")
        rows.append(
            ReportItem(
                id=item.id,
                kind=item.kind,
                target=target(item.kind, item.payload),
                skill=str(skill) if skill is not None else None,
                event=str(event) if event is not None else None,
                status=item.status,
                attempts=item.attempts,
                last_error=item.last_error,
                output=item.output,
                created_at=item.created_at,
                next_attempt_at=item.next_attempt_at,
                age_seconds=max(0.0, (now - item.created_at).total_seconds()),
            )
        )
    return rows


def outbox_report(
    project: Project,
    store: Store,
    *,
    status: str | Sequence[str] | None = None,
    now: dt.datetime | None = None,
) -> OutboxReport:
    """The project's outbox: every item (or those in `status`) with its target and attempts."""
    items = box.list_items(store, status=status)
    return OutboxReport(_report_items(items, now or dt.datetime.now(dt.UTC)))
