"""Project configuration: `skillstage.toml`, or `[tool.skillstage]` in `pyproject.toml`.

Read with `tomllib` into pydantic models. An unknown key or a bad value is a `ConfigError` that
names the file and the dotted key. Defaults follow the seeds: seed 000's stage paths and 48-hour
staging SLA, seed 002's promotion thresholds.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skillstage.errors import ConfigError

CONFIG_FILENAME = "skillstage.toml"
DATABASE_ENV = "SKILLSTAGE_DATABASE_URL"
CONFIG_ENV = "SKILLSTAGE_CONFIG"

MiB = 1024 * 1024


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StageConfig(_Model):
    """One lifecycle stage: where its skills live and how long a version may wait in it."""

    path: str = Field(description="path template; its last component contains {name}")
    sla_hours: float | None = Field(default=None, gt=0)
    label: str | None = None  # the stage's name in messages (seed 000 says "staging")

    @field_validator("path")
    @classmethod
    def _one_name_in_last_component(cls, value: str) -> str:
        parts = value.rstrip("/").split("/")
        if value.count("{name}") != 1 or "{name}" not in parts[-1]:
            raise ValueError(
                "must contain {name} exactly once, in its last component "
                "(e.g. '.claude/skills/staging/{name}')"
            )
        if re.search(r"\{(?!name\})", value):
            raise ValueError("the only placeholder allowed is {name}")
        return value.rstrip("/")

    @property
    def root(self) -> str:
        """The directory that holds this stage's skill directories."""
        return self.path.rsplit("/", 1)[0] if "/" in self.path else "."

    def directory_pattern(self) -> re.Pattern[str]:
        """A regex over a directory name under `root` that captures the skill name."""
        prefix, suffix = self.path.rsplit("/", 1)[-1].split("{name}")
        return re.compile(re.escape(prefix) + r"(?P<name>.+?)" + re.escape(suffix) + r"\Z")


class Thresholds(_Model):
    """Metric thresholds of one transition (seed 002 §2)."""

    min_pattern_fidelity: float = Field(default=0.90, ge=0, le=1)
    min_outcome_quality: float = Field(default=0.85, ge=0, le=1)
    max_false_positive_rate: float = Field(default=0.05, ge=0, le=1)
    max_critical_false_negatives: int = Field(default=0, ge=0)
    require_all_benchmark_cases: bool = True
    min_executions: int = Field(default=0, ge=0)
    critical_failure_window: int = Field(default=100, ge=1)
    max_mean_execution_time_ms: float | None = Field(default=None, gt=0)
    forbid_regression: bool = False


class TransitionConfig(_Model):
    """An allowed move between two stages and the gates that guard it."""

    from_stage: str = Field(alias="from")
    to_stage: str = Field(alias="to")
    gates: list[str]
    thresholds: Thresholds = Field(default_factory=Thresholds)


class ValidationPolicy(_Model):
    """What `skillstage validate` requires of a skill directory (seed 000 §"Validation Checks")."""

    required_files: list[str] = Field(default_factory=lambda: ["SKILL.md", "execute.sh"])
    executable_files: list[str] = Field(default_factory=lambda: ["execute.sh", "test.sh"])
    recommended_files: list[str] = Field(default_factory=lambda: ["test.sh"])
    max_files: int = Field(default=1000, ge=1)
    max_total_bytes: int = Field(default=50 * MiB, ge=1)
    max_body_lines: int = Field(default=500, ge=1)
    allowed_extra_fields: list[str] = Field(default_factory=list)
    test_timeout_seconds: float = Field(default=30, gt=0)
    test_failure: Literal["error", "warning"] = "error"


def _default_stages() -> dict[str, StageConfig]:
    return {
        "prototype": StageConfig(path=".claude/skills/prototype/{name}"),
        "staged": StageConfig(path=".claude/skills/staging/{name}", sla_hours=48, label="staging"),
        "production": StageConfig(path=".claude/skills/{name}"),
    }


STATIC_GATES = ["structure", "schema", "spec", "tests", "conflicts", "dependencies", "security"]


