"""The rollback drill (seed 001 "Rollback procedure tested", seed 003 "Rollback procedures
tested"): the real promote and rollback run on a scratch copy of one skill, timed step by step,
and the outcome recorded on the project's store as a `drill` event.

The scratch copy is a project of its own in a temporary directory: the skill's directories in
every stage, its archive entries, and a scratch SQLite store loaded with the project's records
from one snapshot of its store (SQLite or PostgreSQL), the executions, tokens and queued
deliveries left out, since nothing in a move reads them. Its
configuration is the project's without what reaches outside: no gates (the drill tests the move,
not the version), no hooks, smoke checks, notifications or git commits, and every path inside
the scratch directory. Nothing live changes but the one event the drill records.

What it exercises, in the last stage (production):
- a newer version waits in a stage that promotes into it: promote that one, then roll back to
  the live one (or, when nothing is live yet, back to where it waited);
- otherwise: roll back to the version a real rollback would restore, then restore the live one
  (a rollback to its version).
After each step the stage's pointer in the store and the digest of its directory on disk must be
the version expected.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from skillstage.config import (
    GitConfig,
    HooksConfig,
    NotificationsConfig,
    Project,
    StageConfig,
)
from skillstage.errors import SkillReadError, SkillstageError, UsageError
from skillstage.lifecycle import fs
from skillstage.lifecycle.archive import directory_digest
from skillstage.lifecycle.drill_record import DRILL_KIND, DrillRecord, latest_drill
from skillstage.lifecycle.locks import skill_lock
from skillstage.skill.read import read_skill
from skillstage.store import Store

__all__ = [
    "DrillRecord",
    "DrillRefused",
    "DrillResult",
    "DrillStep",
    "latest_drill",
    "run_drill",
]

DRILL_REASON = "rollback drill"
# Read by no step of a move: left out of the scratch store.
_NOT_COPIED = (
    "execution",
    "ingest_checkpoint",
    "ingest_quarantine",
    "eval_run",
    "outbox",
    "token",
    "token_event",
)


class DrillRefused(SkillstageError):
    """A drill that cannot run: nothing to roll back to, an unfinished move on record."""

    code = "DRILL_REFUSED"


@dataclass
class DrillStep:
    """One timed step of a drill."""

    step: str  # copy, promote, rollback, restore
    action: str  # what it did, in words
    seconds: float
    ok: bool
    message: str
    expected_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "seconds": round(self.seconds, 4)}


@dataclass
class DrillResult:
    """What `run_drill` did: its steps, the versions it moved, whether it passed."""

    name: str
    stage: str
    live_version: str | None
    candidate_version: str | None
    rollback_version: str | None
    store_copy: str
    steps: list[DrillStep] = field(default_factory=list)
    at: dt.datetime | None = None
    event_id: int | None = None

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.steps)

    @property
    def failed_step(self) -> DrillStep | None:
        return next((step for step in self.steps if not step.ok), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stage": self.stage,
            "passed": self.passed,
            "versions": {
                "live": self.live_version,
                "candidate": self.candidate_version,
                "rollback_to": self.rollback_version,
            },
            "store_copy": self.store_copy,
            "seconds": round(self.seconds, 4),
            "steps": [step.to_dict() for step in self.steps],
            "at": self.at.isoformat() if self.at else None,
            "event_id": self.event_id,
        }


# -- the scratch copy ----------------------------------------------------------------------------


def scratch_project(project: Project, root: Path) -> Project:
    """The project's configuration at `root`, with nothing that reaches outside it: every stage
    in a folder under `root`, no gates, hooks, smoke checks, notifications or git commits."""
    config = project.config
    stages = {
        stage: StageConfig(
            path=f"stages/{number}/{settings.path.rsplit('/', 1)[-1]}", label=settings.label
        )
        for number, (stage, settings) in enumerate(config.stages.items())
    }
    transitions = [msgspec.structs.replace(t, gates=[]) for t in config.transitions]
    scratch = msgspec.structs.replace(
        config,
        database=f"sqlite:///{root / 'state.db'}",
        state_dir=".skillstage",
        stages=stages,
        transitions=transitions,
        hooks=HooksConfig(),
        notifications=NotificationsConfig(urls=[]),
        git=GitConfig(commit=False),
        runtime=msgspec.structs.replace(config.runtime, registry_path=None),
        metrics=msgspec.structs.replace(config.metrics, inbox=None),
    )
    return Project(root, scratch, None)


def _copy_skill(project: Project, scratch: Project, name: str) -> int:
    """The skill's directory in each stage and its archive entries into `scratch`; how many
    directories were copied."""
    copied = 0
    for stage in project.config.stages:
        live = project.stage_path(stage, name)
        if live.is_dir():
            target = scratch.stage_path(stage, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.copy_tree(live, target)
            copied += 1
    archive = project.state_dir / "archive" / name
    if archive.is_dir():
        into = scratch.state_dir / "archive" / name
        into.mkdir(parents=True)
        for entry in sorted(archive.iterdir()):
            if fs.is_scratch(entry.name):
                continue  # a crashed archiving's leftover, not an entry
            if entry.is_dir() and not entry.is_symlink():
                fs.archive_copy(entry, into / entry.name)
                copied += 1
            elif entry.is_file():
                shutil.copyfile(entry, into / entry.name)
    return copied


def _copy_store(store: Store, scratch: Project) -> tuple[Store, str]:
    """A scratch SQLite store holding the project's records, from one snapshot of the store.

    The records only, on either dialect: a copy of a SQLite file would take the executions too
    (most of a store's bytes: 430 MiB at a million), which no step of a move reads."""
    from skillstage.store.copy import copy_records

    copy = Store.open(f"sqlite:///{scratch.root / 'state.db'}")
    try:
        copy_records(store, copy, leave_out=_NOT_COPIED)
    except BaseException:
        copy.close()
        raise
    return copy, f"the {store.dialect} store's records in a scratch SQLite store"


# -- the drill -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Version:
    version: str
    digest: str


def _waiting(
    project: Project, name: str, stage: str, live: _Version | None
) -> tuple[str, _Version] | None:
    """A newer copy of `name` in a stage that promotes into `stage`: (that stage, its version)."""
    for transition in project.config.transitions:
        if transition.to_stage != stage:
            continue
        path = project.stage_path(transition.from_stage, name)
        if not path.is_dir():
            continue
        try:
            skill = read_skill(path, project.config.validation)
        except SkillReadError:
            continue
        if live is None or skill.digest != live.digest:
            return transition.from_stage, _Version(skill.version, skill.digest)
    return None


def run_drill(project: Project, store: Store, name: str, *, actor: str) -> DrillResult:
    """Promote and roll back `name`'s current versions in a scratch copy of the project, timing
    each step, and record the outcome on `store` (a `drill` event). Refuses (`DrillRefused`) a
    skill with nothing to roll back to; the result says which step failed, if one did."""
    stage = list(project.config.stages)[-1]
    with store.reading() as tx:
        if tx.skill_id(name) is None:
            raise UsageError(
                f"no skill named {name!r} in the store",
                hint="`skillstage list` registers the skills on disk and shows them",
            )
    if store.open_journals(name):
        raise DrillRefused(
            f"a promotion or rollback of {name} stopped half-way and is not finished yet: a "
            "drill would exercise what it left",
            hint="`skillstage doctor` finishes it; then drill again",
        )
    current = store.current_assignments(stage=stage, name=name)
    live = _Version(current[0].version, current[0].digest) if current else None
    waiting = _waiting(project, name, stage, live)
    if live is None and waiting is None:
        raise DrillRefused(
            f"{name} is not in {stage} and no version of it waits to be promoted there: there "
            "is nothing to promote or roll back",
            hint=f"`skillstage list` shows where {name} is",
        )
    with tempfile.TemporaryDirectory(
        prefix=f"skillstage-drill-{name}-", ignore_cleanup_errors=True
    ) as temporary:
        scratch = scratch_project(project, Path(temporary) / "project")
        started = time.perf_counter()
        # Under the skill's lock: a promotion meanwhile would be copied half-done.
        with skill_lock(project, store, name):
            directories = _copy_skill(project, scratch, name)
            copy, store_copy = _copy_store(store, scratch)
        try:
            copied = DrillStep(
                "copy",
                f"copied {directories} director{'y' if directories == 1 else 'ies'} of {name} "
                f"and {store_copy}",
                time.perf_counter() - started,
                True,
                "the scratch copy holds the live state",
            )
            result = DrillResult(
                name,
                stage,
                live.version if live else None,
                waiting[1].version if waiting else None,
                None,
                store_copy,
                [copied],
            )
            _exercise(project, scratch, copy, name, stage, live, waiting, result, actor=actor)
        finally:
            copy.close()
            _make_removable(Path(temporary))
    result.at = dt.datetime.now(dt.UTC)
    result.event_id = _record(store, result, live, actor=actor)
    return result


def _exercise(
    project: Project,
    scratch: Project,
    store: Store,
    name: str,
    stage: str,
    live: _Version | None,
    waiting: tuple[str, _Version] | None,
    result: DrillResult,
    *,
    actor: str,
) -> None:
    from skillstage.lifecycle.promote import rollback

    if waiting is not None:
        source_stage, candidate = waiting
        source = scratch.stage_path(source_stage, name)
        result.rollback_version = live.version if live else candidate.version
        steps: list[tuple[str, str, Callable[[], Any], dict[str, _Version | None]]] = [
            (
                "promote",
                f"promote {name} {candidate.version} from {source_stage} to {stage}",
                lambda: _promote(scratch, store, str(source), stage, actor),
                {stage: candidate},
            ),
            (
                "rollback",
                f"roll {stage} back to "
                + (f"{name} {live.version}" if live else f"{source_stage} ({candidate.version})"),
                lambda: rollback(scratch, store, name, reason=DRILL_REASON, actor=actor),
                {stage: live} if live else {stage: None, source_stage: candidate},
            ),
        ]
    else:
        assert live is not None
        from skillstage.lifecycle.move import PromotionError

        started = time.perf_counter()
        try:  # which version a real rollback would restore
            plan = rollback(scratch, store, name, reason=DRILL_REASON, actor=actor, dry_run=True)
        except PromotionError as exc:  # it would be refused: the procedure does not work
            action = f"roll {stage} back from {name} {live.version}"
            elapsed = time.perf_counter() - started
            said = _in_live_terms(project, scratch, str(exc))
            result.steps.append(DrillStep("rollback", action, elapsed, False, said))
            return
        if plan.to_stage != stage or plan.version is None or plan.digest is None:
            raise DrillRefused(
                f"{name} {live.version} is the only version {stage} has had (none is archived "
                "to roll back to), and no newer version waits to be promoted: a drill needs a "
                "version to roll back to",
                hint=f"drill again when a new version of {name} waits in the stage before {stage}",
            )
        previous = _Version(plan.version, plan.digest)
        result.rollback_version = previous.version
        steps = [
            (
                "rollback",
                f"roll {stage} back from {name} {live.version} to {previous.version}",
                lambda: rollback(scratch, store, name, reason=DRILL_REASON, actor=actor),
                {stage: previous},
            ),
            (
                "restore",
                f"restore {name} {live.version} in {stage}",
                lambda: rollback(
                    scratch,
                    store,
                    name,
                    reason=DRILL_REASON,
                    actor=actor,
                    to_version=live.version,
                ),
                {stage: live},
            ),
        ]
    for step, action, run, expected in steps:
        started = time.perf_counter()
        problem = _attempt(run)
        if problem is None:
            problem = _verify(scratch, store, name, expected)
        shown = expected.get(stage)
        result.steps.append(
            DrillStep(
                step,
                action,
                time.perf_counter() - started,
                problem is None,
                _in_live_terms(project, scratch, problem) if problem else _verified(name, expected),
                shown.version if shown else None,
            )
        )
        if problem is not None:
            return


def _promote(scratch: Project, store: Store, source: str, stage: str, actor: str) -> Any:
    from skillstage.lifecycle.promote import promote

    return promote(scratch, store, source, to=stage, actor=actor, overwrite=True)


def _attempt(run: Callable[[], Any]) -> str | None:
    """What stopped a step, or None when it did what it was asked."""
    try:
        outcome = run()
    except (SkillstageError, OSError) as exc:
        return str(exc)
    if not outcome.success:
        return str(outcome.error or "it did not succeed")
    return None


def _verify(
    scratch: Project, store: Store, name: str, expected: dict[str, _Version | None]
) -> str | None:
    """What differs from the expected version in each stage, in the store and on disk."""
    problems = []
    for stage, version in expected.items():
        want = version.digest if version else None
        recorded = store.current_assignments(stage=stage, name=name)
        in_store = recorded[0].digest if recorded else None
        on_disk = directory_digest(scratch, scratch.stage_path(stage, name))
        label = f"{name} {version.version}" if version else "no version"
        if in_store != want:
            problems.append(
                f"the store says {stage} holds "
                + (
                    f"{recorded[0].version} ({in_store[:12]})"
                    if recorded and in_store
                    else "nothing"
                )
                + f", not {label}"
            )
        if on_disk != want:
            problems.append(
                f"{stage}'s directory holds "
                + (f"digest {on_disk[:12]}" if on_disk else "nothing")
                + f", not {label}"
            )
    return "; ".join(problems) or None


def _in_live_terms(project: Project, scratch: Project, text: str) -> str:
    """A message about the scratch copy with its paths where the live ones are: what a real
    rollback would have said."""
    places = [(scratch.state_dir, project.state_dir)] + [
        (scratch.stage_root(stage), project.stage_root(stage)) for stage in project.config.stages
    ]
    for there, here in sorted(places, key=lambda pair: -len(str(pair[0]))):
        text = text.replace(str(there), str(here))
    return text


def _verified(name: str, expected: dict[str, _Version | None]) -> str:
    return "; ".join(
        f"{stage} holds {name} {v.version} ({v.digest[:12]})" if v else f"{stage} holds no version"
        for stage, v in expected.items()
    )


def _make_removable(root: Path) -> None:
    """Archive copies are read-only: make the scratch tree deletable."""
    archive = root / "project" / ".skillstage" / "archive"
    if archive.is_dir():
        fs.delete_scratch(archive)


def _record(store: Store, result: DrillResult, live: _Version | None, *, actor: str) -> int:
    failed = result.failed_step
    return store.append_event(
        DRILL_KIND,
        name=result.name,
        version=live.version if live else None,
        digest=live.digest if live else None,
        to_stage=result.stage,
        actor=actor,
        reason=None if failed is None else f"the {failed.step} step failed: {failed.message}",
        success=result.passed,
        details={
            "passed": result.passed,
            "stage": result.stage,
            "versions": result.to_dict()["versions"],
            "store_copy": result.store_copy,
            "seconds": round(result.seconds, 4),
            "steps": [step.to_dict() for step in result.steps],
        },
        at=result.at,
    )
