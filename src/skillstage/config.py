"""Project configuration: `skillstage.toml`, or `[tool.skillstage]` in `pyproject.toml`.

Read with `tomllib` into msgspec Structs. An unknown key or a bad value is a `ConfigError` that
names the file and the dotted key. Defaults follow the seeds: seed 000's stage paths and 48-hour
staging SLA, seed 002's promotion thresholds.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import msgspec
import msgspec.inspect

from skillstage.errors import ConfigError

if TYPE_CHECKING:
    from skillstage.metrics.compare import Margins

CONFIG_FILENAME = "skillstage.toml"
DATABASE_ENV = "SKILLSTAGE_DATABASE_URL"
CONFIG_ENV = "SKILLSTAGE_CONFIG"

MiB = 1024 * 1024

# Every number has an upper bound too: `inf` or 1e20 would pass "greater than 0" and then overflow
# a clock or a timeout far from the file that said it.
_Seconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]  # a timeout: up to a day
_Minutes = Annotated[float, msgspec.Meta(gt=0, le=525_600)]  # up to a year
_Hours = Annotated[float, msgspec.Meta(gt=0, le=876_000)]  # up to a century
_Days = Annotated[float, msgspec.Meta(gt=0, le=36_500)]  # up to a century
_Milliseconds = Annotated[float, msgspec.Meta(gt=0, le=31_536_000_000)]  # up to a year
_Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
_Rate = Annotated[float, msgspec.Meta(gt=0, le=1)]  # a rate that must stay below this
_Count = Annotated[int, msgspec.Meta(ge=0)]
_CoveragePercent = Annotated[float, msgspec.Meta(ge=0, le=100)]
_PositiveCount = Annotated[int, msgspec.Meta(ge=1)]

# Every table is a Struct with kw_only=True (msgspec does not inherit it) and
# forbid_unknown_fields=True (a misspelt key is an error, not ignored). A `__post_init__` check of
# one field raises ValueError("<field>: <problem>"), so the error can name the key.


class StageConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One lifecycle stage: where its skills live and how long a version may wait in it."""

    path: str  # path template; its last component contains {name}
    sla_hours: _Hours | None = None
    label: str | None = None  # the stage's name in messages (seed 000 says "staging")
    # A check run after every promotion (or rollout completion) into this stage (seed 001 Step 6
    # "post-promotion validation"); exit 0 passes. A failure rolls the version back at once.
    smoke: str | None = None

    def __post_init__(self) -> None:
        parts = self.path.rstrip("/").split("/")
        if self.path.count("{name}") != 1 or "{name}" not in parts[-1]:
            raise ValueError(
                "path: must contain {name} exactly once, in its last component "
                "(e.g. '.claude/skills/staging/{name}')"
            )
        if re.search(r"\{(?!name\})", self.path):
            raise ValueError("path: the only placeholder allowed is {name}")
        self.path = self.path.rstrip("/")

    @property
    def root(self) -> str:
        """The directory that holds this stage's skill directories."""
        return self.path.rsplit("/", 1)[0] if "/" in self.path else "."

    def directory_pattern(self) -> re.Pattern[str]:
        """A regex over a directory name under `root` that captures the skill name."""
        prefix, suffix = self.path.rsplit("/", 1)[-1].split("{name}")
        # DOTALL: a name with a newline in it is matched (and then reported as not a valid
        # name), not silently left out.
        return re.compile(
            re.escape(prefix) + r"(?P<name>.+?)" + re.escape(suffix) + r"\Z", re.DOTALL
        )


