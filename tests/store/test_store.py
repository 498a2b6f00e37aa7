"""The store's vocabulary: versions, stages, events, and transactions around them."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skillstage.errors import ConflictError, StoreError
from skillstage.store import Store, VersionRecord

UTC = dt.UTC
T0 = dt.datetime(2025, 11, 14, 10, 0, tzinfo=UTC)
DIGEST_A = "a" * 64
DIGEST_B = "b" * 64


def register(
    store: Store, name: str = "auth-v2", version: str = "1.0.0", digest: str = DIGEST_A
) -> VersionRecord:
    return store.ensure_version(
        name,
        version,
        digest,
        path=f"/skills/{name}",
        frontmatter={"name": name, "version": version},
    )


def count(store: Store, table: str) -> int:
    with store.atomic() as tx:
        found: int = tx.scalar(f"SELECT COUNT(*) FROM {table}")
    return found


# -- versions ------------------------------------------------------------------------------------


def test_ensure_version_registers_once(store: Store) -> None:
    first = register(store)
    again = register(store)
    assert first.is_new and not again.is_new
    assert (again.skill_id, again.version_id, again.digest) == (
        first.skill_id,
        first.version_id,
        DIGEST_A,
    )
    assert first.created_at.tzinfo is not None
    assert again.created_at == first.created_at
    assert count(store, "skill") == 1
    assert count(store, "skill_version") == 1


def test_a_second_version_shares_the_skill(store: Store) -> None:
    one = register(store, version="1.0.0")
    two = register(store, version="1.1.0", digest=DIGEST_B)
    assert two.is_new and two.skill_id == one.skill_id and two.version_id != one.version_id


def test_the_same_version_with_other_content_is_a_conflict(store: Store) -> None:
    register(store)
    with pytest.raises(ConflictError) as caught:
        register(store, digest=DIGEST_B)
    error = caught.value
    assert error.code == "VERSION_DIGEST_CONFLICT"
    assert "aaaaaaaaaaaa" in error.message and "bbbbbbbbbbbb" in error.message
    assert DIGEST_A not in error.message  # short digests only
    assert error.hint is not None and "bump the version" in error.hint
    assert store.find_version("auth-v2", "1.0.0") is not None
    assert store.find_version("auth-v2", "1.0.0").digest == DIGEST_A  # type: ignore[union-attr]


def test_find_version(store: Store) -> None:
    assert store.find_version("auth-v2", "1.0.0") is None
    record = register(store)
    found = store.find_version("auth-v2", "1.0.0")
    assert found is not None and found.version_id == record.version_id and not found.is_new
    assert store.find_version("auth-v2", "2.0.0") is None
    assert store.find_version("other", "1.0.0") is None


def test_frontmatter_is_kept_as_json(store: Store) -> None:
    frontmatter = {"name": "x", "tags": ["a", "b"], "metadata": {"version": "1.0.0"}}
    record = store.ensure_version("x", "1.0.0", DIGEST_A, path="/x", frontmatter=frontmatter)
    with store.atomic() as tx:
        stored = tx.scalar(
            "SELECT frontmatter FROM skill_version WHERE id = :id", {"id": record.version_id}
        )
        assert tx.dialect.read_json(stored) == frontmatter


# -- stages --------------------------------------------------------------------------------------


def test_enter_stage_closes_the_previous_version_in_that_stage(store: Store) -> None:
    one = register(store, version="1.0.0")
    two = register(store, version="1.1.0", digest=DIGEST_B)
    store.enter_stage(one.version_id, "staged", "/staging/auth-v2", at=T0)
    store.enter_stage(one.version_id, "production", "/prod/auth-v2", at=T0)
    later = T0 + dt.timedelta(hours=3)
    entered = store.enter_stage(two.version_id, "staged", "/staging/auth-v2", at=later)

    assert entered.version == "1.1.0" and entered.entered_at == later
    staged = store.current_assignments(stage="staged")
    assert [(a.name, a.version, a.digest, a.entered_at) for a in staged] == [
        ("auth-v2", "1.1.0", DIGEST_B, later)
    ]
    # Production is another stage and keeps its version.
    assert [a.version for a in store.current_assignments(stage="production")] == ["1.0.0"]
    with store.atomic() as tx:
        closed = tx.scalar(
            "SELECT left_at FROM stage_assignment WHERE stage = 'staged' AND version_id = :id",
            {"id": one.version_id},
        )
        assert tx.dialect.read_time(closed) == later


def test_current_assignments_filters_and_orders(store: Store) -> None:
    for offset, name in enumerate(["b-skill", "a-skill", "c-skill"]):
        record = register(store, name=name)
        store.enter_stage(record.version_id, "staged", f"/s/{name}", at=T0 + dt.timedelta(offset))
    prod = store.find_version("c-skill", "1.0.0")
    assert prod is not None
    store.enter_stage(prod.version_id, "production", "/p/c-skill", at=T0)

    assert [a.name for a in store.current_assignments(stage="staged")] == [
        "b-skill",
        "a-skill",
        "c-skill",
    ]
    assert [(a.name, a.stage) for a in store.current_assignments(name="c-skill")] == [
        ("c-skill", "production"),
        ("c-skill", "staged"),
    ]
    assert store.current_assignments(stage="staged", name="nobody") == []
    assert len(store.current_assignments()) == 4


def test_leave_stage(store: Store) -> None:
    record = register(store)
    store.enter_stage(record.version_id, "staged", "/s", at=T0)
    left = store.leave_stage("auth-v2", "staged", at=T0 + dt.timedelta(hours=1))
    assert left is not None and left.version_id == record.version_id
    assert store.current_assignments() == []
    assert store.leave_stage("auth-v2", "staged") is None
    assert store.leave_stage("nobody", "staged") is None


def test_enter_stage_of_an_unknown_version_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError, match="no skill version with id 424242"):
        store.enter_stage(424242, "staged", "/s")


def test_one_open_assignment_per_skill_and_stage_is_enforced_by_the_database(
    store: Store,
) -> None:
    record = register(store)
    store.enter_stage(record.version_id, "staged", "/s", at=T0)
    insert = (
        "INSERT INTO stage_assignment (skill_id, version_id, stage, path, entered_at, left_at)"
        " VALUES (:skill_id, :version_id, 'staged', '/s', :at, :left_at)"
    )
    row = {"skill_id": record.skill_id, "version_id": record.version_id}
    with pytest.raises(StoreError, match=r"(?i)unique"), store.atomic() as tx:
        tx.execute(insert, {**row, "at": tx.dialect.time(T0), "left_at": None})
    # Closed rows are history and may repeat.
    with store.atomic() as tx:
        tx.execute(insert, {**row, "at": tx.dialect.time(T0), "left_at": tx.dialect.time(T0)})
    assert count(store, "stage_assignment") == 2


def test_naive_datetimes_are_refused(store: Store) -> None:
    record = register(store)
    with pytest.raises(ValueError, match="naive datetime"):
        store.enter_stage(record.version_id, "staged", "/s", at=dt.datetime(2025, 1, 1))
    assert store.current_assignments() == []


offsets = st.builds(
    dt.timezone,
    st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23)),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    at=st.datetimes(
        min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(9000, 1, 1), timezones=offsets
    )
)
def test_times_come_back_as_the_same_instant_in_utc(store: Store, at: dt.datetime) -> None:
    record = store.ensure_version("clock", "1.0.0", DIGEST_A, path="/c", frontmatter={})
    store.enter_stage(record.version_id, "staged", "/c", at=at)
    [assignment] = store.current_assignments(name="clock")
    assert assignment.entered_at == at
    assert assignment.entered_at.utcoffset() == dt.timedelta(0)


def test_sqlite_stores_naive_utc_text(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as store:
        record = register(store)
        store.enter_stage(
            record.version_id,
            "staged",
            "/s",
            at=dt.datetime(
                2025, 11, 14, 12, 0, 0, 250000, tzinfo=dt.timezone(dt.timedelta(hours=2))
            ),
        )
        with store.atomic() as tx:
            raw = tx.one("SELECT entered_at, julianday(entered_at) FROM stage_assignment")
            assert raw is not None
    assert raw[0] == "2025-11-14 10:00:00.250000"
    assert raw[1] == pytest.approx(2460993.916669, abs=1e-6)


# -- events --------------------------------------------------------------------------------------


def test_events_newest_first_with_filters(store: Store) -> None:
    register(store)
    ids = [
        store.append_event(
            kind,
            name=name,
            actor="ci",
            at=T0 + dt.timedelta(minutes=minute),
        )
        for minute, (kind, name) in enumerate(
            [("register", "auth-v2"), ("promote", "auth-v2"), ("promote", "logging-v3")]
        )
    ]
    assert len(set(ids)) == 3
    assert [e.id for e in store.events()] == ids[::-1]
    assert [e.kind for e in store.events(name="auth-v2")] == ["promote", "register"]
    assert [e.name for e in store.events(kind="promote")] == ["logging-v3", "auth-v2"]
    assert len(store.events(limit=2)) == 2
    # An event for a skill never registered still names it.
    assert store.events(name="logging-v3")[0].version is None


def test_an_event_keeps_every_field(store: Store) -> None:
    register(store)
    event_id = store.append_event(
        "rollback",
        name="auth-v2",
        version="1.0.0",
        from_stage="production",
        to_stage="staged",
        actor="watchdog",
        reason="pattern_fidelity_drop_below_85",
        success=False,
        path="/prod/auth-v2",
        details={"window": 10, "fidelity": [0.8, 0.83]},
        approver="0102",
        approval_ticket="APPROVAL_20251020_001",
        trigger_metric="fidelity=0.83",
        at=T0,
    )
    [event] = store.events()
    assert event.id == event_id
    assert (event.kind, event.name, event.version, event.digest) == (
        "rollback",
        "auth-v2",
        "1.0.0",
        DIGEST_A,  # filled in from the registered version
    )
    assert (event.from_stage, event.to_stage, event.actor, event.success) == (
        "production",
        "staged",
        "watchdog",
        False,
    )
    assert event.details == {"window": 10, "fidelity": [0.8, 0.83]}
    assert (event.approver, event.approval_ticket, event.trigger_metric) == (
        "0102",
        "APPROVAL_20251020_001",
        "fidelity=0.83",
    )
    assert (event.reason, event.path, event.at) == (
        "pattern_fidelity_drop_below_85",
        "/prod/auth-v2",
        T0,
    )


def test_an_event_about_conflicting_content_is_not_linked_to_the_registered_version(
    store: Store,
) -> None:
    record = register(store)
    store.append_event(
        "promote", name="auth-v2", version="1.0.0", digest=DIGEST_B, actor="ci", success=False
    )
    store.append_event("promote", name="auth-v2", version="1.0.0", digest=DIGEST_A, actor="ci")
    with store.atomic() as tx:
        links = tx.query("SELECT digest, version_id FROM event ORDER BY id")
    assert [tuple(link) for link in links] == [(DIGEST_B, None), (DIGEST_A, record.version_id)]


# -- transactions --------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_a_failure_inside_atomic_leaves_nothing(store: Store) -> None:
    with pytest.raises(Boom), store.atomic() as tx:
        record = tx.ensure_version("auth-v2", "1.0.0", DIGEST_A, path="/s", frontmatter={})
        tx.enter_stage(record.version_id, "staged", "/s")
        tx.append_event("register", name="auth-v2", version="1.0.0", actor="ci")
        assert len(tx.current_assignments()) == 1  # visible inside the transaction
        raise Boom
    assert store.find_version("auth-v2", "1.0.0") is None
    assert store.current_assignments() == []
    assert store.events() == []
    for table in ("skill", "skill_version", "stage_assignment", "event"):
        assert count(store, table) == 0, table


def test_a_conflict_inside_atomic_undoes_the_whole_change(store: Store) -> None:
    register(store)
    with pytest.raises(ConflictError), store.atomic() as tx:
        tx.ensure_version("new-skill", "1.0.0", DIGEST_A, path="/n", frontmatter={})
        tx.ensure_version("auth-v2", "1.0.0", DIGEST_B, path="/s", frontmatter={})
    assert store.find_version("new-skill", "1.0.0") is None


def test_store_methods_called_inside_atomic_join_its_transaction(store: Store) -> None:
    # On SQLite a second transaction would wait on the first one's write lock; joining it means
    # the calls neither block nor escape the rollback.
    with pytest.raises(Boom), store.atomic():
        record = register(store)
        store.enter_stage(record.version_id, "staged", "/s")
        assert [a.name for a in store.current_assignments()] == ["auth-v2"]
        raise Boom
    assert store.current_assignments() == []
    assert count(store, "skill") == 0


def test_a_nested_atomic_is_a_savepoint(store: Store) -> None:
    with store.atomic() as tx:
        kept = tx.ensure_version("kept", "1.0.0", DIGEST_A, path="/k", frontmatter={})
        with pytest.raises(Boom), store.atomic() as inner:
            inner.ensure_version("dropped", "1.0.0", DIGEST_A, path="/d", frontmatter={})
            raise Boom
        with tx.atomic() as inner:
            inner.enter_stage(kept.version_id, "staged", "/k")
    assert store.find_version("kept", "1.0.0") is not None
    assert store.find_version("dropped", "1.0.0") is None
    assert [a.name for a in store.current_assignments()] == ["kept"]


def run_concurrently(url: str, work: Callable[[Store], object], workers: int = 4) -> list[object]:
    """Run `work` at the same instant in `workers` threads, each with its own store handle."""
    barrier = threading.Barrier(workers)
    results: list[object] = []
    errors: list[BaseException] = []
    stores = [Store.open(url) for _ in range(workers)]

    def run(store: Store) -> None:
        barrier.wait()
        try:
            results.append(work(store))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    return results


def test_concurrent_registrations_of_one_version_register_it_once(
    store: Store, store_url: str
) -> None:
    results = run_concurrently(store_url, register)
    assert sorted(isinstance(r, VersionRecord) and r.is_new for r in results) == [
        False,
        False,
        False,
        True,
    ]
    assert len({r.version_id for r in results if isinstance(r, VersionRecord)}) == 1
    assert count(store, "skill_version") == 1


def test_concurrent_stage_moves_leave_one_open_assignment(store: Store, store_url: str) -> None:
    versions = [
        register(store, version=f"1.{n}.0", digest=f"{n:x}" * 64).version_id for n in range(4)
    ]
    lock = threading.Lock()

    def move(handle: Store) -> int:
        with lock:
            version_id = versions.pop()
        return handle.enter_stage(version_id, "staged", "/s").version_id

    moved = run_concurrently(store_url, move)
    assert len(moved) == 4
    [current] = store.current_assignments(stage="staged")
    with store.atomic() as tx:
        rows = tx.scalar("SELECT COUNT(*) FROM stage_assignment WHERE left_at IS NULL")
    assert rows == 1
    assert count(store, "stage_assignment") == 4
    assert current.version_id in moved
