"""The loader's circuit breakers (seed 002 §3.3 "Circuit breaker: automatic fallback on repeated
failures"): one per version (digest) per loader, so per host process.

Each is pybreaker's `CircuitBreaker`, which keeps the state (closed, open, half-open), the count
of failures in a row and when it opened. pybreaker guards a call it makes itself; here the call
is split in two, on any thread: `resolve` chooses a version (the breaker's admission) and
`record` reports how the execution went (its outcome), much later. So a recorded execution is
handed to the breaker as a call that fails or succeeds (`VersionBreaker.count`), and what
pybreaker has no word for is kept beside it: the trial resolution let through while half-open,
and when. pybreaker's half-open lets each call through one at a time under its lock; here
exactly one resolve gets the version (the trial), and only that trial's record decides.

Every breaker operation runs under `Breakers._lock`. A resolve takes it only when the version
routing chose has a breaker that is not closed (`_tripped`, read without the lock); state
changes reach `_Transitions` (a pybreaker listener), which queues the store events for `record`
to write after the lock is released, never inside `resolve`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any

import pybreaker

from skillstage.runtime.routing import (
    CANDIDATE,
    DISABLED,
    FALLBACK,
    STABLE,
    Resolution,
    RoutingTable,
)

OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN
CLOSED = pybreaker.STATE_CLOSED
BREAKER_OPEN = "breaker_open"
BREAKER_CLOSED = "breaker_closed"


@dataclass(frozen=True)
class BreakerEvent:
    """A breaker opened or closed: what the loader writes to the store's events."""

    kind: str  # BREAKER_OPEN or BREAKER_CLOSED
    name: str
    version: str
    digest: str
    stage: str
    at: dt.datetime
    reason: str
    consecutive_failures: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def trigger_metric(self) -> str | None:
        """What tripped an opening; a closing has no metric (a trial succeeded)."""
        if self.kind != BREAKER_OPEN:
            return None
        return f"consecutive_failures={self.consecutive_failures}"


class _FailedExecution(Exception):
    """How a recorded failure is told to pybreaker: the guarded call raises it."""


def _failed() -> None:
    raise _FailedExecution


def _succeeded() -> None:
    return None


class VersionBreaker:
    """The breaker of one version (digest) in one loader."""

    def __init__(
        self,
        resolution: Resolution,
        *,
        fail_max: int,
        reset_seconds: float,
        board: Breakers,
    ) -> None:
        self.name = resolution.name
        self.version = resolution.version
        self.digest = resolution.digest
        self.stage = resolution.stage  # of the last execution counted (the events name it)
        # Our own storage object, so its opened_at can be read (CircuitBreaker does not expose it).
        self.storage = pybreaker.CircuitMemoryStorage(CLOSED)
        self.circuit = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_seconds,
            listeners=[_Transitions(self, board)],
            state_storage=self.storage,
            name=f"{self.name} {self.version}",
        )
        self.trial: Resolution | None = None  # the one resolution let through while half-open
        self.trial_at: dt.datetime | None = None
        self.times_opened = 0
        self.trials = 0
        self.diverted = 0  # resolves given another version while this one was not closed
        self.served_open = 0  # resolves given this version anyway: nothing better to serve
        self.instead: Resolution | None = None  # what the last diverted resolve was given

    @property
    def state(self) -> str:
        return self.circuit.current_state

    def trial_due(self, now: dt.datetime) -> bool:
        """Whether a resolve now may be the trial: the reset timeout has passed since the
        breaker opened, or (half-open) since the last trial, whose record never came back."""
        since = self.storage.opened_at if self.state == OPEN else self.trial_at
        reset = dt.timedelta(seconds=self.circuit.reset_timeout)
        return since is None or now >= since + reset

    def let_trial(self, resolution: Resolution, now: dt.datetime) -> None:
        if self.state == OPEN:
            self.circuit.half_open()
        self.trial, self.trial_at = resolution, now
        self.trials += 1

    def count(self, resolution: Resolution, *, failed: bool) -> bool | None:
        """Count one recorded execution; returns whether it was the half-open trial, or None when
        it is not counted at all (the breaker is open, or half-open and this is not the trial:
        an execution resolved before the breaker opened)."""
        trial = False
        if self.state != CLOSED:
            # A Resolution is a value: the trial is matched by equality, so a host may record a
            # copy of it (the same subject, bucket and version).
            if self.state == OPEN or resolution != self.trial:
                return None
            trial = True
            self.trial = None
        self.stage = resolution.stage
        # Counted either way; CircuitBreakerError says it has just opened.
        with contextlib.suppress(_FailedExecution, pybreaker.CircuitBreakerError):
            self.circuit.call(_failed if failed else _succeeded)
        return trial

    def report(self) -> dict[str, Any]:
        opened_at = self.storage.opened_at
        instead = self.instead
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "stage": self.stage,
            "state": self.state,
            "consecutive_failures": self.circuit.fail_counter,
            "opened_at": opened_at.isoformat() if opened_at is not None else None,
            "times_opened": self.times_opened,
            "trials": self.trials,
            "diverted": self.diverted,
            "served_open": self.served_open,
            # Not closed, and the last resolve found nothing better to serve (no previous
            # version archived, or its breaker is open too): the version itself keeps serving.
            "no_fallback": self.state != CLOSED and self.served_open > 0 and instead is None,
            "serving_instead": (
                {"arm": instead.arm, "version": instead.version, "digest": instead.digest}
                if instead is not None and self.state != CLOSED
                else None
            ),
        }


