"""Gradual rollouts end to end, on real stores (SQLite and PostgreSQL), real skill trees and real
recorded executions (through the loader, or `api.record_execution`, then the inbox).

Every analysis verdict is reached with real figures: a successful step advances, a missed
threshold or a regression against stable aborts (or pauses), one critical failure fails at once,
and too little data or too short a step waits, however often it is ticked. Completion is a
promotion; refusals name the rollout and the command that ends it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.errors import UsageError
from skillstage.lifecycle.archive import archive_path
from skillstage.rollout.guard import RolloutActiveError
from skillstage.rollout.plan import RolloutError
from skillstage.runtime import Loader
from skillstage.skill.model import SkillVersion
from skillstage.skill.read import read_skill
from skillstage.store import Store
from skillstage.store import rollouts as store_rollouts
from tests.skilltree import write_skill

NAME = "auth-v2"
PROTOTYPE = Path(".claude/skills/prototype")
STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


@dataclass
class Arms:
    """A project with 1.0.0 live in production and 1.1.0 waiting in staging."""

    project: Project
    stable: SkillVersion
    candidate: SkillVersion


@pytest.fixture
def arms(project: Project) -> Arms:
    write_skill(project.root / STAGING, NAME)
    (promoted,) = api.promote(project, [NAME], to="production", actor="tester")
    assert promoted.success, promoted.error
    stable = read_skill(project.root / PRODUCTION / NAME)
    candidate = read_skill(write_skill(project.root / STAGING, NAME, extra={"version": "1.1.0"}))
    assert stable.digest != candidate.digest
    return Arms(project, stable, candidate)


def start(arms: Arms, **options: Any) -> store_rollouts.RolloutRecord:
    settings: dict[str, Any] = {"step_min_duration": "0s", "step_min_executions": 20}
    settings.update(options)
    outcome = api.rollout_start(arms.project, NAME, actor="tester", **settings)
    assert outcome.success, outcome.error
    assert outcome.rollout is not None
    return outcome.rollout


@pytest.fixture
def started(arms: Arms) -> Arms:
    """`arms` with a rollout of 1.1.0 at its first step (10%), judged after 20 executions."""
    start(arms)
    return arms


def record(
    project: Project,
    skill: SkillVersion,
    count: int,
    *,
    fidelity: float = 0.95,
    quality: float = 0.9,
    **fields: Any,
) -> None:
    """`count` executions of `skill`, recorded as a host would (to the inbox)."""
    for _ in range(count):
        api.record_execution(
            project,
            NAME,
            version=skill.version,
            digest=skill.digest,
            pattern_fidelity=fidelity,
            outcome_quality=quality,
            execution_time_ms=3.0,
            **fields,
        )


def serve(
    project: Project,
    subjects: range,
    *,
    candidate_fidelity: float = 0.95,
    stable_fidelity: float = 0.95,
) -> dict[str, list[str]]:
    """One request per subject through a real loader, each recorded with its arm's figures;
    the subjects each arm served."""
    served: dict[str, list[str]] = {"candidate": [], "stable": []}
    with Loader(project) as loader:
        for i in subjects:
            resolution = loader.resolve(NAME, subject=f"user-{i}")
            fidelity = candidate_fidelity if resolution.arm == "candidate" else stable_fidelity
            loader.record(
                resolution, pattern_fidelity=fidelity, outcome_quality=0.9, execution_time_ms=3.0
            )
            served[resolution.arm].append(f"user-{i}")
    return served


def current(project: Project) -> store_rollouts.RolloutRecord:
    with Store.open(project.database_url) as store, store.reading() as tx:
        return store_rollouts.rollouts(tx, name=NAME, limit=1)[0]


def arms_of(project: Project, subjects: list[str]) -> Counter[tuple[str, str]]:
    """How many of `subjects` `api.resolve` sends to each arm (and which digests)."""
    return Counter(
        (r.arm, r.digest) for r in (api.resolve(project, NAME, subject=s) for s in subjects)
    )


def shares(project: Project, subjects: int) -> Counter[tuple[str, str]]:
    """How many of `subjects` subjects a fresh loader sends to each arm (and digest)."""
    with Loader(project) as loader:
        resolved = [loader.resolve(NAME, subject=f"user-{i}") for i in range(subjects)]
    return Counter((r.arm, r.digest) for r in resolved)


def registry(project: Project) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(project.registry_file.read_text())["skills"][NAME]
    return entry


def events(project: Project, kind: str | None = None) -> list[Any]:
    found = api.history(project, NAME, limit=200)
    return [e for e in found if kind is None or e.kind == kind]


def sidecar(project: Project, skill: SkillVersion) -> list[dict[str, Any]]:
    entry = archive_path(project, NAME, skill.version, skill.digest)
    reasons: list[dict[str, Any]] = json.loads(entry.with_name(entry.name + ".json").read_text())
    return reasons


def tick_one(project: Project) -> Any:
    (outcome,) = api.rollout_tick(project)
    return outcome


# -- starting ---------------------------------------------------------------------------------


def test_start_serves_the_candidate_to_the_first_steps_share(arms: Arms) -> None:
    project = arms.project
    rollout = start(arms)
    assert (rollout.state, rollout.steps, rollout.step_index, rollout.weight) == (
        "active",
        [10, 50, 100],
        0,
        10,
    )
    assert (rollout.candidate_digest, rollout.stable_digest) == (
        arms.candidate.digest,
        arms.stable.digest,
    )
    # The candidate serves from the immutable archive, so staging may change meanwhile.
    entry = archive_path(project, NAME, "1.1.0", arms.candidate.digest)
    assert read_skill(entry).digest == arms.candidate.digest
    with Loader(project) as loader:
        resolved = [loader.resolve(NAME, subject=f"user-{i}") for i in range(2000)]
        again = [loader.resolve(NAME, subject=f"user-{i}").arm for i in range(2000)]
    share = sum(r.arm == "candidate" for r in resolved) / len(resolved)
    assert 0.07 < share < 0.13, share
    assert again == [r.arm for r in resolved]  # sticky
    assert {r.path for r in resolved if r.arm == "candidate"} == {str(entry)}
    assert {r.digest for r in resolved if r.arm == "stable"} == {arms.stable.digest}
    # The same function through the API: a candidate subject gets the candidate there too.
    first = next(r for r in resolved if r.arm == "candidate")
    through_api = api.resolve(project, NAME, subject=first.subject)
    assert (through_api.arm, through_api.digest, through_api.rollout_id) == (
        "candidate",
        arms.candidate.digest,
        rollout.id,
    )
    entry_in_registry = registry(project)
    assert entry_in_registry["version"] == "1.0.0"
    assert entry_in_registry["rollout"]["state"] == "active"
    assert entry_in_registry["rollout"]["weight"] == 10
    assert entry_in_registry["rollout"]["candidate_digest"] == arms.candidate.digest
    (started_event,) = events(project, "rollout_start")
    assert started_event.details["rollout_id"] == rollout.id
    assert started_event.details["stable_version"] == "1.0.0"
    assert (started_event.version, started_event.to_stage) == ("1.1.0", "production")


def test_a_canary_segment_limits_the_candidate_to_matching_requests(arms: Arms) -> None:
    project = arms.project
    rollout = start(arms, segments=["tier=internal", "tier=beta"])
    assert rollout.segments == {"tier": ["internal", "beta"]}
    with Loader(project) as loader:
        inside = [
            loader.resolve(NAME, subject=f"user-{i}", context={"tier": "internal"})
            for i in range(1000)
        ]
        outside = [
            loader.resolve(NAME, subject=f"user-{i}", context={"tier": "external"})
            for i in range(1000)
        ]
        bare = [loader.resolve(NAME, subject=f"user-{i}") for i in range(1000)]
    chosen = [r.subject for r in inside if r.arm == "candidate"]
    assert 60 < len(chosen) < 140, len(chosen)
    assert {r.arm for r in outside} == {r.arm for r in bare} == {"stable"}
    beta = api.resolve(project, NAME, subject=chosen[0], context={"tier": "beta"})
    assert (beta.arm, beta.digest) == ("candidate", arms.candidate.digest)
    assert registry(project)["rollout"]["segments"] == {"tier": ["internal", "beta"]}


# -- the analysis verdicts --------------------------------------------------------------------


def test_a_successful_step_advances_from_10_to_50_percent(started: Arms) -> None:
    project = started.project
    served = serve(project, range(400))
    assert len(served["candidate"]) >= 20 and len(served["stable"]) >= 20, served
    (status,) = api.rollout_status(project, NAME)
    assert status.verdict.outcome == "successful", status.verdict.reasons
    assert status.verdict.candidate.count == len(served["candidate"])
    assert status.verdict.stable.count == len(served["stable"])
    outcome = tick_one(project)
    assert (outcome.success, outcome.action) == (True, "advanced")
    assert outcome.verdict.outcome == "successful"
    assert outcome.rollout.weight == 50
    rollout = current(project)
    assert (rollout.step_index, rollout.weight, rollout.state) == (1, 50, "active")
    # Growing the share takes the candidate away from nobody.
    seen = arms_of(project, served["candidate"])
    assert seen == Counter({("candidate", started.candidate.digest): len(served["candidate"])})
    share = shares(project, 2000)
    assert 850 < share[("candidate", started.candidate.digest)] < 1150, share
    (step,) = events(project, "rollout_step")
    assert step.details["weight"] == 50
    assert step.details["rollout_id"] == rollout.id
    assert step.details["verdict"]["outcome"] == "successful"
    assert registry(project)["rollout"]["weight"] == 50


def test_a_missed_threshold_aborts_and_sends_all_traffic_to_stable(started: Arms) -> None:
    project = started.project
    served = serve(project, range(400), candidate_fidelity=0.6)
    assert len(served["candidate"]) >= 20, served
    outcome = tick_one(project)
    assert (outcome.success, outcome.action) == (False, "aborted")
    assert outcome.verdict.outcome == "failed"
    assert outcome.verdict.trigger == "pattern_fidelity_below_90"
    assert outcome.verdict.trigger_metric == "fidelity=0.60"
    rollout = current(project)
    assert rollout.state == "aborted"
    assert rollout.ended_at is not None
    assert rollout.weight == 0
    # Everyone, above all those who had the candidate, is back on the stable version.
    assert arms_of(project, served["candidate"] + served["stable"][:20]) == Counter(
        {("stable", started.stable.digest): len(served["candidate"]) + 20}
    )
    assert read_skill(project.root / PRODUCTION / NAME).digest == started.stable.digest
    (note,) = sidecar(project, started.candidate)
    assert note["reason"] == "failed"
    assert note["trigger_metric"] == "fidelity=0.60"
    assert note["rollout_id"] == rollout.id
    (aborted,) = events(project, "rollout_abort")
    assert aborted.trigger_metric == "fidelity=0.60"
    assert aborted.details["rollout_id"] == rollout.id
    assert registry(project)["rollout"] is None
    assert api.rollout_tick(project) == []  # nothing left to tick
    assert api.rollout_status(project, NAME) == []


def test_a_regression_against_stable_aborts_though_thresholds_are_met(started: Arms) -> None:
    project = started.project
    # 0.91 meets the 0.90 threshold; against a stable 1.0 it is significantly worse, by more
    # than the 0.02 margin.
    record(project, started.candidate, 40, fidelity=0.91)
    record(project, started.stable, 40, fidelity=1.0)
    outcome = tick_one(project)
    assert (outcome.success, outcome.action) == (False, "aborted")
    verdict = outcome.verdict
    assert verdict.outcome == "failed"
    assert verdict.trigger == "pattern_fidelity_regression"
    assert verdict.trigger_metric == "pattern_fidelity=0.91"
    assert verdict.comparison["regressions"] == ["pattern_fidelity"]
    assert "significantly worse than the stable version on pattern_fidelity" in verdict.reasons[0]
    assert current(project).state == "aborted"


def test_a_difference_within_the_margin_is_no_regression(started: Arms) -> None:
    project = started.project
    # Significantly lower (every candidate value is), but by 0.01: within the 0.02 margin.
    record(project, started.candidate, 40, fidelity=0.99)
    record(project, started.stable, 40, fidelity=1.0)
    outcome = tick_one(project)
    assert (outcome.success, outcome.action) == (True, "advanced"), outcome.verdict.reasons
    metric = outcome.verdict.comparison["metrics"][0]
    assert metric["metric"] == "pattern_fidelity"
    assert metric["p_value"] < 0.05
    assert metric["worse"] is False


def test_one_critical_failure_fails_at_once_with_few_executions(started: Arms) -> None:
    project = started.project
    record(project, started.candidate, 2)
    record(project, started.candidate, 1, critical=True)
    (status,) = api.rollout_status(project, NAME)
    verdict = status.verdict
    assert verdict.candidate.count == 3  # far below the 20 a step needs
    assert verdict.outcome == "failed"
    assert verdict.trigger == "critical_false_negative"
    assert verdict.trigger_metric == "critical_failures=1"
    outcome = tick_one(project)
    assert (outcome.success, outcome.action) == (False, "aborted")
    assert current(project).state == "aborted"
    (aborted,) = events(project, "rollout_abort")
    assert aborted.trigger_metric == "critical_failures=1"


def test_too_few_executions_wait_and_never_drift_into_a_promotion(started: Arms) -> None:
    project = started.project
    record(project, started.candidate, 5)
    record(project, started.stable, 8)
    (status,) = api.rollout_status(project, NAME)
    assert status.verdict.outcome == "inconclusive"
    assert "5/20 candidate executions" in status.verdict.reasons
    assert "8/20 stable executions" in status.verdict.reasons
    for _ in range(4):
        outcome = tick_one(project)
        assert (outcome.success, outcome.action) == (True, "waiting")
        assert outcome.verdict.outcome == "inconclusive"
    rollout = current(project)
    assert (rollout.state, rollout.step_index) == ("active", 0)
    assert rollout.verdict is not None and rollout.verdict["outcome"] == "inconclusive"
    # An advance by hand waits too, saying for what.
    waiting = api.rollout_change(project, "advance", NAME, actor="tester")
    assert (waiting.success, waiting.action) == (False, "waiting")
    assert waiting.error is not None and "5/20 candidate executions" in waiting.error
    assert events(project, "rollout_step") == []
    assert [e.version for e in events(project, "promote")] == ["1.0.0"]
    assert read_skill(project.root / PRODUCTION / NAME).digest == started.stable.digest


def test_no_candidate_execution_is_no_data_not_a_pass(started: Arms) -> None:
    project = started.project
    record(project, started.stable, 30)
    (status,) = api.rollout_status(project, NAME)
    assert status.verdict.outcome == "no-data"
    assert status.verdict.reasons == ["0/20 candidate executions in this step"]
    outcome = tick_one(project)
    assert (outcome.success, outcome.action) == (True, "waiting")
    assert outcome.verdict.outcome == "no-data"
    assert current(project).step_index == 0


def test_executions_in_another_stage_do_not_count_for_the_step(started: Arms) -> None:
    project = started.project
    api.list_skills(project)  # staging serves its copy, 1.1.0, to its own traffic
    with Loader(project, stage="staged") as loader:
        for i in range(25):
            resolution = loader.resolve(NAME, subject=f"dev-{i}")
            assert (resolution.stage, resolution.digest) == ("staged", started.candidate.digest)
            loader.record(
                resolution, pattern_fidelity=0.95, outcome_quality=0.9, execution_time_ms=3.0
            )
    record(project, started.stable, 25)
    (status,) = api.rollout_status(project, NAME)
    assert status.verdict.candidate.count == 0
    assert status.verdict.outcome == "no-data"


def test_a_step_shorter_than_its_minimum_duration_waits(arms: Arms) -> None:
    project = arms.project
    start(arms, step_min_duration="1h")
    record(project, arms.candidate, 25)
    record(project, arms.stable, 25)
    (status,) = api.rollout_status(project, NAME)
    assert status.verdict.outcome == "inconclusive"
    (reason,) = status.verdict.reasons
    assert reason.startswith("the step has lasted ") and reason.endswith(" of 60m"), reason
    # Every other figure is fine: only the clock keeps it.
    assert status.verdict.candidate.count == 25
    assert status.earliest_completion is not None
    remaining = status.earliest_completion - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=2, minutes=58) < remaining <= dt.timedelta(hours=3)
    outcome = tick_one(project)
    assert (outcome.success, outcome.action) == (True, "waiting")
    assert current(project).step_index == 0


# -- failure handling ---------------------------------------------------------------------------


def test_on_failure_pause_pauses_and_resume_restarts_the_step(arms: Arms) -> None:
    project = arms.project
    start(arms, on_failure="pause")
    served = serve(project, range(400), candidate_fidelity=0.6)
    before = current(project)
    outcome = tick_one(project)
    assert (outcome.success, outcome.action) == (False, "paused")
    rollout = current(project)
    assert (rollout.state, rollout.weight, rollout.step_index) == ("paused", 0, 0)
    assert arms_of(project, served["candidate"]) == Counter(
        {("stable", arms.stable.digest): len(served["candidate"])}
    )
    (paused,) = events(project, "rollout_pause")
    assert paused.trigger_metric == "fidelity=0.60"
    assert registry(project)["rollout"]["state"] == "paused"
    assert registry(project)["rollout"]["weight"] == 0
    assert api.rollout_tick(project) == []  # a paused rollout waits for a person
    resumed = api.rollout_change(project, "resume", NAME, actor="tester")
    assert (resumed.success, resumed.action) == (True, "resumed")
    rollout = current(project)
    assert (rollout.state, rollout.weight, rollout.step_index) == ("active", 10, 0)
    assert rollout.step_started_at > before.step_started_at
    # The step starts over: the bad executions before the resume no longer count.
    (status,) = api.rollout_status(project, NAME)
    assert status.verdict.outcome == "no-data"
    assert arms_of(project, served["candidate"][:5]) == Counter(
        {("candidate", arms.candidate.digest): 5}
    )
    assert len(events(project, "rollout_resume")) == 1


def test_pause_resume_abort_by_hand_and_their_refusals(started: Arms) -> None:
    project = started.project
    with pytest.raises(RolloutError, match="is not paused"):
        api.rollout_change(project, "resume", NAME, actor="tester")
    api.rollout_change(project, "pause", NAME, actor="tester", reason="looking into it")
    with pytest.raises(RolloutError, match="paused already"):
        api.rollout_change(project, "pause", NAME, actor="tester")
    with pytest.raises(RolloutError, match="is paused") as advancing:
        api.rollout_change(project, "advance", NAME, actor="tester", force=True, reason="x")
    assert advancing.value.hint is not None and "rollout resume auth-v2" in advancing.value.hint
    with pytest.raises(UsageError, match="needs --reason"):
        api.rollout_change(project, "abort", NAME, actor="tester")
    with pytest.raises(UsageError, match="--force needs --reason"):
        api.rollout_change(project, "advance", NAME, actor="tester", force=True)
    aborted = api.rollout_change(project, "abort", NAME, actor="tester", reason="false start")
    assert (aborted.success, aborted.action) == (True, "aborted")
    assert current(project).state == "aborted"
    (note,) = sidecar(project, started.candidate)
    assert (note["reason"], note["why"]) == ("failed", "false start")
    with pytest.raises(RolloutError, match="has no active rollout"):
        api.rollout_change(project, "abort", NAME, actor="tester", reason="again")


# -- completion ---------------------------------------------------------------------------------


def test_the_last_successful_step_promotes_through_the_promoter(started: Arms) -> None:
    project = started.project
    serve(project, range(400))
    assert tick_one(project).rollout.weight == 50
    record(project, started.candidate, 20)
    assert tick_one(project).rollout.weight == 100
    # At 100% the stable version serves nothing; it is judged on its executions so far.
    assert arms_of(project, ["user-1", "user-2"]) == Counter(
        {("candidate", started.candidate.digest): 2}
    )
    record(project, started.candidate, 20)
    outcome = tick_one(project)
    assert (outcome.success, outcome.action) == (True, "completed"), outcome.error
    rollout = current(project)
    assert rollout.state == "completed"
    assert rollout.ended_at is not None
    assert read_skill(project.root / PRODUCTION / NAME).digest == started.candidate.digest
    assert not (project.root / STAGING / NAME).exists()
    promoted = events(project, "promote")[0]
    assert (promoted.version, promoted.digest) == ("1.1.0", started.candidate.digest)
    assert promoted.details["rollout_id"] == rollout.id
    assert promoted.actor == "skillstage-rollout"
    with Store.open(project.database_url) as store:
        (live,) = store.current_assignments(stage="production", name=NAME)
        assert live.digest == started.candidate.digest
        assert store.open_journals() == []
    entry = registry(project)
    assert (entry["version"], entry["digest"], entry["rollout"]) == (
        "1.1.0",
        started.candidate.digest,
        None,
    )
    resolved = api.resolve(project, NAME, subject="user-1")
    assert (resolved.arm, resolved.version, resolved.rollout_id) == ("stable", "1.1.0", None)
    assert api.rollout_tick(project) == []
    assert len(events(project, "rollout_step")) == 2


def test_a_forced_advance_completes_at_the_last_step(started: Arms) -> None:
    project = started.project
    for weight in (50, 100):
        moved = api.rollout_change(project, "advance", NAME, actor="tester", force=True, reason="x")
        assert moved.rollout is not None
        assert (moved.action, moved.rollout.weight) == ("advanced", weight)
    done = api.rollout_change(project, "advance", NAME, actor="tester", force=True, reason="ok")
    assert (done.success, done.action) == (True, "completed"), done.error
    assert read_skill(project.root / PRODUCTION / NAME).digest == started.candidate.digest
    assert current(project).state == "completed"
    assert events(project, "promote")[0].details["rollout_id"] == current(project).id


def test_completion_promotes_the_candidate_that_was_rolled_out(started: Arms) -> None:
    project = started.project
    # The engine says staging may change during a rollout (the candidate serves from the
    # archive): a developer puts the next version there.
    write_skill(project.root / STAGING, NAME, extra={"version": "1.2.0"}, body="# Next\n")
    for _ in range(2):
        api.rollout_change(project, "advance", NAME, actor="tester", force=True, reason="x")
    done = api.rollout_change(project, "advance", NAME, actor="tester", force=True, reason="ok")
    live = read_skill(project.root / PRODUCTION / NAME)
    # Either 1.1.0 (what served 100%) goes live, or completion is refused: never 1.2.0.
    assert live.version != "1.2.0"
    if done.success:
        assert live.digest == started.candidate.digest


# -- refusals ---------------------------------------------------------------------------------


def test_an_open_rollout_refuses_another_start_a_promotion_and_a_rollback(started: Arms) -> None:
    project = started.project
    rollout = current(project)
    with pytest.raises(RolloutActiveError) as second:
        start(started)
    assert f"#{rollout.id}" in second.value.message
    assert "another rollout" in second.value.message
    assert second.value.hint is not None and "rollout abort auth-v2" in second.value.hint
    with pytest.raises(RolloutActiveError) as promotion:
        api.promote(project, [NAME], to="production", actor="tester", overwrite=True)
    assert f"#{rollout.id}" in promotion.value.message
    assert "a promotion would change what it compares" in promotion.value.message
    assert "rollout abort auth-v2" in (promotion.value.hint or "")
    with pytest.raises(RolloutActiveError) as rollback:
        api.rollback(project, NAME, reason="broken", actor="tester")
    assert f"#{rollout.id}" in rollback.value.message
    assert "a rollback" in rollback.value.message
    # Nothing moved, and the rollout is as it was.
    assert read_skill(project.root / PRODUCTION / NAME).digest == started.stable.digest
    assert read_skill(project.root / STAGING / NAME).digest == started.candidate.digest
    assert (current(project).state, current(project).step_index) == ("active", 0)
    assert len(events(project, "rollout_start")) == 1


def test_start_refused_when_nothing_is_live(project: Project) -> None:
    write_skill(project.root / PROTOTYPE, NAME)
    with pytest.raises(UsageError, match="no skill named 'auth-v2' in the store"):
        api.rollout_start(project, NAME, actor="tester")
    api.list_skills(project)  # registers it, in the first stage only
    with pytest.raises(RolloutError, match="nothing of auth-v2 is live in production") as found:
        api.rollout_start(project, NAME, actor="tester")
    assert found.value.hint is not None and "skillstage promote auth-v2" in found.value.hint
    (promoted,) = api.promote(project, [NAME], actor="tester")  # into staging
    assert promoted.success, promoted.error
    with pytest.raises(RolloutError, match="nothing of auth-v2 is live in production"):
        api.rollout_start(project, NAME, actor="tester", stage="production")
    assert api.rollout_status(project) == []


def test_start_refused_when_the_candidate_is_the_live_version(arms: Arms) -> None:
    project = arms.project
    write_skill(project.root / STAGING, NAME)  # 1.0.0 again, byte for byte
    with pytest.raises(RolloutError, match="is the version live in production already"):
        api.rollout_start(project, NAME, actor="tester")


def test_start_refused_for_a_candidate_that_is_not_the_staged_copy(arms: Arms) -> None:
    project = arms.project
    with pytest.raises(RolloutError) as found:
        api.rollout_start(project, NAME, actor="tester", candidate="9.9.9")
    assert "'9.9.9' is not the copy waiting in staged" in found.value.message
    assert "1.1.0" in found.value.message
    # The version or a digest prefix of the staged copy is accepted (checked by a dry run).
    for ref in ("1.1.0", arms.candidate.digest[:12]):
        probe = api.rollout_start(project, NAME, actor="tester", candidate=ref, dry_run=True)
        assert probe.success, probe.error


def test_failing_gates_refuse_the_start_and_a_dry_run_starts_nothing(arms: Arms) -> None:
    project = arms.project
    probe = api.rollout_start(project, NAME, actor="tester", dry_run=True)
    assert (probe.success, probe.dry_run) == (True, True)
    assert probe.rollout is not None and probe.rollout.weight == 10
    assert not archive_path(project, NAME, "1.1.0", arms.candidate.digest).exists()
    write_skill(
        project.root / STAGING, NAME, extra={"version": "1.1.0"}, test="#!/bin/bash\nexit 1\n"
    )
    refused = api.rollout_start(project, NAME, actor="tester")
    assert refused.success is False
    assert refused.error is not None and refused.error.startswith("gates failed: tests")
    assert [g.gate for g in refused.gates if g.blocks] == ["tests"]
    dry = api.rollout_start(project, NAME, actor="tester", dry_run=True)
    assert dry.success is False and "tests" in (dry.error or "")
    with pytest.raises(UsageError, match="--force needs --reason"):
        api.rollout_start(project, NAME, actor="tester", force=True)
    assert api.rollout_status(project, NAME) == []
    assert events(project, "rollout_start") == []
    assert api.resolve(project, NAME, subject="user-1").arm == "stable"
    with Store.open(project.database_url) as store, store.reading() as tx:
        assert store_rollouts.rollouts(tx, name=NAME) == []
    forced = api.rollout_start(project, NAME, actor="tester", force=True, reason="known flake")
    assert forced.success, forced.error
    (event,) = events(project, "rollout_start")
    assert event.details["forced"] == ["tests"]
    assert event.reason == "known flake"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": [50, 10, 100]}, "must rise"),
        ({"steps": [10, 50]}, "must end at 100"),
        ({"segments": ["foo"]}, "is not KEY=VALUE"),
        ({"step_min_duration": "soon"}, "is not a duration"),
        ({"step_min_executions": 0}, "at least 1"),
        ({"on_failure": "retry"}, "abort or pause"),
        ({"stage": "prototype"}, "is the first stage"),
    ],
)
def test_start_refuses_bad_settings(arms: Arms, options: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        api.rollout_start(arms.project, NAME, actor="tester", **options)
    assert api.rollout_status(arms.project, NAME) == []


def test_retry_after_an_abort_starts_a_new_rollout_from_step_one(started: Arms) -> None:
    project = started.project
    with pytest.raises(RolloutError, match="its last rollout is active"):
        api.rollout_change(project, "retry", NAME, actor="tester")
    api.rollout_change(project, "advance", NAME, actor="tester", force=True, reason="x")
    first = current(project)
    assert first.step_index == 1
    api.rollout_change(project, "abort", NAME, actor="tester", reason="false alarm")
    retried = api.rollout_change(project, "retry", NAME, actor="tester")
    assert (retried.success, retried.action) == (True, "started")
    second = current(project)
    assert second.id != first.id
    assert (second.retry_of, second.step_index, second.weight, second.state) == (
        first.id,
        0,
        10,
        "active",
    )
    assert (second.candidate_digest, second.step_min_executions) == (first.candidate_digest, 20)
    newest = events(project, "rollout_start")[0]
    assert newest.details["retry_of"] == first.id
    assert newest.details["rollout_id"] == second.id


# -- notifications, history, registry ---------------------------------------------------------


def _with_notifications(project: Project, url: str) -> Project:
    """The project as `skillstage init` wrote it, with one notification URL added."""
    config = project.root / "skillstage.toml"
    text = config.read_text()
    assert "urls = []\n" in text
    config.write_text(text.replace("urls = []\n", f'urls = ["{url}"]\n'))
    return load_config_file(config)


def test_an_abort_sends_one_alert_naming_the_rollout(
    started: Arms, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = receiver
    project = _with_notifications(started.project, url)
    served = serve(project, range(400), candidate_fidelity=0.6)
    assert served["candidate"]
    outcome = tick_one(project)
    assert outcome.action == "aborted"
    assert [d["ok"] for d in outcome.deliveries] == [True]
    (alert,) = received
    assert "Rollout aborted" in alert["title"]
    assert "auth-v2 1.1.0" in alert["title"]
    assert "fidelity=0.60" in alert["message"]
    assert "1.0.0" in alert["message"]
    # Ticking again sends nothing more: the rollout is over.
    assert api.rollout_tick(project) == []
    assert len(received) == 1


def test_history_and_the_registry_file_follow_every_change(started: Arms) -> None:
    project = started.project
    assert registry(project)["rollout"]["weight"] == 10
    api.rollout_change(project, "pause", NAME, actor="alice", reason="on call is away")
    assert (registry(project)["rollout"]["state"], registry(project)["rollout"]["weight"]) == (
        "paused",
        0,
    )
    api.rollout_change(project, "resume", NAME, actor="alice")
    assert registry(project)["rollout"]["weight"] == 10
    api.rollout_change(project, "advance", NAME, actor="alice", force=True, reason="enough")
    assert registry(project)["rollout"]["weight"] == 50
    api.rollout_change(project, "abort", NAME, actor="alice", reason="INC-42")
    assert registry(project)["rollout"] is None
    kinds = [e.kind for e in events(project) if e.kind.startswith("rollout_")]
    assert kinds == [
        "rollout_abort",
        "rollout_step",
        "rollout_resume",
        "rollout_pause",
        "rollout_start",
    ]
    by_kind = {e.kind: e for e in events(project)}
    assert by_kind["rollout_pause"].reason == "on call is away"
    assert by_kind["rollout_step"].details["forced"] is True
    assert by_kind["rollout_abort"].reason == "INC-42"
    assert {by_kind[k].actor for k in kinds} == {"alice", "tester"}
    rollout_ids = {by_kind[k].details["rollout_id"] for k in kinds}
    assert rollout_ids == {current(project).id}


def test_sync_rebuilds_a_lost_registry_file(started: Arms, tmp_path: Path) -> None:
    project = started.project
    project.registry_file.unlink()
    api.sync(project, tmp_path / "host-skills", subject="user-1")
    assert registry(project)["rollout"]["weight"] == 10
