"""Seed 000's TypeScript API in Python: `PromotionService` and `SLAEnforcer`.

Thin classes over the functions the CLI calls (`api.promote`, `api.list_skills`,
`lifecycle.sla.check`, `lifecycle.sla.enforce`), so library users and `skillstage` share one code
path and get the same answers. Each call opens the project's store and closes it again.

    service = PromotionService(project)  # or a project directory, or its skillstage.toml
    result = service.promote(".claude/skills/staging/auth-v2", git_commit=True, notify=True)
    for skill in service.check_staleness():
        print(skill.name, skill.age_hours, skill.sla_breach_hours)

    enforcer = SLAEnforcer(project, auto_promote=True, notify_stale=True)
    outcome = enforcer.enforce_sla()
    print(outcome.stale_skills_found, outcome.promoted, outcome.notified)
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from skillstage import api
from skillstage.api import ListedSkill
from skillstage.arguments import checked
from skillstage.config import Project, load_config_file, load_project
from skillstage.lifecycle import sla
from skillstage.lifecycle.promote import PromotionResult
from skillstage.lifecycle.readiness import Readiness, VersionComparison
from skillstage.lifecycle.sla import EnforcementResult, StaleSkill
from skillstage.metrics.summary import MetricsSummary

__all__ = [
    "EnforcementResult",
    "ListedSkill",
    "PromotionResult",
    "PromotionService",
    "Registry",
    "SLAEnforcer",
    "StaleSkill",
]

ProjectLike = Project | str | os.PathLike[str]


@checked
def as_project(project: ProjectLike) -> Project:
    """A `Project` as is; a directory: the project at or above it; a file: that config file
    (`skillstage.toml`, or `pyproject.toml` with `[tool.skillstage]`)."""
    if isinstance(project, Project):
        return project
    path = Path(project)
    if path.is_file():
        return load_config_file(path)
    return load_project(start=path)


class PromotionService:
    """Seed 000's `SkillPromotionService`: promote, list staged skills, find stale ones."""

    @checked
    def __init__(self, project: ProjectLike) -> None:
        self.project = as_project(project)

    @checked
    def promote(
        self,
        path: str | os.PathLike[str],
        auto_deploy: bool = False,
        git_commit: bool = False,
        notify: bool = False,
        promoted_by: str | None = None,
    ) -> PromotionResult:
        """Promote the skill at `path` (or named `path`) to its next stage, without asking.

        Failing gates give a result with `success` False and the reason in `error` (the attempt
        is recorded); usage errors (not a skill of this project) raise `SkillstageError`.
        """
        (result,) = api.promote(
            self.project,
            [os.fspath(path)],
            actor=promoted_by,
            deploy=auto_deploy,
            git_commit=git_commit,
            notify=notify,
        )
        return result

    @checked
    def list_staged_skills(
        self, stage: str | None = None, *, now: dt.datetime | None = None
    ) -> list[ListedSkill]:
        """The skills waiting in `stage`, oldest first; by default in every stage with an SLA
        (the default config: staged). Each has `name`, `version`, `age_hours`, `path`."""
        stages = (
            [stage]
            if stage is not None
            else [n for n, s in self.project.config.stages.items() if s.sla_hours is not None]
        )
        listing = api.list_skills(self.project, stage=stage, now=now)
        waiting = [skill for skill in listing.skills if skill.stage in stages]
        return sorted(waiting, key=lambda skill: skill.entered_at)

    @checked
    def check_staleness(self, *, now: dt.datetime | None = None) -> list[StaleSkill]:
        """The skills over their stage's SLA with no active override (`skillstage sla check`):
        each has `name`, `age_hours` and `sla_breach_hours`."""
        return sla.check(self.project, now=now).breaches


class SLAEnforcer:
    """Seed 000's `PromotionSLAEnforcer` (`skillstage sla enforce`)."""

    @checked
    def __init__(
        self,
        project: ProjectLike,
        auto_promote: bool = False,
        notify_stale: bool = False,
        enable_git_commit: bool = False,
        enable_auto_deploy: bool = False,
        actor: str | None = None,
    ) -> None:
        self.project = as_project(project)
        self.auto_promote = auto_promote
        self.notify_stale = notify_stale
        self.enable_git_commit = enable_git_commit
        self.enable_auto_deploy = enable_auto_deploy
        self.actor = actor

    @checked
    def enforce_sla(
        self, *, dry_run: bool = False, now: dt.datetime | None = None
    ) -> EnforcementResult:
        """Find the stale skills and act on them as configured; see `lifecycle.sla.enforce`.
        The result has `stale_skills_found`, `promoted`, `notified`, `failed` and `details`."""
        return sla.enforce(
            self.project,
            auto_promote=self.auto_promote,
            notify=self.notify_stale,
            git_commit=self.enable_git_commit,
            deploy=self.enable_auto_deploy,
            dry_run=dry_run,
            actor=self.actor,
            now=now,
        )


class Registry:
    """Seed 002's `WRESkillsRegistry` query helpers (§5.4), over the same code as the CLI's
    `status`, `compare` and `metrics`. Each call ingests the metrics inbox first.

        registry = Registry(project)
        ready = registry.check_promotion_readiness("spam-filter", "staged", "production")
        metrics = registry.get_skill_metrics("spam-filter", timeframe="last_7_days")
        comparison = registry.compare_skill_versions("spam-filter", "prototype", "staged")
    """

    @checked
    def __init__(self, project: ProjectLike) -> None:
        self.project = as_project(project)

    @checked
    def check_promotion_readiness(
        self, skill_name: str, from_state: str | None = None, to_state: str | None = None
    ) -> Readiness:
        """Every gate of the move, with actual values, requirements and what is missing."""
        return api.readiness(self.project, skill_name, from_stage=from_state, to_stage=to_state)

    @checked
    def get_skill_metrics(
        self,
        skill_name: str,
        timeframe: str = "7d",
        version: str | None = None,
        *,
        include_benchmark: bool = False,
    ) -> MetricsSummary:
        """Count, means, rates and execution-time p50/p95/p99/max over the timeframe, of the
        executions in use (with `include_benchmark`, `skillstage eval`'s runs too)."""
        return api.skill_metrics(
            self.project,
            skill_name,
            timeframe=timeframe,
            version=version,
            include_benchmark=include_benchmark,
        )

    @checked
    def compare_skill_versions(
        self, skill_name: str, version_a: str, version_b: str
    ) -> VersionComparison:
        """Both values, difference, test, p-value and effect size for each metric."""
        return api.compare_versions(self.project, skill_name, version_a, version_b)
