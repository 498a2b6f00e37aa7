"""Odd and hostile input on the command line: every case a clear error and its exit code, never
a traceback (exit 3), and nothing half-done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import Run
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
LIVE = Path(".claude/skills")
NOT_UTF8 = os.fsdecode(b"jos\xe9")  # what Python makes of bytes that are not UTF-8


def _no_crash(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode != 3, done.stderr
    assert "Traceback" not in done.stderr and "unexpected error" not in done.stderr


@pytest.fixture
def project(run_cli: Run, tmp_path: Path) -> Path:
    assert run_cli("init").returncode == 0
    write_skill(tmp_path / STAGING, "auth-v2")
    return tmp_path


def test_an_actor_that_is_not_utf8_is_refused_before_anything_moves(
    run_cli: Run, project: Path
) -> None:
    refused = run_cli("promote", "auth-v2", "--yes", env={"USER": NOT_UTF8})
    assert refused.returncode == 2, refused.stderr
    assert "$USER is not valid UTF-8" in refused.stderr and "--by" in refused.stderr
    for by in (NOT_UTF8, " "):
        assert run_cli("promote", "auth-v2", "--yes", "--by", by).returncode == 2
    assert (project / STAGING / "auth-v2").is_dir() and not (project / LIVE / "auth-v2").exists()
    # The project is not wedged: everything goes on.
    assert run_cli("list").returncode == 0
    assert run_cli("promote", "auth-v2", "--yes", "--by", "alice").returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ("history", NOT_UTF8),
        ("rollback", NOT_UTF8, "--reason", "r", "--dry-run"),
        ("report", NOT_UTF8),
        ("compare", NOT_UTF8, "a", "b"),
        ("metrics", "record", "--skill", "auth-v2", "--subject", NOT_UTF8),
        ("metrics", "record", "--skill", "auth-v2", "--tag", f"a={NOT_UTF8}"),
    ],
)
def test_text_that_is_not_utf8_is_a_usage_error(
    run_cli: Run, project: Path, args: tuple[str, ...]
) -> None:
    done = run_cli(*args)
    _no_crash(done)
    assert done.returncode == 2, done.stderr
    assert "not valid UTF-8" in done.stderr


def test_a_name_longer_than_the_system_takes_is_a_usage_error(run_cli: Run, project: Path) -> None:
    long = "a" * 300
    for args in (
        ("promote", long, "--dry-run"),
        ("status", long),
        ("validate", long),
        ("signoff", "template", long, "--to", "production"),
        ("--config", long, "list"),
    ):
        done = run_cli(*args)
        _no_crash(done)
        assert done.returncode == 2, (args, done.stderr)
        assert "file name too long" in done.stderr and "characters)" in done.stderr


def test_a_symlink_loop_in_a_stage_folder_holds_no_skill(run_cli: Run, project: Path) -> None:
    (project / STAGING / "l1").symlink_to("l2")
    (project / STAGING / "l2").symlink_to("l1")
    for args in (
        ("list",),
        ("validate", "--all"),
        ("sla", "check"),
        ("doctor",),
        ("status", "auth-v2"),
    ):
        done = run_cli(*args)
        _no_crash(done)
        assert done.returncode in (0, 1), (args, done.stderr)
    assert "auth-v2" in run_cli("list").stdout


def test_a_directory_name_with_a_newline_is_reported_not_skipped(
    run_cli: Run, project: Path
) -> None:
    write_skill(
        project / STAGING, "odd\nname", frontmatter={"name": "auth-v2", "description": "x" * 40}
    )
    listed = run_cli("list")
    assert listed.returncode == 0
    assert "unreadable: .claude/skills/staging/odd\nname" in listed.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("validate", "--run-tests", "--test-timeout", "nan"),
        ("validate", "--run-tests", "--test-timeout", "inf"),
        ("promote", "auth-v2", "--yes", "--lock-timeout", "nan"),
        ("history", "--limit", "99999999999999999999"),
        ("metrics", "quarantine", "--limit", "99999999999999999999"),
    ],
)
def test_numbers_out_of_range_are_usage_errors(
    run_cli: Run, project: Path, args: tuple[str, ...]
) -> None:
    done = run_cli(*args)
    assert done.returncode == 2, done.stderr
    assert "Invalid value" in done.stderr


def test_promote_with_stdin_closed_asks_for_yes(project: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    done = subprocess.run(
        ["sh", "-c", f'exec "{sys.executable}" -m skillstage promote auth-v2 <&-'],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "pass --yes" in done.stderr


def test_promote_with_nothing_to_promote_says_so_first(run_cli: Run, project: Path) -> None:
    done = run_cli("promote")
    assert done.returncode == 2
    assert "nothing to promote" in done.stderr
    blank = run_cli("promote", "", "--yes")
    assert blank.returncode == 2 and "'' is not a skill name or path" in blank.stderr
    for args in (("validate", ""), ("init", "")):  # not the working directory
        empty = run_cli(*args)
        assert empty.returncode == 2 and "an empty path" in empty.stderr


def test_a_deeply_nested_checklist_is_refused(run_cli: Run, project: Path) -> None:
    config = project / "skillstage.toml"
    config.write_text(config.read_text().replace("approvers = []", 'approvers = ["alice"]'))
    deep = project / "deep.yaml"
    deep.write_text("[" * 100_000)
    done = run_cli(
        "approve", "auth-v2", "--to", "production", "--ticket", "APPROVAL_1",
        "--decision", "approved", "--by", "alice", "--checklist", str(deep),
    )  # fmt: skip
    _no_crash(done)
    assert done.returncode == 2 and "nesting depth" in done.stderr


def test_approving_with_no_approvers_configured_is_a_configuration_error(
    run_cli: Run, project: Path
) -> None:
    done = run_cli(
        "approve", "auth-v2", "--to", "production", "--ticket", "APPROVAL_1",
        "--decision", "rejected", "--by", "alice", "--json",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "no approvers are configured" in json.loads(done.stdout)["error"]["message"]


@pytest.mark.parametrize("json_output", [False, True])
def test_output_that_cannot_be_written_is_said_once(project: Path, json_output: bool) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "skillstage", "list", *(["--json"] if json_output else [])],
            cwd=project,
            env=environment,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 4, done.stderr
    assert done.stderr == "error: cannot write the output: No space left on device\n"


def test_json_stays_utf8_when_a_path_is_not(run_cli: Run, project: Path) -> None:
    odd = os.fsencode(project / STAGING) + b"/bad\xffname"
    os.mkdir(odd)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    for args in (("list", "--json"), ("validate", "--all", "--json")):
        done = subprocess.run(
            [sys.executable, "-m", "skillstage", *args],
            cwd=project,
            env=environment,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode in (0, 1), done.stderr
        json.loads(done.stdout.decode("utf-8"))  # strict UTF-8, then JSON


def test_init_does_not_nest_a_project_or_take_a_file(run_cli: Run, project: Path) -> None:
    inside = run_cli("init", cwd=project / STAGING / "auth-v2")
    assert inside.returncode == 2
    assert "is inside the project at" in inside.stderr and "--force" in inside.stderr
    assert not (project / STAGING / "auth-v2" / "skillstage.toml").exists()
    assert run_cli("init", "/dev/null").returncode == 2


def test_an_in_memory_store_is_refused(run_cli: Run, project: Path) -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        done = run_cli("list", env={"SKILLSTAGE_DATABASE_URL": url})
        assert done.returncode == 2, done.stderr
        assert "in-memory store" in done.stderr


def test_config_problems_say_what_is_wrong(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "skillstage.toml").mkdir()
    assert "skillstage.toml is not a file" in run_cli("list").stderr
    (tmp_path / "skillstage.toml").rmdir()
    (tmp_path / "skillstage.toml").write_bytes(b"\xef\xbb\xbf[stages]\n")
    done = run_cli("list")
    assert done.returncode == 2 and "byte order mark" in done.stderr


def test_a_huge_digest_prefix_is_not_a_store_failure(run_cli: Run, project: Path) -> None:
    assert run_cli("list").returncode == 0
    done = run_cli("compare", "auth-v2", "a" * 60_000, "1.0.0")
    assert done.returncode == 2, done.stderr
    assert "(60000 characters)" in done.stderr and len(done.stderr) < 1000
