"""The command line as a user meets it: real subprocesses, exit codes, output."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from skillstage.cli.main import cli, main
from tests.cli.conftest import Run
from tests.skilltree import write_skill


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, f"`skillstage {prefix}{name}` cannot be loaded"
        found.append((prefix + name, command))
        if isinstance(command, click.Group):
            found += _commands(command, prefix + name + " ")
    return found


@pytest.mark.parametrize(("name", "command"), _commands(cli))
def test_every_command_and_option_has_help(name: str, command: click.Command) -> None:
    assert command.help and command.help.strip(), f"`skillstage {name}` has no help text"
    for parameter in command.params:
        if isinstance(parameter, click.Option):
            assert parameter.help, f"`skillstage {name} {parameter.opts[0]}` has no help text"


def test_help_and_version(run_cli: Run) -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "validate" in result.stdout and "Exit codes" in result.stdout
    assert run_cli("--version").stdout.startswith("skillstage, version")


def test_validate_clean_skill_exits_0(run_cli: Run, tmp_path: Path) -> None:
    write_skill(tmp_path, "auth-v2")
    result = run_cli("validate", "auth-v2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        result.stdout.strip()
        == "1 skill(s) validated: 1 passed, 0 failed (0 error(s), 0 warning(s))"
    )


def test_validate_errors_exit_1_with_plain_lines_when_piped(run_cli: Run, tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "skill-name", extra={"version": "1.0"})
    (skill / "execute.sh").chmod(0o644)
    result = run_cli("validate", "skill-name")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert (
        "skill-name/execute.sh: error: EXECUTE_NOT_EXECUTABLE: execute.sh is not executable"
        in lines
    )
    assert "    hint: chmod +x skill-name/execute.sh" in lines
    assert any(
        line.startswith("skill-name/SKILL.md:3: error: VERSION_NOT_SEMVER") for line in lines
    )


def test_validate_json_report(run_cli: Run, tmp_path: Path) -> None:
    write_skill(tmp_path / "tree", "a", test=None)
    write_skill(tmp_path / "tree" / "nested", "b", extra={"dependencies": ["a", "ghost"]})
    result = run_cli("validate", "tree", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["summary"] == {"skills": 2, "failed": 1, "errors": 1, "warnings": 1}
    by_name = {skill["name"]: skill for skill in report["skills"]}
    assert [f["id"] for f in by_name["a"]["findings"]] == ["OPTIONAL_FILE_MISSING"]
    (missing,) = by_name["b"]["findings"]
    assert missing["id"] == "DEPENDENCY_MISSING" and "ghost" in missing["message"]
    assert len(by_name["a"]["digest"]) == 64


def test_strict_turns_warnings_into_failure(run_cli: Run, tmp_path: Path) -> None:
    write_skill(tmp_path, "a", extra={"when_to_use": "always"})
    assert run_cli("validate", "a").returncode == 0
    assert run_cli("validate", "a", "--strict").returncode == 1


def test_spec_only_ignores_skillstage_rules(run_cli: Run, tmp_path: Path) -> None:
    write_skill(tmp_path, "a", frontmatter={"name": "a", "description": "d"}, execute=False)
    assert run_cli("validate", "a").returncode == 1
    assert run_cli("validate", "a", "--spec-only").returncode == 0


def test_run_tests_shows_the_output_of_a_failing_test(run_cli: Run, tmp_path: Path) -> None:
    write_skill(tmp_path, "a", test="#!/bin/bash\necho 'ERROR: SKILL.md missing'\nexit 1\n")
    result = run_cli("validate", "a", "--run-tests")
    assert result.returncode == 1
    assert "TESTS_FAILED: Tests failed (exit code 1)" in result.stdout
    assert "ERROR: SKILL.md missing" in result.stdout


def test_usage_errors_exit_2(run_cli: Run) -> None:
    missing = run_cli("validate", "does-not-exist")
    assert missing.returncode == 2
    assert "does-not-exist does not exist" in missing.stderr
    assert run_cli("validate", "--no-such-flag").returncode == 2
    nothing = run_cli("validate")
    assert nothing.returncode == 2 and "nothing to validate" in nothing.stderr


def test_bad_config_names_file_and_key(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "skillstage.toml").write_text('[stages.staged]\npath = "s/{name}"\nsla_hourz = 3\n')
    result = run_cli("list")
    assert result.returncode == 2
    assert "skillstage.toml" in result.stderr
    assert "unknown key 'stages.staged.sla_hourz'" in result.stderr


def test_bad_config_value_and_bad_toml(run_cli: Run, tmp_path: Path) -> None:
    config = tmp_path / "skillstage.toml"
    config.write_text('[stages.staged]\npath = "staging"\n')
    result = run_cli("list")
    assert result.returncode == 2
    assert "bad value for 'stages.staged.path'" in result.stderr
    config.write_text("[stages\n")
    result = run_cli("list")
    assert result.returncode == 2 and "not valid TOML" in result.stderr


def test_pyproject_tool_table_is_read(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.skillstage.validation]\nmax_bodylines = 3\n'
    )
    result = run_cli("list")
    assert result.returncode == 2
    assert "unknown key 'tool.skillstage.validation.max_bodylines'" in result.stderr


def test_no_project_is_a_clear_usage_error(run_cli: Run) -> None:
    result = run_cli("list")
    assert result.returncode == 2
    assert "run `skillstage init`" in result.stderr


def test_unexpected_errors_exit_3_with_a_log(capsys: pytest.CaptureFixture[str]) -> None:
    @cli.command("explode", help="Raise an unexpected error (test only).")
    @click.option("--json", "as_json", is_flag=True, help="JSON (test only).")
    def explode(as_json: bool) -> None:
        raise RuntimeError("boom")

    try:
        with pytest.raises(SystemExit) as exited:
            main(["explode"])
        assert exited.value.code == 3
        err = capsys.readouterr().err
        assert "unexpected error: RuntimeError: boom" in err
        log = Path(err.split("the traceback is in ")[1].split(";")[0])
        assert "RuntimeError: boom" in log.read_text()
        with pytest.raises(RuntimeError):
            main(["--traceback", "explode"])
        with pytest.raises(SystemExit):
            main(["explode", "--json"])
        error = json.loads(capsys.readouterr().out)["error"]
        assert (error["code"], error["exit_code"]) == ("UNEXPECTED", 3)
        assert error["message"] == "unexpected error: RuntimeError: boom"
        assert "RuntimeError: boom" in Path(error["path"]).read_text()
    finally:
        cli.commands.pop("explode")


def test_init_where_no_directory_can_be_made_is_a_clear_error(run_cli: Run, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    failed = run_cli("init", str(blocker / "project"), "--json")
    assert failed.returncode == 2 and "unexpected error" not in failed.stderr
    error = json.loads(failed.stdout)["error"]
    assert error["message"].startswith("cannot create the project: Not a directory")


def test_test_timeout_option_and_skill_md_path(run_cli: Run, tmp_path: Path) -> None:
    write_skill(tmp_path, "a", test="#!/bin/bash\nsleep 20\n")
    result = run_cli("validate", "a/SKILL.md", "--run-tests", "--test-timeout", "0.5")
    assert result.returncode == 1
    assert "TESTS_TIMEOUT: test.sh did not finish within 0.5 s" in result.stdout


def _on_a_terminal(cwd: Path, *args: str, **env: str) -> tuple[int, str]:
    """Run skillstage on a real pseudo-terminal: its exit status and everything it showed."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "skillstage", *args],
        cwd=cwd,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "TERM": "xterm", **env},
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    return process.wait(timeout=60), output.decode(errors="replace")


