"""The seeds' SQL runs unchanged on the store: seed 000's dashboard queries (verbatim, SQLite) and
seed 002's tables (as views, both dialects)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from skillstage.store import Store
from tests.seed_sql import (
    PROMOTION_HISTORY,
    PROMOTION_SUCCESS_RATE,
    SKILLS_IN_STAGING,
    SLA_BREACHES,
)

UTC = dt.UTC


def run(store: Store, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with store.atomic() as tx:
        return [tuple(row) for row in tx.query(sql, params)]


def stage(store: Store, name: str, stage_name: str, at: dt.datetime, version: str = "1.0.0") -> int:
    digest = hashlib.sha256(f"{name} {version}".encode()).hexdigest()
    record = store.ensure_version(name, version, digest, path=f"/{name}", frontmatter={})
    store.enter_stage(record.version_id, stage_name, f".claude/skills/{name}", at=at)
    return record.version_id


def populate_staging(store: Store, now: dt.datetime) -> None:
    """Seed 000's example: auth-v2 12.5 h in staging, logging-v3 52.3 h (an SLA breach)."""
    hours = dt.timedelta(hours=1)
    stage(store, "auth-v2", "staged", now - 12.5 * hours)
    stage(store, "logging-v3", "staged", now - 52.3 * hours)
    # Seed 001 calls the stage "staging"; it counts too.
    stage(store, "beta-y", "staging", now - 1 * hours)
    # Promoted after 10 h in staging: no longer waiting, however old.
    stage(store, "caching-v1", "staged", now - 100 * hours)
    stage(store, "caching-v1", "production", now - 90 * hours)
    store.leave_stage("caching-v1", "staged", at=now - 90 * hours)
    # Not in staging at all.
    stage(store, "draft-x", "prototype", now - 200 * hours)


def populate_promotions(store: Store, now: dt.datetime) -> None:
    """Seed 000's example: 45 promotions in the last 30 days, 42 of them successful."""
    with store.atomic() as tx:
        for n in range(1, 46):
            tx.append_event(
                "promote",
                name=f"skill-{n:02d}",
                from_stage="staged",
                to_stage="production",
                actor="admin@example.com",
                success=n % 15 != 0,  # 15, 30, 45 failed
                path=f".claude/skills/skill-{n:02d}",
                at=now - dt.timedelta(hours=n),
            )
        for n in range(5):  # older than the window
            tx.append_event(
                "promote",
                name="ancient",
                actor="admin@example.com",
                success=False,
                path=".claude/skills/ancient",
                at=now - dt.timedelta(days=40 + n),
            )
        # Other kinds are not promotions.
        tx.append_event("rollback", name="skill-01", actor="watchdog", at=now)
        tx.append_event("register", name="skill-01", actor="ci", at=now)


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    with Store.open(sqlite_url) as store:
        yield store


def test_skills_in_staging(sqlite_store: Store) -> None:
    populate_staging(sqlite_store, dt.datetime.now(UTC))
    rows = run(sqlite_store, SKILLS_IN_STAGING)
    assert [(name, age) for name, _, age in rows] == [
        ("logging-v3", 52.3),
        ("auth-v2", 12.5),
        ("beta-y", 1.0),
    ]
    created = [dt.datetime.fromisoformat(created_at) for _, created_at, _ in rows]
    assert created == sorted(created)


def test_sla_breaches(sqlite_store: Store) -> None:
    populate_staging(sqlite_store, dt.datetime.now(UTC))
    rows = run(sqlite_store, SLA_BREACHES)
    assert [(name, age, breach) for name, _, age, breach in rows] == [("logging-v3", 52.3, 4.3)]


def test_promotion_success_rate(sqlite_store: Store) -> None:
    populate_promotions(sqlite_store, dt.datetime.now(UTC))
    assert run(sqlite_store, PROMOTION_SUCCESS_RATE) == [(45, 42, 93.33)]


def test_promotion_success_rate_of_an_empty_store(sqlite_store: Store) -> None:
    assert run(sqlite_store, PROMOTION_SUCCESS_RATE) == [(0, None, None)]


def test_promotion_history_on_both_dialects(store: Store) -> None:
    populate_promotions(store, dt.datetime.now(UTC))
    rows = run(store, PROMOTION_HISTORY)
    assert [row[0] for row in rows] == [f"skill-{n:02d}" for n in range(1, 11)]
    assert {row[2] for row in rows} == {"admin@example.com"}
    assert rows[0][3] == ".claude/skills/skill-01"


# -- seed 002's tables ---------------------------------------------------------------------------


def as_utc(value: Any) -> dt.datetime:
    """A view's timestamp (text on SQLite, naive datetime on PostgreSQL) as an aware UTC time."""
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, dt.datetime)
    return moment.replace(tzinfo=UTC)


T0 = dt.datetime(2025, 10, 20, 10, 0, tzinfo=UTC)


