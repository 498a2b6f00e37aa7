"""A recorded rollback drill, as readiness reads it: what the `rollback-drill` gate and the
go/no-go decision ask of the store. Apart from the drill itself (`drill.py`), which runs the
promoter: the gates the promoter runs read this.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from skillstage.store import Store

DRILL_KIND = "drill"  # the event a drill records


@dataclass(frozen=True)
class DrillRecord:
    """A recorded drill, as the readiness criteria read it (`latest_drill`)."""

    passed: bool
    at: dt.datetime
    version: str | None  # the version live when it ran
    steps: list[dict[str, Any]]
    details: dict[str, Any]
    event_id: int

    @property
    def seconds(self) -> float:
        return float(sum(step.get("seconds", 0) for step in self.steps))

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "at": self.at.isoformat(),
            "version": self.version,
            "versions": self.details.get("versions", {}),
            "stage": self.details.get("stage"),
            "seconds": round(self.seconds, 4),
            "steps": self.steps,
            "event_id": self.event_id,
        }


def latest_drill(store: Store, name: str) -> DrillRecord | None:
    """The latest rollback drill recorded for skill `name`, or None."""
    found = store.events(name, limit=1, kind=DRILL_KIND)
    if not found:
        return None
    event = found[0]
    details = event.details or {}
    return DrillRecord(
        passed=event.success,
        at=event.at,
        version=event.version,
        steps=list(details.get("steps", [])),
        details=details,
        event_id=event.id,
    )