@pytest.mark.parametrize("columns", ["160", "50"])
def test_terminal_output_is_a_table_with_fixes(columns: str, tmp_path: Path) -> None:
    """On a terminal findings are a numbered table, fixes below; on one too narrow for the
    table, lines that cut nothing."""
    skill = write_skill(tmp_path, "a")
    (skill / "execute.sh").chmod(0o644)
    code, text = _on_a_terminal(tmp_path, "validate", "a", COLUMNS=columns)
    assert code == 1
    assert "EXECUTE_NOT_EXECUTABLE" in text
    assert "chmod +x a/execute.sh" in text
    if columns == "50":
        assert "a/execute.sh: error: EXECUTE_NOT_EXECUTABLE: execute.sh is not executable" in text
    else:
        assert "How to fix" in text


def test_no_color_keeps_a_terminal_free_of_colours(run_cli: Run, tmp_path: Path) -> None:
    assert run_cli("init").returncode == 0
    write_skill(tmp_path / ".claude" / "skills" / "staging", "auth")
    for args in (["status", "auth"], ["promote", "nope", "--yes"]):
        _, coloured = _on_a_terminal(tmp_path, *args)
        assert "\x1b[" in coloured, args
        _, plain = _on_a_terminal(tmp_path, *args, NO_COLOR="1")
        assert "\x1b[" not in plain, args
        assert plain.replace("\r", "") == _strip_ansi(coloured).replace("\r", "")


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.mark.parametrize(
    "command",
    [
        ["validate", "a"],
        ["--help"],
        ["validate", "a", "--json"],
        ["history", "--limit", "x", "--json"],  # a usage error, as JSON
        ["status", "nosuch", "--json"],  # a skillstage error (no project), as JSON
    ],
)
def test_output_into_a_pipe_whose_reader_went_away_exits_141_quietly(
    command: list[str], tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    skill = write_skill(tmp_path, "a")
    (skill / "execute.sh").chmod(0o644)
    reader, writer = os.pipe()
    os.close(reader)  # `| head -0`: nobody will read what is written
    try:
        process = subprocess.run(
            [sys.executable, "-m", "skillstage", *command],
            cwd=tmp_path,
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(writer)
    assert process.returncode == 141
    # Nothing about the pipe; a failure's own message still goes to stderr.
    assert "Traceback" not in process.stderr and "Broken pipe" not in process.stderr
    assert (process.stderr == "") == ("--limit" not in command and "nosuch" not in command)


def test_a_store_that_cannot_be_used_exits_4_and_a_bad_store_url_2(
    run_cli: Run, tmp_path: Path
) -> None:
    assert run_cli("init").returncode == 0
    unsupported = run_cli("list", env={"SKILLSTAGE_DATABASE_URL": "mysql://x"})
    assert unsupported.returncode == 2
    assert "unsupported database 'mysql'" in unsupported.stderr
    (tmp_path / ".skillstage" / "state.db").write_text("garbage\n")
    for command in (["sla", "check"], ["metrics", "lag"], ["list", "--json"]):
        broken = run_cli(*command)
        assert broken.returncode == 4, command
        assert "cannot open the store" in broken.stderr and "Traceback" not in broken.stderr


def test_a_stage_may_be_named_by_its_label_and_a_bad_version_gets_a_close_one(
    run_cli: Run, tmp_path: Path
) -> None:
    assert run_cli("init").returncode == 0
    staging = tmp_path / ".claude" / "skills" / "staging"
    write_skill(staging, "auth")
    listed = run_cli("list", "--stage", "staging", "--json")  # the label of `staged`
    assert listed.returncode == 0, listed.stderr
    assert [s["name"] for s in json.loads(listed.stdout)["skills"]] == ["auth"]
    status = run_cli("status", "auth", "--to", "production", "--from", "staging", "--json")
    assert json.loads(status.stdout)["to_stage"] == "production", status.stderr
    unknown = run_cli("list", "--stage", "nope")
    assert unknown.returncode == 2 and "stages: prototype, staged, production" in unknown.stderr

    write_skill(staging, "logs", extra={"version": "v3.1"})
    refused = run_cli("status", "logs")
    assert "write e.g. 'version: 3.1.0'" in refused.stdout + refused.stderr


def test_init_print_json_gives_the_defaults_and_test_timeout_alone_warns(
    run_cli: Run, tmp_path: Path
) -> None:
    printed = run_cli("init", "--print", "--json")
    assert printed.returncode == 0
    defaults = json.loads(printed.stdout)
    assert defaults["stages"]["staged"]["sla_hours"] == 48
    assert [(t["from"], t["to"]) for t in defaults["transitions"]] == [
        ("prototype", "staged"),
        ("staged", "production"),
    ]
    write_skill(tmp_path, "a")
    alone = run_cli("validate", "a", "--test-timeout", "1")
    assert alone.returncode == 0
    assert "--test-timeout has no effect without --run-tests" in alone.stderr
