"""Start-up cost cannot silently come back: each short command, run as a real process, imports
only what it uses (issue "fast start": `--help`, `list`, `history`, `status`, `validate` were
0.3-0.45 s because every command's module and the libraries behind them were imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skillstage.cli.main import COMMANDS, cli
from tests.skilltree import write_skill

# Runs one command in-process and prints the modules it imported, its output swallowed.
_PROBE = """
import contextlib, io, json, sys
from skillstage.cli.main import _run
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = _run(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

# Never needed by a short command: the libraries behind other commands.
_HEAVY = {
    "rich",
    "sqlalchemy",
    "alembic",
    "pydantic",
    "apprise",
    "scipy",
    "numpy",
    "tenacity",
    "pybreaker",
    "mmh3",
    "regex",
    "semver",
    "psycopg",
}
# Only the command being run is imported, never another command's module.
_COMMAND_MODULES = {target.split(":")[0] for target, _ in COMMANDS.values()}
# What a read-only listing never needs: the checks, the gates, the promoter's orchestration,
# the loader and the watcher.
_NOT_FOR_READING = {
    "skillstage.skill.checks",
    "skillstage.lifecycle.gates",
    "skillstage.lifecycle.readiness",
    "skillstage.runtime.loader",
    "skillstage.watch.watcher",
    "skillstage.metrics.ingest",
    "subprocess",
    "difflib",
}


def _imported(project: Path, *args: str) -> set[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        cwd=project,
        env={**environment, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["code"] in (0, 1), result
    return set(result["modules"])


def _top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small project: one skill promoted to staging (so the store has history), one in
    prototype."""
    root = tmp_path_factory.mktemp("startup")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}

    def skillstage(*args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "skillstage", *args],
            cwd=root,
            env=environment,
            check=True,
            capture_output=True,
            timeout=120,
        )

    skillstage("init")
    write_skill(root / ".claude" / "skills" / "prototype", "release-notes")
    write_skill(root / ".claude" / "skills" / "prototype", "changelog")
    skillstage("promote", "release-notes", "--yes")
    return root


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_import_no_command_and_read_no_config(
    project: Path, args: list[str]
) -> None:
    modules = _imported(project, *args)
    assert not modules & _COMMAND_MODULES
    assert not (heavy := _top_level(modules) & (_HEAVY | {"yaml", "msgspec", "shutil"})), heavy
    assert not {m for m in modules if m.startswith(("skillstage.config", "skillstage.store"))}


@pytest.mark.parametrize("args", [["list"], ["history"], ["list", "--json"]])
def test_reading_commands_import_only_what_reading_needs(project: Path, args: list[str]) -> None:
    modules = _imported(project, *args)
    assert not (heavy := _top_level(modules) & _HEAVY), heavy
    assert not (needless := modules & _NOT_FOR_READING), needless
    assert modules & _COMMAND_MODULES == {COMMANDS[args[0]][0].split(":")[0]}


def test_status_imports_no_other_command_and_no_heavy_library(project: Path) -> None:
    modules = _imported(project, "status", "release-notes")
    assert "skillstage.lifecycle.readiness" in modules  # it did the work
    assert not (heavy := _top_level(modules) & _HEAVY), heavy
    assert modules & _COMMAND_MODULES == {"skillstage.cli.readiness"}


def test_validating_one_skill_imports_neither_the_store_nor_a_terminal_library(
    project: Path,
) -> None:
    skill = project / ".claude" / "skills" / "prototype" / "changelog"
    modules = _imported(project, "validate", str(skill))
    assert "skillstage.skill.checks" in modules  # it did the work
    assert not (heavy := _top_level(modules) & _HEAVY), heavy
    assert not (needless := {"sqlite3", "subprocess", "difflib"} & modules), needless
    assert not {m for m in modules if m.startswith("skillstage.store")}


def test_the_command_list_shows_every_command_on_one_line() -> None:
    from click.testing import CliRunner

    output = CliRunner().invoke(cli, ["--help"], terminal_width=100).output
    listing = output.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listing if line.strip()] == sorted(COMMANDS)
    for name, (_, summary) in COMMANDS.items():
        assert f"  {name}" in output and summary in output, name


def test_history_reads_the_store_only_and_never_loads_the_yaml_reader(project: Path) -> None:
    modules = _imported(project, "history")
    assert "skillstage.store.store" in modules  # it did the work
    assert not (needless := {"yaml", "skillstage.skill.frontmatter"} & modules), needless


def test_a_promotion_without_metric_or_approval_gates_loads_no_metrics(project: Path) -> None:
    modules = _imported(project, "promote", "changelog", "--yes", "--dry-run")
    assert "skillstage.lifecycle.gates" in modules  # it did the work
    assert not (heavy := _top_level(modules) & _HEAVY), heavy
    needless = {"skillstage.lifecycle.readiness", "skillstage.metrics.compare"} & modules
    assert not needless, needless


def test_help_wraps_to_the_terminal_width_given_in_columns(project: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    for columns in ("60", "120"):
        done = subprocess.run(
            [sys.executable, "-m", "skillstage", "--help"],
            cwd=project,
            env={**environment, "COLUMNS": columns},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        widest = max(len(line) for line in done.stdout.splitlines())
        assert widest <= min(int(columns), 100), (columns, widest)
        assert widest > 50
