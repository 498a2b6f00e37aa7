"""What a newcomer tripped over (issue 14 §4), as they run it: real `skillstage` subprocesses on
real projects (and real git repositories), the store on SQLite and PostgreSQL where it counts.

- the runbook's spellings: `promote --skill X --from prototype --to staged`, `status --skill X
  --target-state production`, `rollback --skill X --from production --to staged --approver 0102`;
- a sign-off form's `approver: 0102` is 0102, not the octal 66;
- `init` in a git repository adds its state to .gitignore;
- the promotion box says where the skill came from;
- `history` shows a forced promotion once and a rollback's version change.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import pytest

from skillstage.config import load_config_file
from tests.cli.conftest import Run
from tests.lifecycle.test_readiness import NAME, configure, spam_filter
from tests.skilltree import write_skill

PROTOTYPE = Path(".claude/skills/prototype")
STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def usage_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    """Refused as a usage error (exit 2) that says `message`, without a traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def version_in(root: Path, stage_dir: Path, name: str = "auth-v2") -> str | None:
    skill_md = root / stage_dir / name / "SKILL.md"
    if not skill_md.is_file():
        return None
    return skill_md.read_text().split("version: ")[1].split()[0]


@pytest.fixture
def cli(run_cli: Run, store_url: str) -> Run:
    """`skillstage …` in a subprocess, on the test's store (SQLite, then PostgreSQL)."""
    return functools.partial(run_cli, env={"SKILLSTAGE_DATABASE_URL": store_url})


# -- the runbook's spellings ---------------------------------------------------------------------


def test_promote_skill_from_to_as_the_runbook_writes_it(run_cli: Run, tmp_path: Path) -> None:
    ok(run_cli("init"))
    write_skill(tmp_path / PROTOTYPE, "auth-v2")

    done = ok(
        run_cli("promote", "--skill", "auth-v2", "--from", "prototype", "--to", "staged", "--yes")
    )
    assert "  Skill:       auth-v2 1.0.0\n  From:        prototype\n  To:          staged\n" in (
        done.stdout
    )
    assert version_in(tmp_path, STAGING) == "1.0.0"
    assert version_in(tmp_path, PROTOTYPE) is None

    # --from is checked against where the skill is: it is in staged now.
    again = run_cli("promote", "--skill", "auth-v2", "--from", "prototype", "--yes")
    usage_error(again, "auth-v2 is not in prototype (--from prototype): it is in staged")
    assert "drop --from to promote it from where it is" in again.stderr
    usage_error(
        run_cli("promote", "--skill", "ghost", "--from", "prototype", "--yes"),
        "ghost is not in prototype (--from prototype): no stage holds a skill of that name",
    )
    usage_error(
        run_cli("promote", "--skill", "auth-v2", "--from", "qa", "--yes"),
        "--from qa: there is no stage 'qa'",
    )
    assert version_in(tmp_path, STAGING) == "1.0.0"  # nothing moved

    # NAME and --skill together must agree; neither is "nothing to promote".
    usage_error(
        run_cli("promote", "auth-v2", "--skill", "logging", "--yes"),
        "the skills are named twice, differently: auth-v2 (NAME|PATH) and logging (--skill)",
    )
    usage_error(run_cli("promote", "--yes"), "nothing to promote")
    # The label (`staging`) names the stage too; NAME and --skill may both say auth-v2.
    ok(run_cli("promote", "auth-v2", "--skill", "auth-v2", "--from", "staging", "--yes"))
    assert version_in(tmp_path, PRODUCTION) == "1.0.0"


def test_from_promotes_the_copy_in_that_stage(run_cli: Run, tmp_path: Path) -> None:
    ok(run_cli("init"))
    write_skill(tmp_path / STAGING, "auth-v2", extra={"version": "1.0.0"})
    write_skill(tmp_path / PROTOTYPE, "auth-v2", extra={"version": "1.1.0"})
    # By name alone the promoter takes the earliest stage's copy (prototype's 1.1.0); --from
    # staged promotes staging's 1.0.0 to production.
    done = ok(run_cli("promote", "--skill", "auth-v2", "--from", "staged", "--yes", "--json"))
    (result,) = json.loads(done.stdout)
    assert (result["version"], result["from_stage"], result["to_stage"]) == (
        "1.0.0",
        "staged",
        "production",
    )
    assert version_in(tmp_path, PRODUCTION) == "1.0.0"
    assert version_in(tmp_path, PROTOTYPE) == "1.1.0"