class _Transitions(pybreaker.CircuitBreakerListener):
    """pybreaker's hook on state changes; runs under `Breakers._lock` (every breaker call does)."""

    def __init__(self, breaker: VersionBreaker, board: Breakers) -> None:
        self.breaker = breaker
        self.board = board

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        breaker, board = self.breaker, self.board
        before = old_state.name if old_state is not None else CLOSED
        now = dt.datetime.now(dt.UTC)
        reset = cb.reset_timeout
        if new_state.name == HALF_OPEN:
            return  # a resolve let the trial through: not an event (and resolve writes none)
        breaker.trial, breaker.trial_at = None, None
        if new_state.name == OPEN:
            breaker.times_opened += 1
            board.tripped[breaker.digest] = breaker
            if before == HALF_OPEN:
                reason = (
                    "the trial execution failed: the previous good version serves for "
                    f"{reset:g} s more"
                )
            else:
                reason = (
                    f"{cb.fail_counter} failed executions in a row on this host (exceptions or "
                    f"critical false negatives): the previous good version serves for {reset:g} s"
                )
            kind = BREAKER_OPEN
            opened_at = breaker.storage.opened_at
            details: dict[str, Any] = {
                "from_state": before,
                "fail_max": cb.fail_max,
                "reset_seconds": reset,
                "times_opened": breaker.times_opened,
                "opened_at": opened_at.isoformat() if opened_at is not None else None,
            }
        else:
            board.tripped.pop(breaker.digest, None)
            opened_at = breaker.storage.opened_at
            kind = BREAKER_CLOSED
            reason = "the trial execution succeeded: this version serves again"
            details = {
                "from_state": before,
                "times_opened": breaker.times_opened,
                "open_seconds": (now - opened_at).total_seconds() if opened_at else None,
            }
        board.pending.append(
            BreakerEvent(
                kind,
                breaker.name,
                breaker.version,
                breaker.digest,
                breaker.stage,
                now,
                reason,
                cb.fail_counter if new_state.name == OPEN else 0,
                details,
            )
        )


class Breakers:
    """A loader's breakers, one per digest, created by the first failure recorded for it."""

    def __init__(self, *, fail_max: int, reset_seconds: float) -> None:
        self.fail_max = fail_max
        self.reset_seconds = reset_seconds
        self._lock = threading.Lock()
        self._by_digest: dict[str, VersionBreaker] = {}
        # The breakers not closed, by digest: resolve reads it without the lock (one dict
        # lookup), so a loader with every breaker closed pays nothing more.
        self.tripped: dict[str, VersionBreaker] = {}
        self.pending: list[BreakerEvent] = []  # state changes not yet handed to the loader

    def fresh(self) -> Breakers:
        """The same settings, every breaker closed (a forked child's)."""
        return Breakers(fail_max=self.fail_max, reset_seconds=self.reset_seconds)

    def serve(
        self, resolution: Resolution, table: RoutingTable, *, admit: bool = True
    ) -> Resolution:
        """What serves instead of `resolution` while its version's breaker is not closed: for
        a candidate, the stable arm (same rollout, bucket and subject); else the route's
        fallback (the version live before); the first of those whose breaker is closed, or
        lets a trial through now (half-open). With nothing better, `resolution` itself.
        `admit` False (the catalog): only a look, no trial is let through."""
        if resolution.digest not in self.tripped or resolution.arm == DISABLED:
            return resolution
        route = table.routes.get((resolution.stage, resolution.name))
        if route is None:
            return resolution
        options = [resolution]
        if resolution.arm == CANDIDATE:
            stable = route.stable
            options.append(
                resolution._replace(
                    version=stable.version, digest=stable.digest, path=stable.path, arm=STABLE
                )
            )
        if route.fallback is not None:
            options.append(route.fallback._replace(subject=resolution.subject))
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            suspect = self.tripped.get(resolution.digest)
            if suspect is None:
                return resolution  # closed meanwhile
            chosen = None
            seen = set()
            for option in options:
                if option.digest in seen:
                    continue
                seen.add(option.digest)
                breaker = self.tripped.get(option.digest)
                if breaker is None:
                    chosen = option
                    break
                if admit and breaker.trial_due(now):
                    breaker.let_trial(option, now)
                    chosen = option
                    break
            if not admit:
                return chosen or resolution
            if chosen is None:
                suspect.served_open += 1
                suspect.instead = None
                return resolution
            if chosen is not resolution:
                suspect.diverted += 1
                suspect.instead = chosen
            return chosen

    def outcome(
        self, resolution: Resolution, *, failed: bool
    ) -> tuple[str | None, list[BreakerEvent]]:
        """Count one recorded execution of `resolution`'s version. Returns the execution's
        `breaker` tag ("open": a fallback served while a breaker was open; "half-open": the
        trial; None) and the events of the breakers it opened or closed, for the caller to
        write outside the lock."""
        tag = "open" if resolution.arm == FALLBACK else None
        if resolution.arm == DISABLED:
            return tag, []
        with self._lock:
            breaker = self._by_digest.get(resolution.digest)
            if breaker is None:
                if not failed:
                    return tag, []  # a closed breaker with no failure: nothing to count
                breaker = VersionBreaker(
                    resolution,
                    fail_max=self.fail_max,
                    reset_seconds=self.reset_seconds,
                    board=self,
                )
                self._by_digest[resolution.digest] = breaker
            if breaker.count(resolution, failed=failed):
                tag = HALF_OPEN
            events, self.pending = self.pending, []
        return tag, events

    def report(self) -> list[dict[str, Any]]:
        """Each breaker not closed, or that ever opened."""
        with self._lock:
            return [
                breaker.report()
                for breaker in self._by_digest.values()
                if breaker.state != CLOSED or breaker.times_opened
            ]
