"""The vocabulary of rollouts: what a user types (steps, durations, segments), what a rollout
command returns, and its error."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from skillstage.errors import SkillstageError, UsageError
from skillstage.lifecycle.gates import GateResult
from skillstage.rollout.analysis import Verdict
from skillstage.store.rollouts import RolloutRecord


class RolloutError(SkillstageError):
    """A rollout could not be started or changed (one is active already, nothing is live …)."""

    code = "ROLLOUT"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- parsing what a user types ------------------------------------------------------------------

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*\Z", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str) -> float:
    """Seconds in "90s", "30m", "1h", "2d" or a bare number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise UsageError(f"{text!r} is not a duration", hint="e.g. 30s, 15m, 1h, 2d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
    if seconds > 365 * 86_400:
        raise UsageError(f"{text!r} is longer than a year")
    return seconds


def parse_steps(text: str) -> list[int]:
    """ "10,50,100" as [10, 50, 100]: rising percentages ending at 100."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{text!r} is not a list of percentages", hint="e.g. 10,50,100") from None
    check_steps(steps)
    return steps


def check_steps(steps: Sequence[int]) -> None:
    if not steps or any(not 1 <= s <= 100 for s in steps):
        raise UsageError(f"steps {list(steps)} must be percentages from 1 to 100")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise UsageError(f"steps {list(steps)} must rise", hint="e.g. 10,50,100")
    if steps[-1] != 100:
        raise UsageError(
            f"steps {list(steps)} must end at 100, where the rollout completes",
            hint="e.g. 10,50,100",
        )


def parse_segments(pairs: Sequence[str]) -> dict[str, list[str]]:
    """["tier=internal", "tier=beta", "region=eu"] as {"tier": ["internal", "beta"], …}."""
    segments: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(
                f"segment {pair!r} is not KEY=VALUE", hint="e.g. --segment tier=internal"
            )
        segments.setdefault(key.strip(), []).append(value.strip())
    return segments


# -- results -----------------------------------------------------------------------------------


@dataclass
class RolloutOutcome:
    """What a rollout command did (or, with `dry_run`, would do)."""

    success: bool
    name: str
    action: str  # started, advanced, completed, aborted, paused, resumed, waiting, blocked
    rollout: RolloutRecord | None = None
    verdict: Verdict | None = None
    gates: list[GateResult] = field(default_factory=list)
    error: str | None = None
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    event_id: int | None = None  # the event the change recorded

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "name": self.name,
            "action": self.action,
            "rollout": self.rollout.to_dict() if self.rollout else None,
            "verdict": self.verdict.to_dict() if self.verdict else None,
            "gates": [g.to_dict() for g in self.gates],
            "error": self.error,
            "dry_run": self.dry_run,
            "warnings": self.warnings,
            "deliveries": self.deliveries,
        }