def test_status_skill_target_state(run_cli: Run, tmp_path: Path) -> None:
    ok(run_cli("init"))
    write_skill(tmp_path / STAGING, "auth-v2")
    spelled = run_cli("status", "--skill", "auth-v2", "--target-state", "production", "--json")
    assert spelled.returncode == 0, spelled.stderr
    readiness = json.loads(spelled.stdout)
    assert (readiness["skill_name"], readiness["to_stage"], readiness["ready"]) == (
        "auth-v2",
        "production",
        True,
    )
    usual = ok(run_cli("status", "auth-v2", "--target", "production", "--json"))
    assert json.loads(usual.stdout)["gates"] == readiness["gates"]

    usage_error(
        run_cli("status", "auth-v2", "--skill", "logging"),
        "two different skills named: 'auth-v2' (NAME) and 'logging' (--skill)",
    )
    usage_error(run_cli("status"), "which skill? neither NAME nor --skill NAME was given")
    refused = run_cli("status", "--json")
    assert json.loads(refused.stdout)["error"]["code"] == "USAGE"


def runbook_rollback(
    cli: Run, from_stage: str, to: str, *more: str, reason: str = "r"
) -> subprocess.CompletedProcess[str]:
    """`skillstage rollback --skill auth-v2 --from STAGE --to STAGE --reason …`."""
    return cli(
        "rollback",
        "--skill",
        "auth-v2",
        "--from",
        from_stage,
        "--to",
        to,
        "--reason",
        reason,
        *more,
    )


def test_rollback_from_production_to_staged_with_an_approver(cli: Run, tmp_path: Path) -> None:
    ok(cli("init"))
    for version in ("1.0.0", "1.1.0"):
        write_skill(tmp_path / STAGING, "auth-v2", extra={"version": version})
        ok(cli("promote", "auth-v2", "--yes", "--overwrite"))

    # A stage that is not this one or the one before, or no stage nor version: refused, before
    # anything is asked or moved.
    usage_error(
        runbook_rollback(cli, "production", "prototype", "--yes"),
        "cannot roll back from production to prototype: prototype is more than one stage back",
    )
    later = runbook_rollback(cli, "staged", "production")
    usage_error(later, "cannot roll back from staged to production: production comes after staged")
    assert "stages, in order: prototype → staged → production" in later.stderr
    usage_error(
        cli("rollback", "--skill", "auth-v2", "--to", "qa", "--reason", "r", "--yes"),
        "--to qa: no stage is named 'qa', and it is not a version",
    )
    usage_error(
        cli("rollback", "auth-v2", "--skill", "logging", "--reason", "r", "--yes"),
        "two different skills named: 'auth-v2' (NAME) and 'logging' (--skill)",
    )
    assert version_in(tmp_path, PRODUCTION) == "1.1.0"

    done = ok(
        runbook_rollback(
            cli, "production", "staged", "--approver", "0102", "--yes", reason="fidelity dropped"
        )
    )
    assert "Rolled back auth-v2: 1.1.0 → staged stage" in done.stdout
    assert "  Approver:    0102 (manual override)" in done.stdout
    # The live version left production and went back to staging.
    assert version_in(tmp_path, PRODUCTION) is None
    assert version_in(tmp_path, STAGING) == "1.1.0"
    (event, *_) = json.loads(ok(cli("history", "auth-v2", "--json")).stdout)
    assert (event["kind"], event["from_stage"], event["to_stage"], event["approver"]) == (
        "rollback",
        "production",
        "staged",
        "0102",
    )
    assert event["details"]["override"] is True


def test_rollback_to_its_own_stage_or_a_version(cli: Run, tmp_path: Path) -> None:
    ok(cli("init"))
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        write_skill(tmp_path / STAGING, "auth-v2", extra={"version": version})
        ok(cli("promote", "auth-v2", "--yes", "--overwrite"))
    # --to production, from production: its previous good version comes back.
    stay = ok(
        cli(
            "rollback",
            "--skill",
            "auth-v2",
            "--to",
            "production",
            "--reason",
            "r",
            "--dry-run",
            "--json",
        )
    )
    planned = json.loads(stay.stdout)
    assert (planned["version"], planned["to_stage"]) == ("1.1.0", "production")
    # A version, with --to or --to-version (the spelling the archive's hint uses).
    for option in ("--to", "--to-version"):
        plan = ok(
            cli("rollback", "auth-v2", option, "1.0.0", "--reason", "r", "--dry-run", "--json")
        )
        assert json.loads(plan.stdout)["version"] == "1.0.0"
    usage_error(
        cli("rollback", "auth-v2", "--to", "1.0.0", "--to-version", "1.1.0", "--reason", "r"),
        "two different versions to restore: --to 1.0.0 and --to-version 1.1.0",
    )
    usage_error(
        cli("rollback", "auth-v2", "--to", "staged", "--to-version", "1.0.0", "--reason", "r"),
        "a rollback to staged moves the skill's live version back to staged",
    )
    ok(cli("rollback", "auth-v2", "--to-version", "1.0.0", "--reason", "r", "--yes"))
    assert version_in(tmp_path, PRODUCTION) == "1.0.0"


