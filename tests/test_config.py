"""Reading the config: what is accepted, and errors that name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skillstage.config import Config, StageConfig, TransitionConfig, parse_config
from skillstage.errors import ConfigError

SOURCE = Path("skillstage.toml")
STAGES = {
    "prototype": {"path": "p/{name}"},
    "staged": {"path": "s/{name}"},
    "production": {"path": "x/{name}"},
}


def error_of(data: dict[str, Any], prefix: str = "") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, SOURCE, prefix)
    assert caught.value.hint and "skillstage init --print" in caught.value.hint
    return caught.value.message


def with_stage(**staged: Any) -> dict[str, Any]:
    return {"stages": {**STAGES, "staged": {"path": "s/{name}", **staged}}}


def with_transition(**transition: Any) -> dict[str, Any]:
    return {"stages": STAGES, "transitions": [{"from": "prototype", "to": "staged", **transition}]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # A stage is a dict entry, which msgspec's error path does not name.
        (
            with_stage(sla_hours=0),
            "bad value for 'stages.staged.sla_hours': must be greater than 0",
        ),
        (with_stage(sla_hourz=3), "unknown key 'stages.staged.sla_hourz'"),
        (
            {"stages": {**STAGES, "staged": {"label": "x"}}},
            "missing key 'stages.staged.path'",
        ),
        (
            {"stages": {**STAGES, "staged": "s/{name}"}},
            "bad value for 'stages.staged': expected a table, got a string",
        ),
        (
            with_stage(path="staging"),
            "bad value for 'stages.staged.path': must contain {name} exactly once, in its last "
            "component (e.g. '.claude/skills/staging/{name}')",
        ),
        (
            with_stage(path="{team}/{name}"),
            "bad value for 'stages.staged.path': the only placeholder allowed is {name}",
        ),
        (
            {"gates": {"lint": {"timeout_seconds": 3}}},
            "missing key 'gates.lint.command'",
        ),
        (
            with_transition(gates=[], thresholds={"min_pattern_fidelity": 2}),
            "bad value for 'transitions.0.thresholds.min_pattern_fidelity': must be at most 1",
        ),
        (
            with_transition(gates="structure"),
            "bad value for 'transitions.0.gates': expected an array, got a string",
        ),
        (with_transition(), "missing key 'transitions.0.gates'"),
        (with_transition(gates=[], to_stage="x"), "unknown key 'transitions.0.to_stage'"),
        (
            {"validation": {"test_failure": "fatal"}},
            "bad value for 'validation.test_failure': must be 'error' or 'warning', not 'fatal'",
        ),
        (
            {"notifications": {"events": ["promoted", "deleted"]}},
            "bad value for 'notifications.events.1': must be 'alert', 'disabled', 'enabled', "
            "'gate_failed', 'promoted', 'recovered', 'rolled_back', 'rollout_aborted', "
            "'rollout_paused' or 'sla_breach', not 'deleted'",
        ),
        (
            {"validation": {"max_files": 0}},
            "bad value for 'validation.max_files': must be at least 1",
        ),
        (
            {"validation": {"max_files": 10.5}},
            "bad value for 'validation.max_files': expected an integer, got a number",
        ),
        (
            {"hooks": {"deploy": 1}},
            "bad value for 'hooks.deploy': expected a string, got an integer",
        ),
        (
            {"git": {"commit": "maybe"}},
            "bad value for 'git.commit': expected a boolean, got a string",
        ),
        ({"databse": "x"}, "unknown key 'databse'"),
        (
            {"rollout": {"steps": [50, 10, 100]}},
            "bad value for 'rollout.steps': [50, 10, 100] must rise, e.g. [10, 50, 100]",
        ),
        (
            {"rollout": {"steps": [10, 50]}},
            "bad value for 'rollout.steps': [10, 50] must end at 100, where the rollout completes",
        ),
        (
            {"rollout": {"steps": [0, 100]}},
            "bad value for 'rollout.steps.0': must be at least 1",
        ),
        (
            {"rollout": {"on_failure": "ignore"}},
            "bad value for 'rollout.on_failure': must be 'abort' or 'pause', not 'ignore'",
        ),
        (
            {"runtime": {"refresh_ms": 0}},
            "bad value for 'runtime.refresh_ms': must be at least 10",
        ),
        (
            {"stages": {}, "transitions": []},
            "bad value for 'stages': at least one stage is required under [stages]",
        ),
        (
            {
                "stages": {
                    "staged": {"path": ".claude/skills/staging/{name}"},
                    "production": {"path": ".claude/skills/staging/./{name}/"},
                },
                "transitions": [],
            },
            "bad value for 'stages': 'staged' and 'production' have the same path "
            "'.claude/skills/staging/./{name}': each stage needs a folder of its own",
        ),
        (
            with_transition(gates=["docs"]),
            "bad value for 'transitions': transition 1, prototype → staged, names gate 'docs', "
            "which is neither built in (structure, schema, spec, tests, conflicts, dependencies, "
            "security, metrics, approval, coverage, lint, types, secrets, "
            "integration-tests-exist, rollback-drill, uptime, monitoring) nor a command gate under "
            "[gates.docs]",
        ),
        (
            {**with_transition(gates=["security"]), "gates": {"security": {"command": "false"}}},
            "bad value for 'gates': [gates.security] has the name of a built-in gate, which "
            "would run instead of its command: give the command gate another name",
        ),
        (
            {
                "stages": {
                    "production": {"path": ".claude/skills/{name}"},
                    "staged": {"path": ".claude/skills/staging/{name}"},
                },
                "transitions": [{"from": "staged", "to": "production", "gates": []}],
            },
            "bad value for 'transitions': transition 1, staged → production, does not go "
            "forward: [stages] are listed in lifecycle order (production → staged), and rollback "
            "and demotion go back to the stage listed before; list the stages in the order "
            "skills move through them",
        ),
        (
            with_transition(gates=[], to="prototype"),
            "bad value for 'transitions': transition 1, prototype → prototype, does not go "
            "forward: [stages] are listed in lifecycle order (prototype → staged → production), "
            "and rollback and demotion go back to the stage listed before; list the stages in "
            "the order skills move through them",
        ),
        (
            {
                "stages": STAGES,
                "transitions": [{"from": "staged", "to": "production", "gates": []}] * 2,
            },
            "bad value for 'transitions': transition 2, staged → production, is given twice; "
            "keep one, with all its gates",
        ),
        (
            {"stages": {"staged": {"path": "s/{name}"}}},
            "bad value for 'transitions': transition 1 (the default ones), prototype → staged, "
            "names stage 'prototype', which is not under [stages] (stages: staged); write "
            "[[transitions]] between your stages",
        ),
        (
            {"metrics": {"max_clock_skew_minutes": float("inf")}},
            "bad value for 'metrics.max_clock_skew_minutes': must be at most 525600",
        ),
        (
            {"hooks": {"timeout_seconds": 1e20}},
            "bad value for 'hooks.timeout_seconds': must be at most 86400",
        ),
        (
            {"approvals": {"approvers": ["alice", " "]}},
            "bad value for 'approvals.approvers': ' ' is not a name (blank, or spaces around it)",
        ),
        (
            {"approvals": {"approvers": ["alice", "bob", "alice"]}},
            "bad value for 'approvals.approvers': alice listed twice",
        ),
        (
            {"hooks": {"retries": 60}},
            "bad value for 'hooks.retries': must be at most 20",
        ),
        (
            with_transition(gates=[], thresholds={"max_false_positive_rate": 0}),
            "bad value for 'transitions.0.thresholds.max_false_positive_rate': must be greater "
            "than 0",
        ),
    ],
)
def test_errors_name_the_key(data: dict[str, Any], message: str) -> None:
    assert error_of(data) == message


def test_the_pyproject_table_prefixes_the_key() -> None:
    assert error_of(with_stage(sla_hours=-1), "tool.skillstage.") == (
        "bad value for 'tool.skillstage.stages.staged.sla_hours': must be greater than 0"
    )
    assert error_of({"x": 1}, "tool.skillstage.") == "unknown key 'tool.skillstage.x'"


def test_the_failing_stage_is_named_among_valid_ones() -> None:
    stages = {**STAGES, "a.b": {"path": "s/{name}"}, "late": {"path": "l/{name}", "label": 3}}
    message = error_of({"stages": stages, "transitions": []})
    assert message == "bad value for 'stages.late.label': expected a string, got an integer"


def test_numbers_and_booleans_are_read_loosely_but_never_as_strings() -> None:
    config = parse_config(
        {
            **with_stage(sla_hours="48"),
            "validation": {"max_files": 10.0},
            "git": {"commit": "true"},
        },
        SOURCE,
    )
    assert config.stages["staged"].sla_hours == 48.0
    assert isinstance(config.stages["staged"].sla_hours, float)
    assert config.validation.max_files == 10 and isinstance(config.validation.max_files, int)
    assert config.git.commit is True
    assert isinstance(
        parse_config(with_stage(sla_hours=48), SOURCE).stages["staged"].sla_hours, float
    )
    assert "expected a string" in error_of(with_stage(label=4))
    assert "expected a string" in error_of({"state_dir": True})


def test_transitions_are_read_by_their_toml_names() -> None:
    config = parse_config(with_transition(gates=["structure"]), SOURCE)
    assert config.transitions == [
        TransitionConfig(
            from_stage="prototype",
            to_stage="staged",
            gates=["structure"],
            thresholds=Config().transitions[0].thresholds,
        )
    ]


def test_stage_paths_lose_a_trailing_slash_and_models_compare_by_value() -> None:
    assert StageConfig(path="s/{name}/").path == "s/{name}"
    assert parse_config(with_stage(path="s/{name}/"), SOURCE).stages["staged"] == StageConfig(
        path="s/{name}"
    )
    assert parse_config({}, SOURCE) == Config()
    with pytest.raises(ValueError, match="only placeholder"):
        StageConfig(path="{x}/{name}")


def test_a_transition_written_by_hand_gets_seed_002_defaults_for_what_it_leaves_out() -> None:
    config = parse_config(
        {
            "stages": STAGES,
            "transitions": [
                {"from": "prototype", "to": "staged", "gates": ["metrics"]},
                {
                    "from": "staged",
                    "to": "production",
                    "gates": ["metrics"],
                    "thresholds": {"min_pattern_fidelity": 0.8},
                },
            ],
        },
        SOURCE,
    )
    first, second = (t.thresholds for t in config.transitions)
    assert (first.evidence, first.min_executions, first.forbid_regression) == ("evals", 0, False)
    assert (second.evidence, second.min_executions, second.forbid_regression) == (
        "executions",
        100,
        True,
    )
    assert second.min_pattern_fidelity == 0.8
    assert first == Config().transitions[0].thresholds


def test_the_default_transitions_take_the_first_stages_defaults_from_the_files_stages() -> None:
    """Written out or left to the defaults, a transition gets the same thresholds."""
    stages = {"sandbox": {"path": "b/{name}"}, **STAGES}
    by_default = parse_config({"stages": stages}, SOURCE)
    written = parse_config(
        {
            "stages": stages,
            "transitions": [
                {"from": t.from_stage, "to": t.to_stage, "gates": t.gates}
                for t in Config().transitions
            ],
        },
        SOURCE,
    )
    assert by_default.transitions == written.transitions
    assert by_default.transitions[0].thresholds.evidence == "executions"  # sandbox is first