class Thresholds(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Metric thresholds of one transition (seed 002 §2), read by its `metrics` gate."""

    # What the gate measures: the latest benchmark run of the content (`skillstage eval`), or
    # the live executions of its digest.
    evidence: Literal["evals", "executions"] = "executions"
    min_pattern_fidelity: _Fraction = 0.90
    min_outcome_quality: _Fraction = 0.85
    # Strictly below: 0 could never pass (0.001 allows none in fewer than 1,000 runs).
    max_false_positive_rate: _Rate = 0.05
    max_critical_false_negatives: _Count = 0
    require_all_benchmark_cases: bool = True
    min_executions: _Count = 100
    critical_failure_window: _PositiveCount = 100
    # Seed 002 §3.1: a version still short of min_executions this long after entering the
    # transition's source stage is demoted by `skillstage demote-check`.
    min_executions_within_days: _Days = 7
    max_mean_execution_time_ms: _Milliseconds | None = None
    forbid_regression: bool = True
    # Below this many executions on either side, a comparison says "insufficient data".
    min_comparison_sample: _PositiveCount = 10
    # Significance level of the regression test (seed 002: "no worse than prototype baseline").
    regression_p_value: _Fraction = 0.05
    # How much worse, besides significantly, a metric must be to be a regression: a mean score
    # lower by more than this, a rate higher by more than this, a mean time more than this many
    # times the baseline's (benchmark runs time a fresh process; live runs may be timed apart).
    regression_score_margin: _Fraction = 0.02
    regression_rate_margin: _Fraction = 0.02
    regression_time_ratio: Annotated[float, msgspec.Meta(ge=1, le=1000)] = 1.5
    # The `coverage` gate's minimum for this transition, in percent (seed 001: 70 into staging,
    # 80 into production); unset: [quality.coverage] minimum.
    min_coverage: _CoveragePercent | None = None
    # Seed 001's staging → production facts (fact_gates.py). `uptime`: at least this percent of
    # the version's executions in its current stage over the last `uptime_days` raised no
    # exception, from at least `min_uptime_executions` of them (one exception in 200 is 99.5%).
    min_uptime: _CoveragePercent = 99.5
    uptime_days: _Days = 7
    min_uptime_executions: _Count = 200
    # `rollback-drill`: the skill's latest `skillstage drill` passed at most this long ago.
    max_drill_age_days: _Days = 7

    @property
    def margins(self) -> Margins:
        from skillstage.metrics.compare import Margins  # (not on every command's start)

        return Margins(
            self.regression_score_margin, self.regression_time_ratio, self.regression_rate_margin
        )

    def comparing(self) -> dict[str, Any]:
        """The keyword arguments of `compare_samples` these thresholds ask for."""
        return {
            "min_sample": self.min_comparison_sample,
            "alpha": self.regression_p_value,
            "margins": self.margins,
        }


class TransitionConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An allowed move between two stages and the gates that guard it."""

    from_stage: str = msgspec.field(name="from")
    to_stage: str = msgspec.field(name="to")
    gates: list[str]
    thresholds: Thresholds = msgspec.field(default_factory=Thresholds)


class ValidationPolicy(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What `skillstage validate` requires of a skill directory (seed 000 §"Validation Checks")."""

    required_files: list[str] = msgspec.field(default_factory=lambda: ["SKILL.md", "execute.sh"])
    executable_files: list[str] = msgspec.field(default_factory=lambda: ["execute.sh", "test.sh"])
    recommended_files: list[str] = msgspec.field(default_factory=lambda: ["test.sh"])
    max_files: _PositiveCount = 1000
    max_total_bytes: _PositiveCount = 50 * MiB
    max_body_lines: _PositiveCount = 500
    allowed_extra_fields: list[str] = msgspec.field(default_factory=list)
    test_timeout_seconds: _Seconds = 30
    test_failure: Literal["error", "warning"] = "error"


def _default_stages() -> dict[str, StageConfig]:
    return {
        "prototype": StageConfig(path=".claude/skills/prototype/{name}"),
        "staged": StageConfig(
            path=".claude/skills/staging/{name}", sla_hours=48.0, label="staging"
        ),
        "production": StageConfig(path=".claude/skills/{name}"),
    }


STATIC_GATES = ["structure", "schema", "spec", "tests", "conflicts", "dependencies", "security"]
# Seed 002's gates: the transition's metric thresholds, and a recorded human sign-off. Opt-in per
# transition (seed 000's workflow has neither).
POLICY_GATES = ["metrics", "approval"]
# Seed 001's quality gates for Python components, run with real tools ([quality]); `tests` is
# among the static gates (test.sh for a skill, pytest for a Python project).
QUALITY_GATES = ["coverage", "lint", "types", "secrets", "integration-tests-exist"]
# Seed 001's staging → production facts the store knows (fact_gates.py): a rollback drill that
# passed, the version's uptime, a monitoring target configured.
FACT_GATES = ["rollback-drill", "uptime", "monitoring"]
BUILTIN_GATE_NAMES = [*STATIC_GATES, *POLICY_GATES, *QUALITY_GATES, *FACT_GATES]


# Seed 002 §2: a version leaving the first stage has only its benchmark runs to show; later
# transitions read live executions. A transition out of the first stage takes these defaults for
# the thresholds it does not set, every other one those of `Thresholds`.
FIRST_TRANSITION_THRESHOLDS: dict[str, Any] = {
    "evidence": "evals",
    "min_executions": 0,
    "forbid_regression": False,
}


def _default_transitions() -> list[TransitionConfig]:
    return [
        TransitionConfig(
            from_stage="prototype",
            to_stage="staged",
            gates=list(STATIC_GATES),
            thresholds=Thresholds(**FIRST_TRANSITION_THRESHOLDS),
        ),
        TransitionConfig(
            from_stage="staged",
            to_stage="production",
            gates=list(STATIC_GATES),
            thresholds=Thresholds(),
        ),
    ]


class HooksConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Commands run after a state change (seed 000 auto-deploy, seed 002 re-index). Each is a
    command line, run from the project root with the skill's details in SKILLSTAGE_* variables."""

    deploy: str | None = None  # its last line of output is the deployment id
    post_promote: str | None = None
    post_rollback: str | None = None
    reindex: str | None = None  # after every state change
    timeout_seconds: _Seconds = 60
    retries: Annotated[int, msgspec.Meta(ge=0, le=20)] = 3  # seed 001: 3 retries
    # seed 001: exponential backoff from 1 s
    retry_base_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 1


NotificationEvent = Literal[
    "promoted",
    "rolled_back",
    "gate_failed",
    "sla_breach",
    "rollout_aborted",
    "rollout_paused",
    "alert",
    "recovered",
    "disabled",
    "enabled",
]
NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = get_args(NotificationEvent)
Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)


class NotificationTarget(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One URL that only hears of some things: `min_severity = "critical"` pages on automated
    rollbacks and critical alerts only; `events` narrows it further."""

    url: str
    min_severity: Severity = "info"
    events: list[NotificationEvent] | None = None


class NotificationsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where to tell people: Apprise URLs (slack://, mailto://, json:// webhooks, ...), each a
    plain URL (hears every event below) or a table with its own severity and events."""

    urls: list[str | NotificationTarget] = msgspec.field(default_factory=list)
    events: list[NotificationEvent] = msgspec.field(
        default_factory=lambda: list(NOTIFICATION_EVENTS)
    )


class GitConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Seed 000's "Promote with Git Commit"."""

    commit: bool = False  # commit every promotion and rollback without --git-commit
    timeout_seconds: _Seconds = 30


class CommandGateConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A gate that runs a command and passes on exit 0 (seed 001's ruff, pyright, detect-secrets
    gates plug in this way)."""

    command: str
    timeout_seconds: _Seconds = 300


class CoverageGateConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The `coverage` gate: the component's tests run under coverage.py (or a report it made)."""

    minimum: _CoveragePercent = 60  # percent; a transition's thresholds.min_coverage wins
    # Unset: run `python -m coverage run -m pytest` in a scratch copy of the component. Else a
    # report the component carries, relative to its directory: a Cobertura `coverage.xml`, or a
    # coverage.py data file (`.coverage`, read with `python -m coverage json`).
    report: str | None = None
    # coverage run --source (seed 001's --cov=src/<component>); empty: the component's own
    # coverage configuration decides what is measured.
    source: list[str] = msgspec.field(default_factory=list)
    show_files: Annotated[int, msgspec.Meta(ge=0, le=100)] = 3  # files with most missing lines

    def __post_init__(self) -> None:
        if self.report is not None and not self.report.strip():
            raise ValueError("report: empty; leave it out to run the tests under coverage")


class QualityTestsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The `tests` gate: which runner a component gets."""

    # auto: test.sh when the component has one (a skill, as always), else pytest when it is a
    # Python project (pyproject.toml, setup.py, setup.cfg, pytest.ini, tox.ini, conftest.py or a
    # tests/ directory) with a test_*.py or *_test.py file, else skipped.
    runner: Literal["auto", "test.sh", "pytest"] = "auto"
    pytest_args: list[str] = msgspec.field(default_factory=list)  # e.g. ["-m", "not slow"]


class LintGateConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The `lint` gate: ruff."""

    ruff: str | None = None  # a path; unset: beside the interpreter, then on PATH
    paths: list[str] = msgspec.field(default_factory=lambda: ["."])


class TypesGateConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The `types` gate: pyright when installed, else mypy where the component configures it."""

    checker: Literal["auto", "pyright", "mypy"] = "auto"
    pyright: str | None = None  # paths; unset: beside the interpreter, then on PATH
    mypy: str | None = None
    paths: list[str] = msgspec.field(default_factory=lambda: ["."])


class SecretsGateConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The `secrets` gate: detect-secrets against a baseline, or the built-in scanner."""

    # auto: detect-secrets when a baseline is configured, else the built-in scanner (fast, no
    # baseline: every hit fails).
    scanner: Literal["auto", "builtin", "detect-secrets"] = "auto"
    # The detect-secrets baseline, relative to the component's directory (it moves with it):
    # a secret recorded there passes, a new one fails.
    baseline: str | None = None
    detect_secrets: str | None = None  # a path; unset: beside the interpreter, then on PATH


class IntegrationGateConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The `integration-tests-exist` gate: a test file under one of `paths`, or one that uses
    the pytest marker `marker`."""

    paths: list[str] = msgspec.field(default_factory=lambda: ["tests/integration"])
    marker: str | None = "integration"


class QualityConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Seed 001's quality gates for Python components: the tools and their options."""

    # The interpreter that runs pytest, coverage and mypy (relative to the project root, or a
    # name on PATH); unset: the component's .venv/bin/python if it has one, else skillstage's.
    python: str | None = None
    timeout_seconds: _Seconds = 600  # per tool run
    coverage: CoverageGateConfig = msgspec.field(default_factory=CoverageGateConfig)
    tests: QualityTestsConfig = msgspec.field(default_factory=QualityTestsConfig)
    lint: LintGateConfig = msgspec.field(default_factory=LintGateConfig)
    types: TypesGateConfig = msgspec.field(default_factory=TypesGateConfig)
    secrets: SecretsGateConfig = msgspec.field(default_factory=SecretsGateConfig)
    integration: IntegrationGateConfig = msgspec.field(default_factory=IntegrationGateConfig)


class MetricsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Execution metrics (seed 002 §5.2, §5.4, §7)."""

    inbox: str | None = None  # the append-only JSONL inbox; default <state_dir>/metrics
    # Lines decoded and checkpointed together (seed 002 §5.4's --batch-size); a transaction
    # groups batches up to 100,000 records.
    batch_size: _PositiveCount = 1000
    lag_alert_hours: _Hours = 1.0  # seed 002 §7: alert if ingestion falls behind > 1 hour
    eval_timeout_seconds: _Seconds = 30  # per benchmark case run through execute.sh
    # How far after now a record may be dated (writers' clocks drift); later ones are refused
    # by `metrics record` and quarantined by ingestion.
    max_clock_skew_minutes: _Minutes = 10

    @property
    def max_clock_skew(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.max_clock_skew_minutes)


class ApprovalsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Human sign-off (seed 002 §4): who may approve, and the four-eyes rule."""

    approvers: list[str] = msgspec.field(default_factory=list)
    allow_self_approval: bool = False  # True lets a skill's author approve it

    def __post_init__(self) -> None:
        for name in self.approvers:
            if not name.strip() or name != name.strip():
                raise ValueError(f"approvers: {name!r} is not a name (blank, or spaces around it)")
        twice = sorted({name for name in self.approvers if self.approvers.count(name) > 1})
        if twice:
            raise ValueError(f"approvers: {', '.join(twice)} listed twice")


_Percent = Annotated[int, msgspec.Meta(ge=1, le=100)]


class RolloutConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Gradual rollouts (seed 002 §3.3: 10% of traffic, then 50%, then all): the defaults of
    `skillstage rollout start`."""

    steps: list[_Percent] = msgspec.field(default_factory=lambda: [10, 50, 100])
    # A step succeeds only after lasting this long and with this many executions on each arm.
    step_min_duration_minutes: Annotated[float, msgspec.Meta(ge=0, le=525_600)] = 60
    step_min_executions: _PositiveCount = 100
    # What a failed step does: abort (all traffic back to the stable version), or pause for a
    # person to decide (teams move from manual to automatic rollback gradually).
    on_failure: Literal["abort", "pause"] = "abort"

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("steps: at least one step is required, e.g. [10, 50, 100]")
        if any(b <= a for a, b in itertools.pairwise(self.steps)):
            raise ValueError(f"steps: {self.steps} must rise, e.g. [10, 50, 100]")
        if self.steps[-1] != 100:
            raise ValueError(f"steps: {self.steps} must end at 100, where the rollout completes")


class RuntimeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The loader agent hosts call, and the registry file exported for other tools."""

    # How often a loader checks the store for a change to what serves (a promotion, a rollback,
    # a rollout step).
    refresh_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 250
    # Seed 002's skills_registry.json, rewritten after every change; default
    # <state_dir>/skills_registry.json. An export for tools without Python: the store stays the
    # truth.
    registry_path: str | None = None
    # The agent seed 002's registry names for every skill (`primary_agent`), unless a skill's
    # frontmatter says `metadata.primary_agent`.
    primary_agent: str | None = None
    # The loader's circuit breaker, per host and per version (seed 002 §3.3): after this many
    # failed executions in a row (an exception, or a critical false negative) the loader serves
    # the previous good version at once, and tries the version again after breaker_reset_seconds
    # (one request goes through; a success closes the breaker).
    breaker_fail_max: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 5
    breaker_reset_seconds: Annotated[float, msgspec.Meta(ge=0.01, le=86_400)] = 60


class RuntimeCheckConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`skillstage check-runtime`: its limits (seed 003's runtime tests and memory alerts)."""

    # The peak memory (RSS) of a process that loaded every production skill.
    memory_warning_mb: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] = 75
    memory_critical_mb: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] = 100
    # One load taking longer fails the check (and a worker stuck that long is stopped).
    load_timeout_seconds: _Seconds = 10
    # Loads answered from the cache on a second pass over the same skills; below it warns.
    min_cache_hit_rate: _Fraction = 0.90

    def __post_init__(self) -> None:
        if self.memory_warning_mb > self.memory_critical_mb:
            raise ValueError(
                f"memory_warning_mb: {self.memory_warning_mb:g} is above memory_critical_mb "
                f"({self.memory_critical_mb:g}): the warning comes first"
            )


class TriggerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """When the watcher rolls a live version back by itself (seed 002 §3.1's automated rollback
    triggers, with its numbers as defaults; seed 001's error rate and performance degradation as
    optional ones). A limit set to nothing (omitted in a skill's override is "as the project
    says"; `false`/absent here for the optional ones) is not checked."""

    window: _PositiveCount = 10  # fidelity, quality and time: the last N executions
    rate_window: _PositiveCount = 20  # false positives, exceptions, errors: the last N
    min_pattern_fidelity: _Fraction | None = 0.85
    min_outcome_quality: _Fraction | None = 0.80
    max_critical_false_negatives: _Count | None = 0  # any one rolls back
    max_false_positive_rate: _Fraction | None = 0.10
    max_exception_rate: _Fraction | None = 0.05
    max_execution_time_ratio: Annotated[float, msgspec.Meta(gt=1, le=1000)] | None = 3.0
    # The baseline a version's time is compared with: its executions before it entered the
    # stage (the latest this many), or else its first this many in the stage.
    baseline_executions: _PositiveCount = 20
    max_error_rate: _Fraction | None = None  # seed 001: 0.01 (an exception or a miss)
    max_performance_degradation: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    # A command whose failure (exit not 0, or no answer within health_timeout_seconds) rolls
    # back: the skill's data store, its MCP endpoint. Per skill in [triggers.skills.NAME].
    health_check: str | None = None
    dependencies: list[str] = msgspec.field(default_factory=list)  # names in [dependencies]
    health_timeout_seconds: _Seconds = 10
    # Per-skill overrides: [triggers.skills.NAME] with any of the keys above.
    skills: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)

    def for_skill(self, name: str, metadata: Any = None) -> TriggerConfig:
        """The triggers of skill `name`: these, then [triggers.skills.NAME], then the skill's
        frontmatter `metadata.triggers` (a table, or "key=value, ..." text)."""
        merged = {f: getattr(self, f) for f in self.__struct_fields__ if f != "skills"}
        merged.update(self.skills.get(name, {}))
        found = metadata.get("triggers") if isinstance(metadata, dict) else None
        if isinstance(found, str):
            found = dict(
                part.split("=", 1) for part in found.replace(";", ",").split(",") if "=" in part
            )
        if isinstance(found, dict):
            merged.update({k.strip(): _none_or(v) for k, v in found.items()})
        return msgspec.convert(merged, TriggerConfig, strict=False)