# -- a sign-off form's approver ------------------------------------------------------------------


def test_approve_with_a_form_that_says_approver_0102(run_cli: Run, tmp_path: Path) -> None:
    ok(run_cli("init"))
    project = configure(load_config_file(tmp_path / "skillstage.toml"), approvers=["0102"])
    spam_filter(project)  # by carol, in prototype
    template = ok(
        run_cli("signoff", "template", NAME, "--to", "staged", "--by", "0102", "--ticket", "T-1")
    ).stdout
    # Filled in by hand: every item YES, the approver and signature typed without quotes.
    form = template.replace(": NO  #", ": YES  #").replace('"0102"', "0102")
    assert "\napprover: 0102\n" in form and "\nsignature: 0102\n" in form
    (tmp_path / "signoff.yaml").write_text(form)

    approved = ok(
        run_cli(
            "approve",
            "--to",
            "staged",
            NAME,
            "--by",
            "0102",
            "--ticket",
            "T-1",
            "--decision",
            "approved",
            "--checklist",
            "signoff.yaml",
        )
    )
    assert approved.stdout.startswith("APPROVED: spam-filter 1.0.0 (")
    assert approved.stdout.rstrip().endswith("prototype → staged by 0102, T-1")
    readiness = json.loads(
        run_cli("status", "--skill", NAME, "--target-state", "staged", "--json").stdout
    )
    (approval,) = [g for g in readiness["gates"] if g["gate"] == "approval"]
    assert approval["status"] == "pass", approval


# -- init and .gitignore -------------------------------------------------------------------------