def populate_registry(store: Store) -> dict[str, int]:
    proto = store.ensure_version(
        "youtube-spam", "1.0.0", "1" * 64, path="/p", frontmatter={"name": "youtube-spam"}, at=T0
    )
    staged = store.ensure_version(
        "youtube-spam",
        "1.1.0",
        "2" * 64,
        path="/s",
        frontmatter={
            "name": "youtube-spam",
            "intent_type": "classification",
            "metadata": {"primary_agent": "gemma", "version": "1.1.0"},
        },
    )
    store.enter_stage(proto.version_id, "prototype", "/p", at=T0)
    store.enter_stage(staged.version_id, "staged", "/s", at=T0 + dt.timedelta(days=1))
    promoted = store.append_event(
        "promote",
        name="youtube-spam",
        version="1.1.0",
        from_stage="prototype",
        to_stage="staged",
        actor="0102",
        approver="0102",
        approval_ticket="APPROVAL_20251020_001",
        reason="fidelity 0.93 over the benchmark",
        path="/s",
        at=T0 + dt.timedelta(days=1),
    )
    store.append_event(  # refused: not a promotion that happened
        "promote",
        name="youtube-spam",
        version="1.1.0",
        from_stage="staged",
        to_stage="production",
        actor="0102",
        success=False,
        at=T0 + dt.timedelta(days=2),
    )
    rolled_back = store.append_event(
        "rollback",
        name="youtube-spam",
        version="1.1.0",
        from_stage="production",
        to_stage="staged",
        actor="watchdog",
        reason="pattern_fidelity_drop_below_85",
        trigger_metric="fidelity=0.83",
        at=T0 + dt.timedelta(days=3),
    )
    retired = store.ensure_version("retired", "0.1.0", "3" * 64, path="/r", frontmatter={})
    store.enter_stage(retired.version_id, "prototype", "/r", at=T0)
    store.leave_stage("retired", "prototype", at=T0 + dt.timedelta(hours=1))
    with store.atomic() as tx:
        for n, (fidelity, exception) in enumerate([(0.95, False), (0.85, True)]):
            tx.execute(
                "INSERT INTO execution (execution_id, skill_id, version, digest, timestamp,"
                " pattern_fidelity, outcome_quality, execution_time_ms, patterns_followed,"
                " patterns_missed, exception, false_positive, false_negative, critical) VALUES"
                " (:execution_id, :skill_id, '1.1.0', :digest, :timestamp, :fidelity, 0.9,"
                " :time_ms, 9, 1, :exception, false, false, false)",
                {
                    "execution_id": f"exec-{n}",
                    "skill_id": staged.skill_id,
                    "digest": "2" * 64,
                    "timestamp": tx.dialect.time(T0 + dt.timedelta(days=1, minutes=n)),
                    "fidelity": fidelity,
                    "time_ms": 120 + n,
                    "exception": exception,
                },
            )
    return {"promoted": promoted, "rolled_back": rolled_back}


def test_seed_002_skills(store: Store) -> None:
    populate_registry(store)
    rows = run(
        store,
        "SELECT skill_id, skill_name, promotion_state, primary_agent, intent_type, "
        "last_promoted_at, version FROM skills ORDER BY skill_id",
    )
    assert [row[:5] + row[6:] for row in rows] == [
        ("retired", "retired", None, None, None, None),
        ("youtube-spam", "youtube-spam", "staged", "gemma", "classification", "1.1.0"),
    ]
    assert rows[0][5] is None
    assert as_utc(rows[1][5]) == T0 + dt.timedelta(days=1)  # the refused attempt does not count


def test_seed_002_execution_metrics(store: Store) -> None:
    populate_registry(store)
    rows = run(
        store,
        "SELECT skill_id, COUNT(*), AVG(pattern_fidelity), SUM(exception), "
        "MAX(execution_time_ms) FROM execution_metrics WHERE skill_id = :name GROUP BY skill_id",
        name="youtube-spam",
    )
    assert rows == [("youtube-spam", 2, pytest.approx(0.9), 1, 121)]


def test_seed_002_promotion_and_rollback_events(store: Store) -> None:
    ids = populate_registry(store)
    promotions = run(
        store,
        "SELECT event_id, skill_id, from_state, to_state, approver, approval_ticket, timestamp, "
        "reason FROM promotion_events",
    )
    assert len(promotions) == 1
    event_id, *rest = promotions[0]
    assert event_id == str(ids["promoted"])
    assert tuple(rest[:5]) == (
        "youtube-spam",
        "prototype",
        "staged",
        "0102",
        "APPROVAL_20251020_001",
    )
    assert as_utc(rest[5]) == T0 + dt.timedelta(days=1)
    assert rest[6] == "fidelity 0.93 over the benchmark"

    rollbacks = run(
        store,
        "SELECT event_id, skill_id, from_state, to_state, trigger_reason, trigger_metric "
        "FROM rollback_events",
    )
    assert rollbacks == [
        (
            str(ids["rolled_back"]),
            "youtube-spam",
            "production",
            "staged",
            "pattern_fidelity_drop_below_85",
            "fidelity=0.83",
        )
    ]


def test_seed_000_flags_are_integers_on_both_dialects(store: Store) -> None:
    populate_registry(store)
    rows = run(store, "SELECT success, COUNT(*) FROM skill_promotions GROUP BY success ORDER BY 1")
    assert rows == [(0, 1), (1, 1)]
    staged = run(store, "SELECT name, promoted FROM staged_skills")
    assert staged == [("youtube-spam", 0)]
