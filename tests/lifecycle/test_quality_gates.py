"""Seed 001's quality gates with the real tools (pytest, coverage.py, ruff, mypy, detect-secrets)
on small Python components in a project made by `init --preset seed001`.

One project per module: the tool runs are what take time, so each component is built once.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from skillstage import api
from skillstage.config import SEED001_CONFIG_TOML, Project, load_config_file, parse_config
from skillstage.lifecycle.gates import GateContext, GateResult
from skillstage.lifecycle.transition_gates import gates_for
from skillstage.skill.checks import check_skill
from skillstage.skill.read import read_skill
from skillstage.store import Store

VENV_BIN = Path(sys.executable).parent
AWS_KEY = "AKIAIOSFODNN7ABCDEFG"  # the shape of an AWS access key id, not a real one


def component(
    project: Project, name: str, files: dict[str, str], stage: str = "development"
) -> Path:
    """A Python component: a SKILL.md naming it, and its files."""
    directory = project.stage_path(stage, name)
    directory.mkdir(parents=True)
    (directory / "SKILL.md").write_text(
        f"---\nname: {name}\nversion: 1.0.0\ndescription: The {name} component. Use it when "
        "testing.\n---\n# Component\n\nDoes things.\n"
    )
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def covered_module(executed: int, total: int) -> str:
    """A module of `total` statements of which importing it runs `executed`: assignments, then a
    function (its `def` runs) whose body never does."""
    body = total - executed
    lines = [f"a{i} = {i}" for i in range(executed - 1)] + ["def unused() -> None:"]
    return "\n".join(lines + ["    print(1)"] * body) + "\n"


PYPROJECT = """\
[project]
name = "{name}"
version = "1.0.0"

[tool.coverage.run]
source = ["pkg"]