def git(root: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    done = subprocess.run(
        ["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def untracked(root: Path) -> list[str]:
    return [line[3:] for line in git(root, "status", "--porcelain", "-uall").splitlines()]


def test_init_in_a_git_repository_ignores_its_state(run_cli: Run, tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    created = ok(run_cli("init"))
    assert f"added /.skillstage/ to {tmp_path / '.gitignore'}: git leaves the state out" in (
        created.stdout
    )
    assert (tmp_path / ".gitignore").read_text() == (
        "# skillstage's local state (database, version archive, locks): not committed\n"
        "/.skillstage/\n"
    )
    # The state grows (the archive, locks, the registry): git still shows none of it.
    write_skill(tmp_path / STAGING, "auth-v2")
    ok(run_cli("promote", "auth-v2", "--yes"))
    assert (tmp_path / ".skillstage" / "archive" / "auth-v2").is_dir()
    assert (tmp_path / ".skillstage" / "locks").is_dir()
    shown = untracked(tmp_path)
    assert not [path for path in shown if path.startswith(".skillstage")], shown
    assert {".gitignore", "skillstage.toml", ".claude/skills/auth-v2/SKILL.md"} <= set(shown)


def test_init_appends_to_a_gitignore_once(run_cli: Run, tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("node_modules/\n*.pyc")  # no final newline
    ok(run_cli("init"))
    first = (tmp_path / ".gitignore").read_text()
    assert first == (
        "node_modules/\n*.pyc\n\n"
        "# skillstage's local state (database, version archive, locks): not committed\n"
        "/.skillstage/\n"
    )
    again = ok(run_cli("init", "--json"))
    assert json.loads(again.stdout)["gitignore"] == {
        "path": str(tmp_path / ".gitignore"),
        "added": [],
        "already": ["/.skillstage/"],
        "error": None,
    }
    assert (tmp_path / ".gitignore").read_text() == first
    said = ok(run_cli("init")).stdout
    assert f"kept {tmp_path / '.gitignore'}: it already has /.skillstage/" in said

    # An entry written another way (unanchored, no slash) is the same entry.
    (tmp_path / ".gitignore").write_text(".skillstage\n")
    ok(run_cli("init"))
    assert (tmp_path / ".gitignore").read_text() == ".skillstage\n"


def test_init_no_gitignore_and_outside_a_repository(run_cli: Run, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    refused = ok(run_cli("init", "--no-gitignore", "--json", cwd=repo))
    assert json.loads(refused.stdout)["gitignore"] is None
    assert not (repo / ".gitignore").exists()
    assert ".skillstage/state.db" in untracked(repo)  # what the default spares a newcomer

    plain = tmp_path / "plain"  # no git repository: no .gitignore unless asked for
    plain.mkdir()
    said = ok(run_cli("init", cwd=plain)).stdout
    assert ".gitignore" not in said and not (plain / ".gitignore").exists()
    ok(run_cli("init", "--gitignore", cwd=plain))
    assert (plain / ".gitignore").read_text().endswith("\n/.skillstage/\n")


def test_init_ignores_a_state_dir_and_database_configured_elsewhere(
    run_cli: Run, tmp_path: Path
) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "skillstage.toml").write_text('state_dir = "var/state"\ndatabase = "data/s.db"\n')
    created = ok(run_cli("init", "--json"))
    assert json.loads(created.stdout)["gitignore"]["added"] == ["/var/state/", "/data/s.db*"]
    assert (tmp_path / "data" / "s.db").is_file()
    shown = untracked(tmp_path)
    assert not [p for p in shown if p.startswith(("var/", "data/"))], shown


# -- history -------------------------------------------------------------------------------------


def test_history_shows_a_forced_promotion_once(cli: Run, tmp_path: Path) -> None:
    ok(cli("init"))
    bad = write_skill(tmp_path / STAGING, "hotfix")
    (bad / "execute.sh").chmod(0o644)  # the structure gate fails
    ok(cli("promote", "hotfix", "--yes", "--force", "--reason", "INC-7", "--by", "oncall"))

    lines = ok(cli("history", "hotfix")).stdout.splitlines()
    rows = [line for line in lines if not line.startswith(" ")]
    assert len(rows) == 1, lines
    assert rows[0].endswith(
        "promote   hotfix 1.0.0  (forced past: structure)  staged → production  by oncall"
    )
    assert lines[1:] == ["    reason: INC-7"]
    # --limit counts rows: the one row is the promotion, not its `force` record alone.
    (only,) = ok(cli("history", "hotfix", "--limit", "1")).stdout.splitlines()[:1]
    assert "promote   hotfix 1.0.0  (forced past: structure)" in only

    # The JSON keeps both records, each saying what it is of the other.
    force, promotion = json.loads(ok(cli("history", "hotfix", "--json")).stdout)
    assert (force["kind"], promotion["kind"]) == ("force", "promote")
    assert (promotion["forced"], promotion["force_event_id"]) == (["structure"], force["id"])
    assert (force["forced"], force["promotion_event_id"]) == (["structure"], promotion["id"])
    assert (promotion["promotion_event_id"], force["force_event_id"]) == (None, None)
    assert promotion["reason"] == force["reason"] == "INC-7"


def test_history_shows_a_rollbacks_version_change(cli: Run, tmp_path: Path) -> None:
    ok(cli("init"))
    for version in ("2.0.0", "2.1.0"):
        write_skill(tmp_path / STAGING, "auth-v2", extra={"version": version})
        ok(cli("promote", "auth-v2", "--yes", "--overwrite"))
    ok(cli("rollback", "auth-v2", "--reason", "fidelity", "--yes"))

    rows = [line for line in ok(cli("history", "auth-v2")).stdout.splitlines() if line[:1] != " "]
    assert "rollback  auth-v2 2.1.0 → 2.0.0  in production  by " in rows[0]
    assert "production → production" not in rows[0]
    assert "promote   auth-v2 2.1.0  staged → production  by " in rows[1]
    events = json.loads(ok(cli("history", "auth-v2", "--json")).stdout)
    rollback = events[0]
    assert (rollback["from_version"], rollback["to_version"], rollback["version"]) == (
        "2.1.0",
        "2.0.0",
        "2.0.0",
    )
    assert (rollback["from_stage"], rollback["to_stage"]) == ("production", "production")
    assert rollback["timeline"]  # kept
    assert [(e["from_version"], e["to_version"], e["forced"]) for e in events[1:]] == [
        (None, None, []),
        (None, None, []),
    ]