def _default_transitions() -> list[TransitionConfig]:
    return [
        TransitionConfig.model_validate(
            {
                "from": "prototype",
                "to": "staged",
                "gates": STATIC_GATES,
                "thresholds": {"min_executions": 0, "require_all_benchmark_cases": True},
            }
        ),
        TransitionConfig.model_validate(
            {
                "from": "staged",
                "to": "production",
                "gates": STATIC_GATES,
                "thresholds": {"min_executions": 100, "forbid_regression": True},
            }
        ),
    ]


class HooksConfig(_Model):
    """Commands run after a state change (seed 000 auto-deploy, seed 002 re-index). Each is a
    command line, run from the project root with the skill's details in SKILLSTAGE_* variables."""

    deploy: str | None = None  # its last line of output is the deployment id
    post_promote: str | None = None
    post_rollback: str | None = None
    reindex: str | None = None  # after every state change
    timeout_seconds: float = Field(default=60, gt=0)
    retries: int = Field(default=3, ge=0)  # seed 001: 3 retries
    retry_base_seconds: float = Field(default=1, ge=0)  # seed 001: exponential backoff from 1 s


NotificationEvent = Literal["promoted", "rolled_back", "gate_failed", "sla_breach"]
NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = (
    "promoted",
    "rolled_back",
    "gate_failed",
    "sla_breach",
)


class NotificationsConfig(_Model):
    """Where to tell people: Apprise URLs (slack://, mailto://, json:// webhooks, ...)."""

    urls: list[str] = Field(default_factory=list)
    events: list[NotificationEvent] = Field(default_factory=lambda: list(NOTIFICATION_EVENTS))


class GitConfig(_Model):
    """Seed 000's "Promote with Git Commit"."""

    commit: bool = False  # commit every promotion and rollback without --git-commit
    timeout_seconds: float = Field(default=30, gt=0)


class CommandGateConfig(_Model):
    """A gate that runs a command and passes on exit 0 (seed 001's ruff, pyright, detect-secrets
    gates plug in this way)."""

    command: str
    timeout_seconds: float = Field(default=300, gt=0)


class Config(_Model):
    """The whole of `skillstage.toml`."""

    database: str | None = Field(
        default=None,
        description="SQLAlchemy URL or a SQLite file path; default <state_dir>/state.db",
    )
    state_dir: str = ".skillstage"
    stages: dict[str, StageConfig] = Field(default_factory=_default_stages)
    transitions: list[TransitionConfig] = Field(default_factory=_default_transitions)
    validation: ValidationPolicy = Field(default_factory=ValidationPolicy)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    git: GitConfig = Field(default_factory=GitConfig)
    gates: dict[str, CommandGateConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _transitions_name_stages(self) -> Config:
        if not self.stages:
            raise ValueError("at least one stage is required under [stages]")
        for index, transition in enumerate(self.transitions):
            for gate in transition.gates:
                if gate not in STATIC_GATES and gate not in self.gates:
                    raise ValueError(
                        f"transitions[{index}] names gate {gate!r}, which is neither built in "
                        f"({', '.join(STATIC_GATES)}) nor a command gate under [gates.{gate}]"
                    )
            for end in (transition.from_stage, transition.to_stage):
                if end not in self.stages:
                    raise ValueError(
                        f"transitions[{index}] names stage {end!r}, which is not under [stages] "
                        f"(stages: {', '.join(self.stages)})"
                    )
        return self


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
            return url
        path = Path(url)
        return f"sqlite:///{path if path.is_absolute() else self.root / path}"

    def stage_root(self, stage: str) -> Path:
        return self.root / self.config.stages[stage].root

    def stage_path(self, stage: str, name: str) -> Path:
        return self.root / self.config.stages[stage].path.replace("{name}", name)


def _error_from_validation(exc: ValidationError, source: Path, prefix: str) -> ConfigError:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        key = f"{prefix}{key}" if error["loc"] else key
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        else:
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"bad value for '{key}': {message}")
    return ConfigError(
        "; ".join(lines),
        path=source,
        hint="fix the key in the file; `skillstage init --print` shows every key with its default",
    )