[tool.mypy]
strict = true
"""


def covered_component(project: Project, name: str, executed: int, total: int) -> Path:
    return component(
        project,
        name,
        {
            "pyproject.toml": PYPROJECT.format(name=name),
            "pkg/__init__.py": "",
            "pkg/mod.py": covered_module(executed, total),
            "tests/test_mod.py": "import pkg.mod\n\n\ndef test_import() -> None:\n"
            "    assert pkg.mod.a0 == 0\n",
        },
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("seed001")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SKILLSTAGE_DATABASE_URL", raising=False)
        api.init(root, preset="seed001")
        yield load_config_file(root / "skillstage.toml")


@pytest.fixture(scope="module")
def store(project: Project) -> Iterator[Store]:
    with Store.open(project.database_url) as opened:
        yield opened


def with_quality(project: Project, **tables: dict[str, Any]) -> Project:
    """The project with some [quality] tables changed."""
    data = tomllib.loads((project.root / "skillstage.toml").read_text())
    for key, value in tables.items():
        if key == "quality":
            data["quality"] = {**data.get("quality", {}), **value}
        else:
            data["quality"][key] = {**data["quality"].get(key, {}), **value}
    config = parse_config(data, project.root / "skillstage.toml")
    return Project(project.root, config, project.source)


def check(
    project: Project, store: Store, gate: str, path: Path, to_stage: str = "staging"
) -> GateResult:
    """Run one gate of the transition into `to_stage` on the component at `path`."""
    transition = next(t for t in project.config.transitions if t.to_stage == to_stage)
    chosen = [g for g in gates_for(project, transition) if g.name == gate]
    assert chosen, f"{gate} is not a gate of {transition.from_stage} → {to_stage}"
    skill = read_skill(path, project.config.validation)
    context = GateContext(
        project,
        store,
        skill,
        check_skill(path, project.config.validation, expected_name=skill.name),
        transition.from_stage,
        to_stage,
        project.stage_path(to_stage, skill.name),
        False,
    )
    return chosen[0].check(context)


# -- the preset ----------------------------------------------------------------------------


def test_preset_writes_seed_001_stages_gates_and_thresholds(project: Project) -> None:
    assert (project.root / "skillstage.toml").read_text() == SEED001_CONFIG_TOML
    config = project.config
    assert list(config.stages) == ["development", "staging", "production"]
    moves = {(t.from_stage, t.to_stage): t for t in config.transitions}
    assert set(moves) == {("development", "staging"), ("staging", "production")}
    seed_gates = {"tests", "coverage", "lint", "types", "secrets", "integration-tests-exist"}
    for transition in moves.values():
        assert seed_gates <= set(transition.gates)
    assert moves["development", "staging"].thresholds.min_coverage == 70
    assert moves["staging", "production"].thresholds.min_coverage == 80
    assert "approval" in moves["staging", "production"].gates  # the sign-off checklist items
    assert config.quality.coverage.minimum == 60
    assert config.quality.secrets.baseline == ".secrets.baseline"
    assert (project.root / ".claude/skills/development").is_dir()


def test_init_print_with_the_preset_shows_it(tmp_path: Path) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "skillstage", "init", "--print", "--preset", "seed001"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert shown.stdout == SEED001_CONFIG_TOML
    assert not (tmp_path / "skillstage.toml").exists()


# -- coverage ------------------------------------------------------------------------------


def test_coverage_599_of_1000_fails_a_60_percent_minimum_and_600_passes(
    project: Project, store: Store
) -> None:
    at_60 = with_quality(project, coverage={"minimum": 60})
    # The minimum of a transition that sets none: take the thresholds' one away.
    at_60.config.transitions[0].thresholds = msgspec.structs.replace(
        at_60.config.transitions[0].thresholds, min_coverage=None
    )
    short = check(at_60, store, "coverage", covered_component(project, "short", 599, 1000))
    assert short.status == "fail"
    assert short.message.startswith("coverage 59.9% is below the minimum 60% (0.10 points short)")
    assert short.details[0] == "pkg/mod.py: 401 missing line(s) (600-1000)"
    assert short.criteria[0]["actual"] == 59.9 and not short.criteria[0]["passed"]

    enough = check(at_60, store, "coverage", covered_component(project, "enough", 600, 1000))
    assert enough.status == "pass", enough
    assert enough.message == "coverage 60.0% (minimum 60%)"
    # The transition's own minimum (70% into staging) wins over [quality.coverage] minimum.
    into_staging = check(project, store, "coverage", project.stage_path("development", "enough"))
    assert into_staging.status == "fail"
    assert "below the minimum 70%" in into_staging.message
    # Nothing the run wrote is in the component: its digest is what was checked.
    assert sorted(p.name for p in project.stage_path("development", "enough").iterdir()) == [
        "SKILL.md",
        "pkg",
        "pyproject.toml",
        "tests",
    ]


def test_coverage_from_a_coverage_xml_the_component_carries(project: Project, store: Store) -> None:
    xml = (
        '<?xml version="1.0" ?>\n<coverage lines-valid="10" lines-covered="7" branches-valid="0" '
        'branches-covered="0"><packages><package name="pkg"><classes>'
        '<class name="mod.py" filename="pkg/mod.py"><lines><line number="1" hits="1"/>'
        '<line number="8" hits="0"/><line number="9" hits="0"/><line number="10" hits="0"/>'
        "</lines></class></classes></package></packages></coverage>\n"
    )
    path = component(project, "from-xml", {"coverage.xml": xml})
    from_report = with_quality(project, coverage={"report": "coverage.xml"})
    into_staging = check(from_report, store, "coverage", path)
    assert (into_staging.status, into_staging.message) == ("pass", "coverage 70.0% (minimum 70%)")
    into_production = check(from_report, store, "coverage", path, to_stage="production")
    assert into_production.status == "fail"
    assert into_production.message.startswith("coverage 70.0% is below the minimum 80%")
    assert into_production.details == ["pkg/mod.py: 3 missing line(s) (8-10)"]


# -- tests ---------------------------------------------------------------------------------


def test_pytest_counts_passing_and_failing(project: Project, store: Store) -> None:
    tests = "def test_a() -> None:\n    pass\n\n\ndef test_b() -> None:\n    pass\n"
    green = component(project, "green", {"pyproject.toml": "", "tests/test_x.py": tests})
    passed = check(project, store, "tests", green)
    assert (passed.status, passed.message) == ("pass", "pytest: 2 passed")

    failing = tests + "\n\ndef test_c() -> None:\n    assert 1 == 2, 'one is not two'\n"
    red = component(project, "red", {"pyproject.toml": "", "tests/test_x.py": failing})
    failed = check(project, store, "tests", red)
    assert failed.status == "fail"
    assert failed.message == "pytest: 2 passed, 1 failed (exit 1)"
    assert failed.details[0].startswith("tests.test_x::test_c: AssertionError: one is not two")


def test_a_skill_keeps_test_sh(project: Project, store: Store) -> None:
    skill = component(project, "a-skill", {"test.sh": "#!/bin/bash\necho broken >&2\nexit 3\n"})
    (skill / "test.sh").chmod(0o755)
    result = check(project, store, "tests", skill)
    assert (result.status, result.message) == ("fail", "Tests failed (exit code 3)")
    plain = component(project, "plain-skill", {"notes.md": "no tests\n"})
    assert check(project, store, "tests", plain).message == "no test.sh"
    # A tests/ folder of fixtures and a script's pyproject.toml, but no pytest tests: as before.
    fixtures = {"tests/case.json": "{}\n", "pyproject.toml": ""}
    assert check(project, store, "tests", component(project, "fixtures", fixtures)).message == (
        "no test.sh"
    )


# -- lint, types ---------------------------------------------------------------------------


def test_lint_clean_and_a_finding_with_file_and_line(project: Project, store: Store) -> None:
    clean = component(project, "tidy", {"pkg/a.py": "VALUE = 1\n"})
    assert check(project, store, "lint", clean).message == "ruff: clean"
    messy = component(project, "messy", {"pkg/a.py": "VALUE = 1\n\nimport os\n"})
    result = check(project, store, "lint", messy)
    assert result.status == "fail"
    assert result.message == "ruff: 1 finding(s) (F401)"
    assert "pkg/a.py:3: F401 `os` imported but unused" in result.details


def test_types_clean_and_an_error_say_which_checker_ran(project: Project, store: Store) -> None:
    config = "[tool.mypy]\nstrict = true\n"
    good = component(project, "typed", {"pyproject.toml": config, "a.py": "x: int = 1\n"})
    bad = component(project, "mistyped", {"pyproject.toml": config, "a.py": 'x: int = "one"\n'})
    as_mypy = with_quality(project, types={"checker": "mypy", "mypy": str(VENV_BIN / "mypy")})
    assert check(as_mypy, store, "types", good).message == "mypy: clean"
    result = check(as_mypy, store, "types", bad)
    assert result.status == "fail" and result.message == "mypy: 1 error(s)"
    assert result.details[0].startswith("a.py:1: error: Incompatible types in assignment")


# -- secrets -------------------------------------------------------------------------------


def test_secrets_against_a_detect_secrets_baseline(project: Project, store: Store) -> None:
    known = {"config.py": 'password = "hunter2xyzABC123secret"\n'}
    path = component(project, "vault", known)
    baseline = subprocess.run(
        [str(VENV_BIN / "detect-secrets"), "scan", "config.py"],
        cwd=path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (path / ".secrets.baseline").write_text(baseline)
    result = check(project, store, "secrets", path)
    assert result.status == "pass", result
    assert result.message == (
        "detect-secrets: clean against .secrets.baseline (1 recorded secret(s) allowed)"
    )
    assert (path / ".secrets.baseline").read_text() == baseline  # not rewritten

    leaky = component(project, "leaky", {**known, "aws.py": f'KEY = "{AWS_KEY}"\n'})
    (leaky / ".secrets.baseline").write_text(baseline)
    result = check(project, store, "secrets", leaky)
    assert result.status == "fail"
    assert result.message == "detect-secrets: 1 new secret(s) against .secrets.baseline"
    assert result.details[0] == "aws.py:1: AWS Access Key"


def test_secrets_without_a_baseline_use_the_built_in_scanner(
    project: Project, store: Store
) -> None:
    builtin = with_quality(project, secrets={"scanner": "auto", "baseline": None})
    path = component(project, "fast-path", {"aws.py": f'KEY = "{AWS_KEY}"\n'})
    result = check(builtin, store, "secrets", path)
    assert result.status == "fail"
    assert result.message == "built-in secret scanner: 1 secret(s)"
    assert result.details[0].startswith("aws.py:1: an AWS access key id")


# -- integration tests ---------------------------------------------------------------------


def test_integration_tests_exist_by_path_or_marker(project: Project, store: Store) -> None:
    test = "def test_flow() -> None:\n    pass\n"
    by_path = component(project, "wired", {"tests/integration/test_flow.py": test})
    result = check(project, store, "integration-tests-exist", by_path)
    assert (result.status, result.message) == (
        "pass",
        "1 integration test file(s) under tests/integration",
    )
    marked = "import pytest\n\n\n@pytest.mark.integration\n" + test
    by_marker = component(project, "marked", {"tests/test_flow.py": marked})
    result = check(project, store, "integration-tests-exist", by_marker)
    assert (result.status, result.message) == ("pass", "1 test file(s) marked integration")
    none = component(project, "unit-only", {"tests/test_unit.py": test})
    result = check(project, store, "integration-tests-exist", none)
    assert result.status == "fail"
    assert result.message == (
        "no integration tests: looked for a test file under tests/integration or a test marked "
        "@pytest.mark.integration"
    )


# -- missing tools -------------------------------------------------------------------------


def test_a_missing_tool_fails_its_gate_saying_how_to_install_it(
    project: Project, store: Store, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"  # an interpreter with neither coverage nor pytest
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = bare / "bin" / "python"
    path = covered_component(project, "untooled", 1, 2)
    result = check(with_quality(project, quality={"python": str(python)}), store, "coverage", path)
    assert result.status == "fail"
    assert result.message == (
        f"coverage.py is not installed for {python}: `{python} -m pip install coverage`, or set "
        "[quality] python to an interpreter that has it"
    )
    # No pyright, and mypy not configured for the component: the types gate names both ways.
    plain = component(project, "untyped", {"a.py": "x = 1\n"})
    result = check(
        with_quality(project, quality={"python": str(python)}, types={"pyright": None}),
        store,
        "types",
        plain,
    )
    assert result.status == "fail"
    assert "pyright is not installed" in result.message
    assert "`pip install pyright`" in result.message
    assert "mypy is not configured for this component either" in result.message
    missing_ruff = with_quality(project, lint={"ruff": str(tmp_path / "no-ruff")})
    result = check(missing_ruff, store, "lint", plain)
    assert result.message == (
        f"ruff is not at {tmp_path / 'no-ruff'}: install it with `pip install ruff`, or fix "
        "the path"
    )


# -- a promotion ---------------------------------------------------------------------------


def test_a_python_component_is_promoted_development_to_staging(
    project: Project, store: Store
) -> None:
    path = covered_component(project, "orchestration", 750, 1000)  # 75%: over staging's 70%
    (path / "tests/integration").mkdir()
    (path / "tests/integration/test_flow.py").write_text(
        "import pkg.mod\n\n\ndef test_flow() -> None:\n    assert pkg.mod.a1 == 1\n"
    )
    (path / ".secrets.baseline").write_text(
        subprocess.run(
            [str(VENV_BIN / "detect-secrets"), "scan", "--all-files"],
            cwd=path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    with_mypy = with_quality(project, types={"checker": "mypy", "mypy": str(VENV_BIN / "mypy")})
    [result] = api.promote(with_mypy, ["orchestration"], actor="tester")
    gates = {g.gate: g for g in result.gates}
    assert result.success, [g for g in result.gates if g.status == "fail"]
    assert gates["coverage"].message == "coverage 75.0% (minimum 70%)"
    assert gates["tests"].message == "pytest: 2 passed"
    assert gates["lint"].message == "ruff: clean"
    assert gates["types"].message == "mypy: clean"
    assert gates["integration-tests-exist"].status == "pass"
    assert gates["secrets"].status == "pass"
    assert project.stage_path("staging", "orchestration").is_dir()
    assert not path.exists()


def test_coverage_from_a_coverage_data_file(project: Project, store: Store) -> None:
    path = covered_component(project, "from-data", 900, 1000)
    subprocess.run(
        [sys.executable, "-m", "coverage", "run", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=path,
        capture_output=True,
        check=True,
    )
    from_data = with_quality(project, coverage={"report": ".coverage"})
    result = check(from_data, store, "coverage", path, to_stage="production")
    assert (result.status, result.message) == ("pass", "coverage 90.0% (minimum 80%)")


def test_a_command_gate_named_like_a_quality_gate_keeps_its_command(project: Project) -> None:
    data = tomllib.loads(SEED001_CONFIG_TOML)
    data["gates"] = {"lint": {"command": "ruff check src"}}  # written before `lint` was built in
    config = parse_config(data, project.root / "skillstage.toml")
    gates = gates_for(Project(project.root, config, project.source), config.transitions[0])
    lint = next(g for g in gates if g.name == "lint")
    assert type(lint).__name__ == "CommandGate"