def _none_or(value: Any) -> Any:
    """Frontmatter text: "none", "off" and "" switch a trigger off."""
    if isinstance(value, str):
        text = value.strip()
        return None if text.lower() in ("", "none", "off", "false") else text
    return value


class DependencyConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Something skills need at run time, checked by a command each watch pass."""

    command: str
    timeout_seconds: _Seconds = 10
    skills: list[str] = msgspec.field(default_factory=list)  # who needs it; empty: every skill


class WatchConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The watcher (`skillstage watch`): which stages it guards, how often, as whom."""

    stages: list[str] | None = None  # default: the last stage (production)
    interval_seconds: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 30
    actor: str = "skillstage-watch"


class AlertsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Warning and critical alert levels (seed 003's thresholds), each announced once per
    episode, and again when it recovers. Errors are exceptions and misses."""

    window: _PositiveCount = 100  # the last N executions of each live version
    min_executions: _PositiveCount = 20  # fewer than this: no alert yet
    error_rate_warning: _Fraction | None = 0.05
    error_rate_critical: _Fraction | None = 0.10
    performance_warning: Annotated[float, msgspec.Meta(gt=1, le=1000)] | None = 1.20
    performance_critical: Annotated[float, msgspec.Meta(gt=1, le=1000)] | None = 1.50
    # An execution's memory, when the host records it as tag memory_mb.
    memory_warning_mb: Annotated[float, msgspec.Meta(gt=0)] | None = 75
    memory_critical_mb: Annotated[float, msgspec.Meta(gt=0)] | None = 100


class BackupsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Backups (`skillstage backup`): how many are kept under `<state_dir>/backups/`."""

    keep: _PositiveCount = 10  # after each new backup, all but the newest N are deleted
    # gzip level of the store's copy, most of a backup's bytes: 1-3 ISA-L's deflate (1: the
    # fastest that compresses), 0 stores it uncompressed, 4-9 zlib's (smaller, many times slower)
    store_compression_level: Annotated[int, msgspec.Meta(ge=0, le=9)] = 1


class MonitoringConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where this project's skills are watched from (the `monitoring` gate's evidence): the
    Prometheus server that scrapes `skillstage serve`'s /metrics, and the alerting endpoint."""

    prometheus_url: str | None = None
    alert_url: str | None = None

    def __post_init__(self) -> None:
        for key in ("prometheus_url", "alert_url"):
            value = getattr(self, key)
            if value is not None and not re.match(r"[A-Za-z][\w+.-]*://\S+\Z", value):
                raise ValueError(f"{key}: {value!r} is not a URL (e.g. http://prometheus:9090)")


