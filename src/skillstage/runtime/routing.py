"""Which copy of a skill serves a request: the one routing function (seed 002 §3.3, §6).

`RoutingTable.resolve(name, subject, context)` is the only place that decides. The loader, the
`resolve` and `sync` commands and the server call it; nothing else routes. A table is built from
one read of the store (`build_table`) and is immutable, so a loader swaps a new one in whole and a
resolve in flight sees either the old table or the new one, never a mix. Resolving does no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from skillstage.config import Project
from skillstage.errors import SkillstageError, UsageError
from skillstage.rollout.bucket import bucket, in_segments, random_bucket
from skillstage.store import Transaction, controls
from skillstage.store import rollouts as store_rollouts

STABLE = "stable"
CANDIDATE = "candidate"
DISABLED = "disabled"
FALLBACK = "fallback"  # the version live before, served while a loader's breaker is open


class UnknownSkillError(SkillstageError):
    """A request named a skill that serves nothing in the stage asked for."""

    code = "UNKNOWN_SKILL"


class Resolution(NamedTuple):
    """The copy that serves one request: which version, from where, and why (`arm`).

    `bucket` is the subject's sticky bucket (1..100) when a rollout is active, a random one when
    the request named no subject (`sticky` False), None when no rollout decides."""

    name: str
    version: str
    digest: str
    path: str
    arm: str  # stable, candidate, disabled (the kill switch) or fallback (a breaker open)
    rollout_id: int | None
    stage: str
    subject: str | None = None
    bucket: int | None = None
    sticky: bool = True

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Resolution:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Route:
    """What serves one skill in one stage."""

    name: str
    stage: str
    stable: Resolution
    description: str
    frontmatter: dict[str, Any]
    candidate: Resolution | None = None  # an active rollout's version
    weight: int = 0
    group: str = ""
    segments: dict[str, list[str]] = field(default_factory=dict)
    rollout: store_rollouts.RolloutRecord | None = None  # open (active or paused)
    disabled: bool = False  # the kill switch is on: nothing serves
    fallback: Resolution | None = None  # the version live before (arm FALLBACK), if archived

    def to_dict(self) -> dict[str, Any]:
        """The route as JSON can hold it (what `/v1/routing/table` sends a remote loader)."""
        return {
            "name": self.name,
            "stage": self.stage,
            "stable": self.stable.to_dict(),
            "description": self.description,
            "frontmatter": self.frontmatter,
            "candidate": self.candidate.to_dict() if self.candidate is not None else None,
            "weight": self.weight,
            "group": self.group,
            "segments": self.segments,
            "rollout": self.rollout.to_dict() if self.rollout is not None else None,
            "disabled": self.disabled,
            "fallback": self.fallback.to_dict() if self.fallback is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Route:
        def resolution(key: str) -> Resolution | None:
            value = data.get(key)
            return Resolution.from_dict(value) if value is not None else None

        stable = resolution("stable")
        if stable is None:
            raise ValueError(f"the route of {data.get('name')!r} has no stable version")
        rollout = data.get("rollout")
        return cls(
            name=data["name"],
            stage=data["stage"],
            stable=stable,
            description=data["description"],
            frontmatter=dict(data["frontmatter"]),
            candidate=resolution("candidate"),
            weight=int(data["weight"]),
            group=data["group"],
            segments={key: list(values) for key, values in data["segments"].items()},
            rollout=_rollout_from_dict(rollout) if rollout is not None else None,
            disabled=bool(data["disabled"]),
            fallback=resolution("fallback"),
        )


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value is not None else None


def _rollout_from_dict(data: Mapping[str, Any]) -> store_rollouts.RolloutRecord:
    """`RolloutRecord.to_dict()` read back (its `weight` is derived, so left out)."""
    fields = {key: value for key, value in data.items() if key != "weight"}
    for key in ("step_started_at", "started_at", "ended_at"):
        fields[key] = _time(fields[key])
    fields["steps"] = [int(step) for step in fields["steps"]]
    return store_rollouts.RolloutRecord(**fields)


@dataclass(frozen=True)
class RoutingTable:
    """Every route, from one read of the store at `generation`."""

    generation: int
    routes: dict[tuple[str, str], Route]
    built_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        """The whole table as JSON can hold it; `from_dict` builds an equal table from it, which
        resolves every request as this one does (a remote loader's table)."""
        return {
            "generation": self.generation,
            "built_at": self.built_at.isoformat(),
            "routes": [route.to_dict() for route in self.routes.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoutingTable:
        routes = (Route.from_dict(route) for route in data["routes"])
        built_at = _time(data["built_at"])
        assert built_at is not None
        return cls(int(data["generation"]), {(r.stage, r.name): r for r in routes}, built_at)

    def route(self, name: str, stage: str) -> Route:
        found = self.routes.get((stage, name))
        if found is None:
            raise self._unknown(name, stage)
        return found

    def names(self, stage: str) -> list[str]:
        return sorted(name for (s, name) in self.routes if s == stage)

    def resolve(
        self,
        name: str,
        stage: str,
        subject: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Resolution:
        """The copy of `name` that serves this request in `stage`.

        With an active rollout, a request whose context is in the rollout's segments lands in
        the subject's sticky bucket (a random one without a subject) and gets the candidate when
        the bucket is at most the rollout's weight; every other request gets the stable version.
        """
        route = self.routes.get((stage, name))
        if route is None:
            raise self._unknown(name, stage)
        stable = route.stable
        if route.disabled:
            return stable._replace(arm=DISABLED, rollout_id=None, subject=subject)
        candidate = route.candidate
        if candidate is None or (route.segments and not in_segments(route.segments, context)):
            if subject is None:
                return stable
            return Resolution(
                stable.name,
                stable.version,
                stable.digest,
                stable.path,
                stable.arm,
                stable.rollout_id,
                stage,
                subject,
            )
        if subject is None:
            drawn, sticky = random_bucket(), False
        else:
            drawn, sticky = bucket(route.group, subject), True
        chosen = candidate if drawn <= route.weight else stable
        return Resolution(
            chosen.name,
            chosen.version,
            chosen.digest,
            chosen.path,
            chosen.arm,
            candidate.rollout_id,
            stage,
            subject,
            drawn,
            sticky,
        )

    def _unknown(self, name: str, stage: str) -> UnknownSkillError:
        elsewhere = sorted(s for (s, n) in self.routes if n == name)
        if elsewhere:
            hint = f"{name} serves in {', '.join(elsewhere)}: ask for that stage"
        else:
            hint = "`skillstage list` shows the skills and their stages"
        return UnknownSkillError(f"no skill named {name!r} is live in {stage}", hint=hint)


def serving_stage(project: Project, stage: str | None) -> str:
    """`stage`, or the last stage (production) when None; a `UsageError` for an unknown one."""
    stages = list(project.config.stages)
    chosen = stage or stages[-1]
    if chosen not in project.config.stages:
        raise UsageError(f"unknown stage {chosen!r}", hint=f"stages: {', '.join(stages)}")
    return chosen


def archive_entry(project: Project, name: str, version: str, digest: str) -> Path:
    """Where a version's immutable copy lives (the promoter's archive)."""
    return project.state_dir / "archive" / name / f"{version}-{digest[:12]}"


def build_table(project: Project, tx: Transaction, *, built_at: dt.datetime) -> RoutingTable:
    """The routing table as the store has it now (one read)."""
    generation = store_rollouts.generation(tx)
    disabled = controls.disabled_routes(tx)
    previous = store_rollouts.previous_versions(tx)
    routes: dict[tuple[str, str], Route] = {}
    for row in store_rollouts.routing_rows(tx):
        if row.stage not in project.config.stages:
            continue  # a stage the config no longer has
        live = str(project.stage_path(row.stage, row.name))
        rollout = row.rollout
        stable = Resolution(
            row.name,
            row.version,
            row.digest,
            live,
            STABLE,
            rollout.id if rollout is not None else None,
            row.stage,
        )
        candidate = None
        if rollout is not None and rollout.state == "active":
            candidate = Resolution(
                row.name,
                rollout.candidate_version,
                rollout.candidate_digest,
                str(
                    archive_entry(
                        project, row.name, rollout.candidate_version, rollout.candidate_digest
                    )
                ),
                CANDIDATE,
                rollout.id,
                row.stage,
            )
        fallback = None
        if (row.name, row.stage) in previous:
            version, digest = previous[(row.name, row.stage)]
            fallback = Resolution(
                row.name,
                version,
                digest,
                str(archive_entry(project, row.name, version, digest)),
                FALLBACK,
                None,
                row.stage,
            )
        off = disabled.get(row.name, set())
        description = row.frontmatter.get("description")
        routes[(row.stage, row.name)] = Route(
            name=row.name,
            stage=row.stage,
            stable=stable,
            description=description if isinstance(description, str) else "",
            frontmatter=row.frontmatter,
            candidate=candidate,
            weight=rollout.weight if rollout is not None else 0,
            group=rollout.group_id if rollout is not None else row.name,
            segments=rollout.segments if rollout is not None else {},
            rollout=rollout,
            disabled=bool(off & {row.stage, controls.EVERY_STAGE}),
            fallback=fallback,
        )
    return RoutingTable(generation, routes, built_at)