def parse_config(data: dict[str, Any], source: Path, prefix: str = "") -> Config:
    """Validate a decoded TOML table into a `Config`, or raise a `ConfigError` naming the key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _error_from_validation(exc, source, prefix) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=path) from None
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
# Docs: README.md, "Configuration".

# Where state lives: the database (unless `database` says otherwise), the version archive, locks,
# the metrics inbox.
state_dir = ".skillstage"

# The store. Default: SQLite at <state_dir>/state.db. For a team, PostgreSQL:
#   database = "postgresql+psycopg://user:password@host/dbname"
# The environment variable SKILLSTAGE_DATABASE_URL overrides this key.
# database = ".skillstage/state.db"

# Stages, in lifecycle order. `path` is where a stage's skills live, relative to this file; its
# last component holds {name}. `sla_hours`: how long a version may wait in the stage (seed 000:
# 48 hours in staging), checked by `skillstage sla check`.
[stages.prototype]
path = ".claude/skills/prototype/{name}"

[stages.staged]
path = ".claude/skills/staging/{name}"
sla_hours = 48
label = "staging"                   # the stage's name in messages and git commits

[stages.production]
path = ".claude/skills/{name}"

# Allowed transitions and their gates: structure, schema, spec, tests, conflicts, dependencies,
# security, or the name of a command gate under [gates.<name>]. Thresholds are seed 002's promotion
# criteria (read by the metric gates).
[[transitions]]
from = "prototype"
to = "staged"
gates = ["structure", "schema", "spec", "tests", "conflicts", "dependencies", "security"]

[transitions.thresholds]
min_pattern_fidelity = 0.90         # across all benchmark cases
min_outcome_quality = 0.85
max_false_positive_rate = 0.05      # strictly below
max_critical_false_negatives = 0
require_all_benchmark_cases = true
min_executions = 0

[[transitions]]
from = "staged"
to = "production"
gates = ["structure", "schema", "spec", "tests", "conflicts", "dependencies", "security"]

[transitions.thresholds]
min_pattern_fidelity = 0.90         # sustained over the executions of this version
min_outcome_quality = 0.85
max_false_positive_rate = 0.05
max_critical_false_negatives = 0
min_executions = 100                # sample size for statistical significance
critical_failure_window = 100       # no critical failure in the last N executions
forbid_regression = true            # no worse than the prototype baseline
# max_mean_execution_time_ms = 2000 # skill-specific; unset means no limit

# What `skillstage validate` requires of a skill (seed 000 "Validation Checks").
[validation]
required_files = ["SKILL.md", "execute.sh"]
executable_files = ["execute.sh", "test.sh"]
recommended_files = ["test.sh"]
max_files = 1000
max_total_bytes = 52428800          # 50 MiB
max_body_lines = 500                # Agent Skills spec: keep SKILL.md under 500 lines
allowed_extra_fields = []           # frontmatter keys your team accepts without a warning
test_timeout_seconds = 30
test_failure = "error"              # or "warning" (seed 000 treats test failures as warnings)

# Commands run after a promotion or rollback, from the project root, with SKILLSTAGE_SKILL,
# SKILLSTAGE_VERSION, SKILLSTAGE_DIGEST, SKILLSTAGE_FROM_STAGE, SKILLSTAGE_TO_STAGE,
# SKILLSTAGE_PATH and SKILLSTAGE_EVENT set. Failures are recorded and retried
# (`skillstage outbox`), never undoing the promotion.
[hooks]
# deploy = "scripts/deploy.sh"      # with --deploy; its last line of output is the deployment id
# post_promote = "scripts/notify-team.sh"
# post_rollback = "scripts/page-oncall.sh"
# reindex = "python holo_index.py --reindex-skills"   # after every state change (seed 002)
timeout_seconds = 60
retries = 3                         # seed 001: 3 retries with exponential backoff from 1 s
retry_base_seconds = 1

# Notifications through Apprise URLs: slack://…, mailto://…, json://host/path (a webhook), …
[notifications]
urls = []
events = ["promoted", "rolled_back", "gate_failed", "sla_breach"]

[git]
commit = false                      # true: every promotion and rollback is committed
timeout_seconds = 30

# Command gates: name one in a transition's gates to run it; exit 0 passes. For example:
# [gates.lint]
# command = "ruff check .claude/skills"
# timeout_seconds = 300
"""