_MaturityLabel = Annotated[str, msgspec.Meta(pattern=r"^[^\"'\r\n]+$", max_length=100)]


class MaturityConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Seed 001's maturity metadata: a promotion with a git commit rewrites the component's
    maturity lines (`__maturity__`, `Maturity Stage:`, the README's `**Status:**`) in the
    promoted copy, inside that commit (skill/maturity.py)."""

    enabled: bool = False
    # stage → what its components say they are; default the stage's label, else its name
    labels: dict[str, _MaturityLabel] = msgspec.field(default_factory=dict)
    files: list[Literal["__init__.py", "README.md"]] = msgspec.field(
        default_factory=lambda: ["__init__.py", "README.md"]
    )


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The whole of `skillstage.toml`."""

    # SQLAlchemy URL or a SQLite file path; default <state_dir>/state.db
    database: str | None = None
    state_dir: str = ".skillstage"
    stages: dict[str, StageConfig] = msgspec.field(default_factory=_default_stages)
    transitions: list[TransitionConfig] = msgspec.field(default_factory=_default_transitions)
    validation: ValidationPolicy = msgspec.field(default_factory=ValidationPolicy)
    hooks: HooksConfig = msgspec.field(default_factory=HooksConfig)
    notifications: NotificationsConfig = msgspec.field(default_factory=NotificationsConfig)
    git: GitConfig = msgspec.field(default_factory=GitConfig)
    gates: dict[str, CommandGateConfig] = msgspec.field(default_factory=dict)
    quality: QualityConfig = msgspec.field(default_factory=QualityConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    approvals: ApprovalsConfig = msgspec.field(default_factory=ApprovalsConfig)
    rollout: RolloutConfig = msgspec.field(default_factory=RolloutConfig)
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    runtime_check: RuntimeCheckConfig = msgspec.field(default_factory=RuntimeCheckConfig)
    triggers: TriggerConfig = msgspec.field(default_factory=TriggerConfig)
    dependencies: dict[str, DependencyConfig] = msgspec.field(default_factory=dict)
    watch: WatchConfig = msgspec.field(default_factory=WatchConfig)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    backups: BackupsConfig = msgspec.field(default_factory=BackupsConfig)
    monitoring: MonitoringConfig = msgspec.field(default_factory=MonitoringConfig)
    maturity: MaturityConfig = msgspec.field(default_factory=MaturityConfig)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("stages: at least one stage is required under [stages]")
        # Two stages on one folder would each see the other's skills as their own.
        by_path: dict[str, str] = {}
        for stage, settings in self.stages.items():
            where = os.path.normpath(settings.path)
            if where in by_path:
                raise ValueError(
                    f"stages: {by_path[where]!r} and {stage!r} have the same path "
                    f"{settings.path!r}: each stage needs a folder of its own"
                )
            by_path[where] = stage
        for name in self.gates:
            # (seed 001's quality gates came later: a command gate of theirs, e.g. [gates.lint]
            # from before, still runs its command instead)
            if name in STATIC_GATES or name in POLICY_GATES:
                raise ValueError(
                    f"gates: [gates.{name}] has the name of a built-in gate, which would run "
                    f"instead of its command: give the command gate another name"
                )
        stages = list(self.stages)
        moves = [(t.from_stage, t.to_stage, t.gates) for t in self.transitions]
        given = moves != [(t.from_stage, t.to_stage, t.gates) for t in _default_transitions()]
        defaults = "" if given else " (the default ones)"
        seen: set[tuple[str, str]] = set()
        for number, transition in enumerate(self.transitions, 1):
            which = (
                f"transition {number}{defaults}, {transition.from_stage} → {transition.to_stage},"
            )
            for gate in transition.gates:
                if gate not in BUILTIN_GATE_NAMES and gate not in self.gates:
                    raise ValueError(
                        f"transitions: {which} names gate {gate!r}, which is neither built in "
                        f"({', '.join(BUILTIN_GATE_NAMES)}) nor a command gate under "
                        f"[gates.{gate}]"
                    )
            for end in (transition.from_stage, transition.to_stage):
                if end not in self.stages:
                    raise ValueError(
                        f"transitions: {which} names stage {end!r}, which is not under [stages] "
                        f"(stages: {', '.join(self.stages)}); "
                        + (
                            "write [[transitions]] between your stages"
                            if defaults
                            else f"add [stages.{end}] or name one of these"
                        )
                    )
            # The stages' order is the lifecycle's: rollback and demotion go to the stage
            # before, so a transition must go forward in it.
            if stages.index(transition.to_stage) <= stages.index(transition.from_stage):
                raise ValueError(
                    f"transitions: {which} does not go forward: [stages] are listed in lifecycle "
                    f"order ({' → '.join(stages)}), and rollback and demotion go back to the "
                    f"stage listed before; list the stages in the order skills move through them"
                )
            if (transition.from_stage, transition.to_stage) in seen:
                raise ValueError(
                    f"transitions: {which} is given twice; keep one, with all its gates"
                )
            seen.add((transition.from_stage, transition.to_stage))
        for stage in self.maturity.labels:
            if stage not in self.stages:
                raise ValueError(
                    f"maturity: labels names stage {stage!r}, which is not under [stages] "
                    f"(stages: {', '.join(self.stages)})"
                )
        for stage in self.watch.stages or []:
            if stage not in self.stages:
                raise ValueError(
                    f"watch: stages names {stage!r}, which is not under [stages] "
                    f"(stages: {', '.join(self.stages)})"
                )
        for name in self.triggers.dependencies:
            if name not in self.dependencies:
                raise ValueError(
                    f"triggers: dependencies names {name!r}; add [dependencies.{name}] with "
                    "its command"
                )
        for skill in self.triggers.skills:
            try:
                self.triggers.for_skill(skill)
            except msgspec.ValidationError as exc:
                raise ValueError(f"triggers: skills.{skill}: {exc}") from None


@dataclass(frozen=True)
class Project:
    """A configuration together with where it came from."""

    root: Path
    config: Config
    source: Path | None  # the file the config was read from; None when defaults are used

    @property
    def state_dir(self) -> Path:
        return self.root / self.config.state_dir

    @property
    def database_url(self) -> str:
        """The store's URL: the environment wins, then the config, then SQLite in the state dir."""
        url = os.environ.get(DATABASE_ENV) or self.config.database
        if not url:
            return f"sqlite:///{self.state_dir / 'state.db'}"
        if "://" in url:
            scheme, rest = url.split("://", 1)
            if scheme.startswith("sqlite") and rest.lstrip("/") in ("", ":memory:"):
                raise ConfigError(
                    f"database = {url!r} is an in-memory store: every command would start "
                    "from an empty one, and promotions and history would be lost",
                    path=self.source,
                    hint="leave database out (.skillstage/state.db), or name a file: "
                    'database = "sqlite:////path/to/state.db"',
                )
            return url
        path = Path(url)
        return f"sqlite:///{path if path.is_absolute() else self.root / path}"

    @property
    def metrics_inbox(self) -> Path:
        """Where execution records are appended before ingestion."""
        inbox = self.config.metrics.inbox
        return self.root / inbox if inbox else self.state_dir / "metrics"

    @property
    def registry_file(self) -> Path:
        """Where seed 002's skills_registry.json is exported."""
        given = self.config.runtime.registry_path
        return self.root / given if given else self.state_dir / "skills_registry.json"

    def stage_root(self, stage: str) -> Path:
        return self.root / self.config.stages[stage].root

    def stage_path(self, stage: str, name: str) -> Path:
        return self.root / self.config.stages[stage].path.replace("{name}", name)


# msgspec's messages, e.g. "Expected `int` >= 1 - at `$.transitions[0].thresholds.min_executions`".
# A dict entry's key is not in the path ("`$.stages[...]`"); a top-level error has no path.
_AT = re.compile(r"(?P<message>.*) - at `\$(?P<path>[^`]*)`", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_KINDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "array": "an array",
    "object": "a table",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time",
}
_BOUNDS = {">": "greater than", ">=": "at least", "<": "less than", "<=": "at most"}


def _required(info: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """`X` for `X | None`."""
    if isinstance(info, msgspec.inspect.UnionType):
        types = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(types) == 1:
            return types[0]
    return info


def _converts(value: Any, kind: type) -> bool:
    try:
        msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError:
        return False
    return True


def _locate(data: Any, path: str) -> tuple[list[str], msgspec.inspect.Type]:
    """The keys along msgspec's error path, and the type expected where it ends."""
    info = _required(msgspec.inspect.type_info(Config))
    keys: list[str] = []
    for name, index in _STEP.findall(path):
        key: str | int
        if isinstance(info, msgspec.inspect.StructType):
            found = {f.encode_name: f.type for f in info.fields}.get(name)
            if found is None:
                break
            key, info = name, found
        elif isinstance(info, msgspec.inspect.ListType):
            key, info = int(index), info.item_type
        elif isinstance(info, msgspec.inspect.DictType) and isinstance(
            info.value_type, msgspec.inspect.StructType
        ):
            # msgspec checks a table's entries in order, so the entry it means is the first that
            # fails on its own.
            kind = info.value_type.cls
            failing = next((k for k, v in data.items() if not _converts(v, kind)), None)
            if failing is None:
                break
            key, info = failing, info.value_type
        else:
            break
        keys.append(str(key))
        data = data[key]
        info = _required(info)
    return keys, info


def _explain(message: str, info: msgspec.inspect.Type) -> str:
    """msgspec's message about a bad value in the words of a TOML file."""
    if match := re.fullmatch(r"Expected `[^`]*` (>=|>|<=|<) (\S+)", message):
        return f"must be {_BOUNDS[match[1]]} {float(match[2]):g}"
    if match := re.fullmatch(r"Expected `([^`]*)`, got `([^`]*)`", message):
        expected, got = (
            " or ".join(_KINDS.get(kind, kind) for kind in group.split(" | ") if kind != "null")
            for group in match.groups()
        )
        return f"expected {expected}, got {got}"
    match = re.fullmatch(r"Invalid enum value (.*)", message)
    if match and isinstance(info, msgspec.inspect.LiteralType):
        allowed = [repr(value) for value in info.values]
        return f"must be {', '.join(allowed[:-1])} or {allowed[-1]}, not {match[1]}"
    return message


def _error_from_validation(
    exc: msgspec.ValidationError, data: dict[str, Any], source: Path, prefix: str
) -> ConfigError:
    """msgspec's (first) error as the dotted key in the file and what is wrong with it."""
    match = _AT.fullmatch(str(exc))
    message, path = (match["message"], match["path"]) if match else (str(exc), "")
    keys, info = _locate(data, path)
    # A field check in a __post_init__ says "<field>: <problem>"; msgspec puts it at the table.
    field, _, problem = message.partition(": ")
    if isinstance(info, msgspec.inspect.StructType) and field in (
        f.encode_name for f in info.fields
    ):
        keys, message = [*keys, field], problem
    if found := re.fullmatch(r"Object (contains unknown|missing required) field `(.*)`", message):
        kind = "unknown" if found[1] == "contains unknown" else "missing"
        line = f"{kind} key '{prefix}{'.'.join([*keys, found[2]])}'"
    else:
        key = prefix + ".".join(keys) if keys else "(top level)"
        line = f"bad value for '{key}': {_explain(message, info)}"
    return ConfigError(
        line,
        path=source,
        hint="fix the key in the file; `skillstage init --print` shows every key with its default",
    )


def _first_transition_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with FIRST_TRANSITION_THRESHOLDS filled in where a transition out of the first
    stage leaves them out, the default transitions included: the first stage is the file's (anything
    malformed is left for the conversion to report)."""
    stages = data.get("stages", _default_stages())
    transitions = data.get(
        "transitions",
        [
            {"from": t.from_stage, "to": t.to_stage, "gates": t.gates}
            for t in _default_transitions()
        ],
    )
    if not isinstance(transitions, list) or not isinstance(stages, dict) or not stages:
        return data
    first = next(iter(stages))
    filled = []
    for transition in transitions:
        if isinstance(transition, dict) and transition.get("from") == first:
            given = transition.get("thresholds", {})
            if isinstance(given, dict):
                transition = {
                    **transition,
                    "thresholds": {**FIRST_TRANSITION_THRESHOLDS, **given},
                }
        filled.append(transition)
    return {**data, "transitions": filled}


def parse_config(data: dict[str, Any], source: Path, prefix: str = "") -> Config:
    """Validate a decoded TOML table into a `Config`, or raise a `ConfigError` naming the key.

    Numbers, booleans and strings are read as loosely as a person writes them: `sla_hours = 48`
    or `"48"` for a number, `10.0` for an integer, `"true"` for a boolean (strict=False); a number
    is never read as a string.
    """
    try:
        return msgspec.convert(_first_transition_defaults(data), Config, strict=False)
    except msgspec.ValidationError as exc:
        raise _error_from_validation(exc, data, source, prefix) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        bom = path.read_bytes().startswith(b"\xef\xbb\xbf")
        raise ConfigError(
            f"not valid TOML: {exc}" + (" (the file starts with a byte order mark)" if bom else ""),
            path=path,
            hint="save it as UTF-8 without a BOM" if bom else None,
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=path) from None


def load_config_file(path: Path) -> Project:
    """Read one config file: a `skillstage.toml`, or a `pyproject.toml` with `[tool.skillstage]`."""
    path = path.resolve()
    data = _read_toml(path)
    if path.name == "pyproject.toml":
        section = data.get("tool", {}).get("skillstage")
        if not isinstance(section, dict):
            raise ConfigError(
                "has no [tool.skillstage] table", path=path, hint="run `skillstage init`"
            )
        return Project(path.parent, parse_config(section, path, "tool.skillstage."), path)
    return Project(path.parent, parse_config(data, path), path)


def find_config_file(start: Path) -> Path | None:
    """The nearest `skillstage.toml`, or `pyproject.toml` with `[tool.skillstage]`, at or above
    `start`."""
    for directory in [start, *start.parents]:
        candidate = directory / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
        if candidate.exists():
            raise ConfigError(
                f"{CONFIG_FILENAME} is not a file", path=candidate, hint="move it out of the way"
            )
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file() and b"[tool.skillstage" in pyproject.read_bytes():
            return pyproject
    return None


def load_project(config_path: Path | None = None, start: Path | None = None) -> Project:
    """The project for this invocation.

    An explicit path (argument or `SKILLSTAGE_CONFIG`) must exist; otherwise the nearest config file
    at or above `start` (default: the working directory) is used.
    """
    explicit = config_path or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError("config file not found", path=explicit)
        return load_config_file(explicit)
    where = (start or Path.cwd()).resolve()
    found = find_config_file(where)
    if found is None:
        raise ConfigError(
            f"no {CONFIG_FILENAME} in {where} or any parent directory",
            hint="run `skillstage init` to create a project here, or pass --config PATH",
        )
    return load_config_file(found)


def default_project(root: Path) -> Project:
    """Defaults only, for commands such as `validate` that work outside a project."""
    return Project(root.resolve(), Config(), None)


DEFAULT_CONFIG_TOML = """\
# skillstage configuration. Every key is shown with its default; delete what you do not change.
# Every key is explained in docs/configuration.md.

# Where state lives: the database (unless `database` says otherwise), the version archive, locks,
# the metrics inbox.
state_dir = ".skillstage"

# The store. Default: SQLite at <state_dir>/state.db. For a team, PostgreSQL:
#   database = "postgresql+psycopg://user:password@host/dbname"
# The environment variable SKILLSTAGE_DATABASE_URL overrides this key.
# database = ".skillstage/state.db"

# Stages, in lifecycle order. `path` is where a stage's skills live, relative to this file; its
# last component holds {name}. `sla_hours`: how long a version may wait in the stage (48 hours
# in staging), checked by `skillstage sla check`.
[stages.prototype]
path = ".claude/skills/prototype/{name}"

[stages.staged]
path = ".claude/skills/staging/{name}"
sla_hours = 48
label = "staging"                   # the stage's name in messages and git commits

[stages.production]
path = ".claude/skills/{name}"

# Allowed transitions and their gates: structure, schema, spec, tests, conflicts, dependencies,
# security, metrics, approval, seed 001's quality gates (coverage, lint, types, secrets,
# integration-tests-exist: see [quality]), the facts rollback-drill, uptime and monitoring
# (docs/readiness.md), or the name of a command gate under [gates.<name>].
# `metrics` checks
# the thresholds below (benchmark evals for prototype → staged, live executions for
# staged → production); `approval` needs a recorded human sign-off (`skillstage approve`).
[[transitions]]
from = "prototype"
to = "staged"
gates = ["structure", "schema", "spec", "tests", "conflicts", "dependencies", "security"]

[transitions.thresholds]
evidence = "evals"                  # the latest `skillstage eval` run of the content
min_pattern_fidelity = 0.90         # across all benchmark cases
min_outcome_quality = 0.85
max_false_positive_rate = 0.05      # strictly below
max_critical_false_negatives = 0
require_all_benchmark_cases = true
min_executions = 0
min_comparison_sample = 10          # fewer executions on a side: "insufficient data"
regression_p_value = 0.05

[[transitions]]
from = "staged"
to = "production"
gates = ["structure", "schema", "spec", "tests", "conflicts", "dependencies", "security"]

[transitions.thresholds]
evidence = "executions"             # the live executions of the content's digest
min_pattern_fidelity = 0.90         # sustained over the executions of this version
min_outcome_quality = 0.85
max_false_positive_rate = 0.05
max_critical_false_negatives = 0
min_executions = 100                # sample size for statistical significance
critical_failure_window = 100       # no critical failure in the last N executions
min_executions_within_days = 7      # demote-check: fewer executions after this long → demote
forbid_regression = true            # no worse than the prototype baseline
min_comparison_sample = 10
regression_p_value = 0.05
regression_score_margin = 0.02      # worse only if lower by more than this (and significant)
regression_rate_margin = 0.02       # worse only if higher by more than this (and significant)
regression_time_ratio = 1.5         # worse only if slower than this many times (and significant)
# max_mean_execution_time_ms = 2000 # unset: no limit; a skill's own limit is
#                                   # metadata.max_execution_time_ms in its SKILL.md
# Read by the `uptime` and `rollback-drill` gates, when a transition names them:
min_uptime = 99.5                   # percent of executions without an exception
uptime_days = 7                     # over the last 7 days in the stage it leaves
min_uptime_executions = 200         # fewer executions: not enough to show it
max_drill_age_days = 7              # `skillstage drill NAME` passed within this

# What `skillstage validate` requires of a skill.
[validation]
required_files = ["SKILL.md", "execute.sh"]
executable_files = ["execute.sh", "test.sh"]
recommended_files = ["test.sh"]
max_files = 1000
max_total_bytes = 52428800          # 50 MiB
max_body_lines = 500                # Agent Skills spec: keep SKILL.md under 500 lines
allowed_extra_fields = []           # frontmatter keys your team accepts without a warning
test_timeout_seconds = 30
test_failure = "error"              # or "warning": a failing test.sh then only warns

# Commands run after a promotion or rollback, from the project root, with SKILLSTAGE_SKILL,
# SKILLSTAGE_VERSION, SKILLSTAGE_DIGEST, SKILLSTAGE_FROM_STAGE, SKILLSTAGE_TO_STAGE,
# SKILLSTAGE_PATH and SKILLSTAGE_EVENT set. Failures are recorded and retried
# (`skillstage outbox`), never undoing the promotion.
[hooks]
# deploy = "scripts/deploy.sh"      # with --deploy; its last line of output is the deployment id
# post_promote = "scripts/notify-team.sh"
# post_rollback = "scripts/page-oncall.sh"
# reindex = "python holo_index.py --reindex-skills"   # after every state change
timeout_seconds = 60
retries = 3                         # with exponential backoff: 1 s, 2 s, 4 s
retry_base_seconds = 1

# Notifications through Apprise URLs: slack://…, mailto://…, json://host/path (a webhook), …
[notifications]
# Each URL hears every event below, or only some: { url = "...", min_severity = "critical" }
urls = []
events = [
    "promoted", "rolled_back", "gate_failed", "sla_breach", "rollout_aborted", "rollout_paused",
    "alert", "recovered", "disabled", "enabled",
]

[git]
commit = false                      # true: every promotion and rollback is committed
timeout_seconds = 30

# Execution metrics: records are appended to the inbox as JSON lines
# (<skill>_executions.jsonl) and ingested into the store by `skillstage metrics ingest`, and on
# demand before every readiness check and metric gate.
[metrics]
# inbox = ".skillstage/metrics"     # default: <state_dir>/metrics
batch_size = 1000                   # lines decoded and checkpointed together
lag_alert_hours = 1                 # `skillstage metrics lag` exits 1 beyond this
eval_timeout_seconds = 30           # per benchmark case of `skillstage eval`
max_clock_skew_minutes = 10         # records dated later than now plus this are refused

# Human sign-off: who may approve with `skillstage approve`.
[approvals]
approvers = []                      # e.g. ["alice", "bob"]; nobody can approve while empty
allow_self_approval = false         # four-eyes: a skill's author cannot approve it

# Gradual rollouts (`skillstage rollout start`): the defaults of its options. A new version serves
# each step's share of the stage's traffic; a step succeeds after lasting its minimum duration,
# with the minimum executions on each version, when the new one meets the stage's thresholds and
# is not worse than the live one.
[rollout]
steps = [10, 50, 100]               # percent of the traffic at each step; the last is 100
step_min_duration_minutes = 60
step_min_executions = 100
on_failure = "abort"                # or "pause": a person decides what a failed step does

# The loader agent hosts call (`skillstage.runtime.Loader`) and the registry file.
[runtime]
refresh_ms = 250                    # how often loaders check for a change to what serves
# registry_path = ".skillstage/skills_registry.json"   # a JSON export for other tools
# primary_agent = "claude"          # the registry's primary_agent, unless metadata says
breaker_fail_max = 5                # failed executions in a row before a loader falls back
breaker_reset_seconds = 60          # then one request tries the version again

# `skillstage check-runtime`: loads every production skill from threads and processes at once.
[runtime_check]
memory_warning_mb = 75              # peak memory of a process that loaded every skill: warn
memory_critical_mb = 100            # ... and fail
load_timeout_seconds = 10           # one load slower than this fails the check
min_cache_hit_rate = 0.90           # a second pass over the same skills: warn below

# The watcher (`skillstage watch`) rolls a live version back by itself when one of these fires
# (omit a limit, or set it per skill, to change it; the optional ones are off until set).
[watch]
# stages = ["production"]           # default: the last stage
interval_seconds = 30
actor = "skillstage-watch"

[triggers]
window = 10                         # fidelity, quality and time: over the last 10 executions
rate_window = 20                    # false positives, exceptions, errors: over the last 20
min_pattern_fidelity = 0.85
min_outcome_quality = 0.80
max_critical_false_negatives = 0    # any critical miss rolls back
max_false_positive_rate = 0.10
max_exception_rate = 0.05
max_execution_time_ratio = 3.0      # mean time over its baseline mean
baseline_executions = 20
# max_error_rate = 0.01             # exceptions and misses
# max_performance_degradation = 0.20
# health_check = "scripts/check-data-store.sh"
dependencies = []                   # names under [dependencies] every watched skill needs
health_timeout_seconds = 10
# [triggers.skills.auth-v2]         # one skill's own limits
# min_pattern_fidelity = 0.90

# [dependencies.mcp]                # checked every pass; a failure rolls back who needs it
# command = "curl -fsS http://127.0.0.1:3000/health"
# skills = ["auth-v2"]              # empty: every watched skill

# Alerts: announced once per episode (and again when it recovers), at two levels.
[alerts]
window = 100
min_executions = 20
error_rate_warning = 0.05
error_rate_critical = 0.10
performance_warning = 1.20          # mean execution time over the baseline
performance_critical = 1.50
memory_warning_mb = 75              # from the tag memory_mb, when hosts record it
memory_critical_mb = 100

# Backups (`skillstage backup create`): the skill trees, the archive and the store, in
# <state_dir>/backups/. After each new backup all but the newest `keep` are deleted.
[backups]
keep = 10
store_compression_level = 1         # 0 (none, fastest) to 9; the skill trees are always at 6

# Where skills are monitored: the `monitoring` gate passes when either key is set, or when a
# [notifications] URL hears alerts.
[monitoring]
# prometheus_url = "http://prometheus:9090"    # scrapes `skillstage serve`'s /metrics
# alert_url = "https://alerts.example.com/hook"

# Maturity metadata: with enabled = true, a promotion with a git commit rewrites the promoted
# copy's `__maturity__ = "…"`, `Maturity Stage: …` and README `**Status:** …` lines to the
# stage's label, inside that commit (the content digest leaves those values out).
[maturity]
enabled = false
files = ["__init__.py", "README.md"]
# [maturity.labels]                 # default: each stage's label, else its name
# production = "production"

# Seed 001's quality gates for Python components, named in a transition's gates. Tools run in the
# component's directory (pytest and coverage in a scratch copy of it, so nothing they write
# changes the content being promoted); a tool that is not installed fails its gate, saying how
# to install it. `skillstage init --preset seed001` writes a project that uses them.
[quality]
# python = ".venv/bin/python"       # runs pytest, coverage, mypy; default: the component's
#                                   # .venv/bin/python, else the one running skillstage
timeout_seconds = 600               # per tool run

[quality.coverage]
minimum = 60                        # percent; a transition's thresholds.min_coverage wins
# report = "coverage.xml"           # read this report (or a ".coverage" data file) from the
#                                   # component instead of running its tests under coverage
source = []                         # coverage run --source; empty: the component's own config
show_files = 3                      # the files with the most missing lines, in the finding

[quality.tests]
runner = "auto"                     # test.sh when present, else pytest for a Python project;
                                    # or "test.sh", "pytest"
pytest_args = []

[quality.lint]
# ruff = "/usr/local/bin/ruff"      # default: beside the interpreter, then on PATH
paths = ["."]

[quality.types]
checker = "auto"                    # pyright if installed, else mypy where the component
                                    # configures it; or "pyright", "mypy"
# pyright = "/usr/local/bin/pyright"
# mypy = "/usr/local/bin/mypy"
paths = ["."]

[quality.secrets]
scanner = "auto"                    # detect-secrets with a baseline, else the built-in scanner;
                                    # or "builtin", "detect-secrets"
# baseline = ".secrets.baseline"    # relative to the component: recorded secrets pass
# detect_secrets = "/usr/local/bin/detect-secrets"

[quality.integration]
paths = ["tests/integration"]       # a test file here, or one using the marker, passes
marker = "integration"              # @pytest.mark.integration

# Command gates: name one in a transition's gates to run it; exit 0 passes. For example:
# [gates.docs]
# command = "mkdocs build --strict"
# timeout_seconds = 300
"""


# Seed 001 ("Component Promotion"): development → staging → production with its quality gates.
SEED001_CONFIG_TOML = """\
# skillstage configuration: seed 001's component promotion (`skillstage init --preset seed001`).
# Keys left out take their defaults: `skillstage init --print` shows every key, and
# docs/configuration.md explains them.

state_dir = ".skillstage"

# Seed 001's maturity stages.
[stages.development]
path = ".claude/skills/development/{name}"

[stages.staging]
path = ".claude/skills/staging/{name}"
sla_hours = 48

[stages.production]
path = ".claude/skills/{name}"

# Development → staging: coverage ≥ 70%, all tests passing, ruff clean, type checking clean,
# no secrets (detect-secrets), integration tests exist; and skillstage's own safety gates.
[[transitions]]
from = "development"
to = "staging"
gates = [
    "structure", "schema", "spec", "conflicts", "dependencies", "security",
    "tests", "coverage", "lint", "types", "secrets", "integration-tests-exist",
]

[transitions.thresholds]
min_coverage = 70

# Staging → production: coverage ≥ 80%, all tests (the integration tests among them) passing;
# the facts the store knows: 7-day uptime ≥ 99.5% (`uptime`: executions without an exception),
# monitoring configured (`monitoring`: [monitoring] below, or a notification URL that hears
# alerts), rollback procedure tested (`rollback-drill`: `skillstage drill NAME` passed within
# 7 days). What no tool here measures — performance meets its SLAs, security review complete —
# is for the human sign-off (`skillstage signoff template NAME`, then `skillstage approve`):
# the `approval` gate requires it.
[[transitions]]
from = "staging"
to = "production"
gates = [
    "structure", "schema", "spec", "conflicts", "dependencies", "security",
    "tests", "coverage", "lint", "types", "secrets", "integration-tests-exist",
    "uptime", "monitoring", "rollback-drill", "approval",
]

[transitions.thresholds]
min_coverage = 80
min_uptime = 99.5                   # percent of executions without an exception
uptime_days = 7                     # over the last 7 days in staging
min_uptime_executions = 200         # fewer executions: not enough to show it
max_drill_age_days = 7              # the latest rollback drill passed within this

# A component is a directory with a SKILL.md (its name and version) and its Python project.
[validation]
required_files = ["SKILL.md"]
recommended_files = []

[quality]
# python = ".venv/bin/python"       # default: the component's .venv/bin/python, else skillstage's
timeout_seconds = 600

[quality.coverage]
minimum = 60                        # development's floor, for a transition that sets none
source = []                         # e.g. ["src"]; empty: the component's coverage config

[quality.types]
checker = "auto"                    # pyright (seed 001) if installed, else mypy where configured

[quality.secrets]
baseline = ".secrets.baseline"      # `detect-secrets scan > .secrets.baseline` in the component

[quality.integration]
paths = ["tests/integration"]
marker = "integration"

# Human sign-off for production.
[approvals]
approvers = []                      # e.g. ["tech-lead", "qa"]; nobody can approve while empty

# Where the components are monitored (the `monitoring` gate): either key, or a [notifications]
# URL that hears alerts.
[monitoring]
# prometheus_url = "http://prometheus:9090"    # scrapes `skillstage serve`'s /metrics
# alert_url = "https://alerts.example.com/hook"
"""

# The configurations `skillstage init --preset NAME` writes.
PRESETS: dict[str, str] = {"seed001": SEED001_CONFIG_TOML}
