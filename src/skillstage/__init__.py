"""skillstage: release engineering for AI-agent skills."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skillstage.metrics.record import ExecutionRecord

__version__ = "0.1.0"


def record_execution(
    skill: str, *, inbox: str | os.PathLike[str] | None = None, **fields: Any
) -> ExecutionRecord:
    """Record one execution of a skill (seed 002 §5.2): append it to the metrics inbox.

    `inbox` defaults to the inbox of the project at or above the working directory
    (`<state_dir>/metrics`), with that project's `metrics.max_clock_skew_minutes`; with an
    inbox given, pass `max_clock_skew` (a timedelta; default 10 minutes) if it should differ.
    `fields`: execution_id (default: a new time-ordered UUID),
    timestamp (default: now), version, digest, pattern_fidelity, outcome_quality,
    execution_time_ms, patterns_followed, patterns_missed, exception, false_positive,
    false_negative, critical, subject, tags. Ingestion (`skillstage metrics ingest`, or any
    readiness check) moves it into the store.
    """
    from pathlib import Path

    from skillstage.metrics.record import record_execution as append

    if inbox is None:
        from skillstage.api import record_execution as record
        from skillstage.config import load_project

        return record(load_project(), skill, **fields)
    return append(Path(inbox), skill=skill, **fields)
