"""promote, rollback and history as a user runs them: real subprocesses."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import Run
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")


def test_promote_without_a_terminal_needs_yes(run_cli: Run, tmp_path: Path) -> None:
    run_cli("init")
    write_skill(tmp_path / STAGING, "auth-v2")
    refused = run_cli("promote", "auth-v2")
    assert refused.returncode == 2
    assert "pass --yes" in refused.stderr
    assert (tmp_path / STAGING / "auth-v2").is_dir()
    done = run_cli("promote", "auth-v2", "--auto")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SKILL PROMOTION COMPLETE" in done.stdout
    assert "  Location:    .claude/skills/auth-v2" in done.stdout


def test_git_commit_outside_a_repository_is_a_setup_error(run_cli: Run, tmp_path: Path) -> None:
    run_cli("init")
    write_skill(tmp_path / STAGING, "auth-v2")
    refused = run_cli("promote", "auth-v2", "--yes", "--git-commit", "--json")
    assert refused.returncode == 2, refused.stderr
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "GIT_FAILED"
    assert "is not in a git repository" in error["message"]
    assert "without --git-commit" in error["hint"]
    assert (tmp_path / STAGING / "auth-v2").is_dir()  # nothing moved
    assert not (tmp_path / ".claude/skills/auth-v2").exists()


def test_deploy_and_notify_with_nothing_configured_say_so(run_cli: Run, tmp_path: Path) -> None:
    run_cli("init")
    write_skill(tmp_path / STAGING, "auth-v2")
    done = run_cli("promote", "auth-v2", "--yes", "--deploy", "--notify", "--json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert [w.split(":")[0] for w in result["warnings"]] == ["--deploy", "--notify"]
    assert "[hooks] deploy is not set, so nothing is deployed" in done.stderr
    assert "[notifications] urls is empty, so none is sent" in done.stderr


def test_promote_json_and_exit_code_on_failure(run_cli: Run, tmp_path: Path) -> None:
    run_cli("init")
    bad = write_skill(tmp_path / STAGING, "bad")
    (bad / "execute.sh").chmod(0o644)
    write_skill(tmp_path / STAGING, "good")
    result = run_cli("promote", "bad", "good", "--yes", "--json")
    assert result.returncode == 1
    by_name = {r["skill_name"]: r for r in json.loads(result.stdout)}
    assert by_name["good"]["success"] is True
    assert by_name["bad"]["success"] is False
    assert by_name["bad"]["error"].startswith("gates failed: structure")
    failing = [g for g in by_name["bad"]["gates"] if g["status"] == "fail"]
    assert [g["gate"] for g in failing] == ["structure"]


def test_dry_run_force_and_history(run_cli: Run, tmp_path: Path) -> None:
    run_cli("init")
    bad = write_skill(tmp_path / STAGING, "hotfix")
    (bad / "execute.sh").chmod(0o644)
    failing = run_cli("promote", "hotfix", "--dry-run")
    assert failing.returncode == 1
    assert "✗ Dry run: would not promote: gates failed: structure" in failing.stdout
    dry = run_cli("promote", "hotfix", "--dry-run", "--force", "--reason", "INC-7")
    assert dry.returncode == 0 and "Dry run" in dry.stdout
    assert (tmp_path / STAGING / "hotfix").is_dir()
    forced = run_cli("promote", "hotfix", "--yes", "--force", "--reason", "INC-7", "--by", "oncall")
    assert forced.returncode == 0, forced.stderr
    assert "Forced:" in forced.stdout
    events = json.loads(run_cli("history", "hotfix", "--json").stdout)
    assert sorted((e["kind"], e["actor"], e["reason"]) for e in events) == [
        ("force", "oncall", "INC-7"),
        ("promote", "oncall", "INC-7"),
    ]
    assert events[0]["id"] > events[1]["id"]  # newest first
    for command in (("history", "nosuch"), ("rollback", "nosuch", "--reason", "r", "--yes")):
        unknown = run_cli(*command)
        assert unknown.returncode == 2 and "no skill named 'nosuch' in the store" in unknown.stderr


def test_rollback_cli(run_cli: Run, tmp_path: Path) -> None:
    run_cli("init")
    for version in ("1.0.0", "1.1.0"):
        write_skill(tmp_path / STAGING, "auth-v2", extra={"version": version})
        assert run_cli("promote", "auth-v2", "--yes", "--overwrite").returncode == 0
    missing_reason = run_cli("rollback", "auth-v2", "--yes")
    assert missing_reason.returncode == 2 and "--reason" in missing_reason.stderr
    before = run_cli("history", "auth-v2", "--json").stdout
    dry = run_cli("rollback", "auth-v2", "--reason", "fidelity", "--dry-run")  # no terminal: ok
    assert dry.returncode == 0, dry.stderr
    assert "Dry run: auth-v2 1.1.0 would roll back: 1.0.0 from the archive" in dry.stdout
    planned = json.loads(
        run_cli("rollback", "auth-v2", "--reason", "r", "--dry-run", "--json").stdout
    )
    assert (planned["dry_run"], planned["version"], planned["previous_version"]) == (
        True,
        "1.0.0",
        "1.1.0",
    )
    assert run_cli("history", "auth-v2", "--json").stdout == before  # nothing recorded
    assert "version: 1.1.0" in (tmp_path / ".claude/skills/auth-v2/SKILL.md").read_text()
    result = run_cli(
        "rollback", "auth-v2", "--reason", "fidelity", "--trigger-metric", "fidelity=0.83", "--yes"
    )
    assert result.returncode == 0, result.stderr
    assert "Rolled back auth-v2: 1.1.0 → 1.0.0" in result.stdout
    history = run_cli("history", "auth-v2").stdout.splitlines()
    assert "rollback  auth-v2 1.1.0 → 1.0.0  in production  by " in history[0]
    assert history[1].strip() == "reason: fidelity"
    elsewhere = run_cli("rollback", "auth-v2", "--stage", "staged", "--reason", "r", "--yes")
    assert elsewhere.returncode == 1 and "auth-v2 is not in staged" in elsewhere.stderr


def test_a_failed_command_asked_for_json_prints_the_error_as_json(
    run_cli: Run, tmp_path: Path
) -> None:
    assert run_cli("init").returncode == 0
    for args in (
        ("promote", "nowhere", "--yes", "--json"),
        ("status", "nowhere", "--json"),
        ("compare", "nowhere", "1.0.0", "2.0.0", "--json"),
        ("metrics", "ingest", "--path", str(tmp_path / "missing"), "--json"),
        ("metrics", "record", "--skill", "s", "--fidelity", "2", "--json"),  # click's own check
    ):
        failed = run_cli(*args)
        assert failed.returncode == 2, (args, failed.stdout, failed.stderr)
        error = json.loads(failed.stdout)["error"]
        assert set(error) == {"code", "message", "path", "line", "hint", "exit_code"}
        assert (error["exit_code"], error["code"]) == (2, "USAGE")
        assert error["message"] in failed.stderr  # people still read it on stderr
    plain = run_cli("status", "nowhere")
    assert plain.returncode == 2 and plain.stdout == ""


def _on_a_terminal(tmp_path: Path, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`skillstage ARGS` with a real pseudo-terminal as stdin, typing `answer`; stdout and
    stderr are pipes (as a script reading --json would have them)."""
    leader, follower = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "skillstage", *args],
        cwd=tmp_path,
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        text=True,
    )
    os.close(follower)
    os.write(leader, answer.encode())
    try:
        out, err = process.communicate(timeout=60)
    finally:
        os.close(leader)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_json_on_a_terminal_still_asks_and_keeps_stdout_json(run_cli: Run, tmp_path: Path) -> None:
    run_cli("init")
    write_skill(tmp_path / STAGING, "auth-v2")
    declined = _on_a_terminal(tmp_path, "n\n", "promote", "auth-v2", "--json")
    assert "Promote skill to" in declined.stderr
    (result,) = json.loads(declined.stdout)
    assert (result["success"], result["error"]) == (False, "cancelled")
    assert (tmp_path / STAGING / "auth-v2").is_dir()

    accepted = _on_a_terminal(tmp_path, "y\n", "promote", "auth-v2", "--json")
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)[0]["success"] is True
    kept = _on_a_terminal(tmp_path, "n\n", "rollback", "auth-v2", "--reason", "r", "--json")
    assert "Roll back auth-v2?" in kept.stderr and kept.returncode == 1
    assert json.loads(kept.stdout)["error"]["code"] == "CANCELLED"
    # The end of input at the prompt (Ctrl-D) is a refusal too, said as JSON.
    ended = _on_a_terminal(tmp_path, "\x04", "rollback", "auth-v2", "--reason", "r", "--json")
    assert ended.returncode == 1, ended.stderr
    assert json.loads(ended.stdout)["error"]["code"] == "CANCELLED"
    assert (tmp_path / ".claude/skills/auth-v2").is_dir()
