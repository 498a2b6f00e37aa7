"""The SLA (seed 000's 48-hour rule) on real projects and real stores (SQLite and PostgreSQL):
`sla check`, `sla enforce`, overrides, the clock, events, notifications."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.cli import sla as sla_cli
from skillstage.cli.main import cli, main
from skillstage.config import Project, load_config_file
from skillstage.lifecycle import sla
from skillstage.store import Store
from skillstage.store.outbox import list_items
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
PROTOTYPE = Path(".claude/skills/prototype")
PRODUCTION = Path(".claude/skills")
T = dt.datetime(2025, 11, 15, 10, 30, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
FAILING_TEST = "#!/bin/bash\necho 'expected 2, got 3' >&2\nexit 1\n"

Run = Callable[..., tuple[int, str]]
Received = list[dict[str, Any]]


def staged(project: Project, name: str, *, at: dt.datetime, **kwargs: Any) -> Path:
    """A skill written to staging and registered by the store as entering it at `at`."""
    path = write_skill(project.root / STAGING, name, **kwargs)
    api.list_skills(project, now=at)
    return path


def override(reason: str | None, expires: dt.date | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"sla_override": True}
    if reason is not None:
        fields["sla_override_reason"] = reason
    if expires is not None:
        fields["sla_override_expires"] = expires.isoformat()
    return fields


def with_config(project: Project, old: str, new: str) -> Project:
    config = project.root / "skillstage.toml"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new))
    return load_config_file(config)


def events(project: Project, kind: str | None = None) -> list[Any]:
    with Store.open(project.database_url) as store:
        return store.events(limit=1000, kind=kind)


@pytest.fixture
def run(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Run]:
    """`skillstage ARGS...` in this process, in the project's directory: (exit code, stdout)."""
    monkeypatch.chdir(project.root)
    added = "sla" not in cli.commands
    if added:
        cli.add_command(sla_cli.sla)

    def invoke(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        captured = capsys.readouterr()
        assert "unexpected error" not in captured.err, captured.err
        code = exited.value.code
        assert isinstance(code, int)
        return code, captured.out

    yield invoke
    if added:
        cli.commands.pop("sla")


# -- check -------------------------------------------------------------------------------------


def test_within_the_sla_nothing_is_reported(project: Project) -> None:
    staged(project, "fresh", at=T - 47 * HOUR)
    staged(project, "exactly", at=T - 48 * HOUR)
    report = sla.check(project, now=T)
    assert (report.checked, report.over, report.ok) == (2, [], True)
    assert report.sla_stages == {"staged": 48}


def test_52_hours_in_staging_is_4_hours_over(project: Project) -> None:
    path = staged(project, "logging-v3", at=T - 52 * HOUR)
    staged(project, "fresh", at=T - HOUR)
    # Removed from staging by hand: seed 000 counts "promoted or removed" as meeting the SLA.
    shutil.rmtree(staged(project, "abandoned", at=T - 60 * HOUR))
    report = sla.check(project, now=T)
    assert report.checked == 2
    (stale,) = report.breaches
    assert (stale.name, stale.version, stale.stage) == ("logging-v3", "1.0.0", "staged")
    assert (stale.age_hours, stale.sla_hours, stale.breach_hours) == (52.0, 48, 4.0)
    assert stale.sla_breach_hours == 4.0
    assert stale.path == path and stale.entered_at == T - 52 * HOUR
    assert stale.override is None and not report.ok


def test_each_stage_with_sla_hours_is_checked_against_its_own(project: Project) -> None:
    project = with_config(
        project,
        '[stages.prototype]\npath = ".claude/skills/prototype/{name}"\n',
        '[stages.prototype]\npath = ".claude/skills/prototype/{name}"\nsla_hours = 24\n',
    )
    write_skill(project.root / PROTOTYPE, "sketch")
    write_skill(project.root / STAGING, "candidate")
    write_skill(project.root / PRODUCTION, "live")  # production has no SLA: never stale
    api.list_skills(project, now=T - 30 * HOUR)
    report = sla.check(project, now=T)
    assert report.sla_stages == {"prototype": 24, "staged": 48}
    assert report.checked == 2
    (stale,) = report.over
    assert (stale.name, stale.stage, stale.sla_hours, stale.breach_hours) == (
        "sketch",
        "prototype",
        24,
        6.0,
    )


def test_overrides_exempt_only_with_a_reason_until_they_expire(project: Project) -> None:
    today = T.date()
    cases = {
        "reviewing": override("Awaiting security review", today + dt.timedelta(days=5)),
        "last-day": override("Awaiting security review", today),
        "open-ended": override("Vendor API frozen", None),
        "expired": override("Awaiting security review", today - dt.timedelta(days=1)),
        "no-reason": override(None, today + dt.timedelta(days=5)),
        "blank-reason": override("  ", today + dt.timedelta(days=5)),
    }
    for name, fields in cases.items():
        write_skill(project.root / STAGING, name, extra=fields)
    api.list_skills(project, now=T - 60 * HOUR)

    report = sla.check(project, now=T)

    assert {s.name for s in report.exempt} == {"reviewing", "last-day", "open-ended"}
    assert {s.name for s in report.breaches} == {"expired", "no-reason", "blank-reason"}
    by_name = {s.name: s for s in report.over}
    assert by_name["reviewing"].override == sla.SlaOverride(
        "Awaiting security review", today + dt.timedelta(days=5), True, "until 2025-11-20"
    )
    expired = by_name["expired"].override
    assert expired is not None and not expired.active
    assert expired.status == "expired on 2025-11-14" and expired.reason
    assert by_name["no-reason"].to_dict()["override"] == {
        "reason": None,
        "expires": "2025-11-20",
        "active": False,
        "status": "ignored: sla_override has no sla_override_reason",
    }
    # The day after its last day, an override no longer exempts.
    assert "last-day" in {s.name for s in sla.check(project, now=T + 24 * HOUR).breaches}


def test_a_new_version_entering_the_stage_restarts_the_clock(project: Project) -> None:
    staged(project, "auth-v2", at=T - 60 * HOUR)
    assert [s.version for s in sla.check(project, now=T).breaches] == ["1.0.0"]

    write_skill(project.root / STAGING, "auth-v2", extra={"version": "1.1.0"})
    report = sla.check(project, now=T + HOUR)  # registers 1.1.0 as entering at T + 1 h

    assert report.over == [] and report.checked == 1
    report = sla.check(project, now=T + 50 * HOUR)
    (stale,) = report.breaches
    assert (stale.version, stale.age_hours, stale.breach_hours) == ("1.1.0", 49.0, 1.0)


def test_check_command_prints_seed_000s_report_and_exits_1_on_a_breach(
    project: Project, run: Run
) -> None:
    now = dt.datetime.now(dt.UTC)
    staged(project, "fresh", at=now - 10 * HOUR)
    code, out = run("sla", "check")
    assert code == 0
    assert out == "✓ All skills within SLA (1 checked)\n"

    staged(project, "logging-v3", at=now - 52 * HOUR)
    code, out = run("sla", "check")
    assert code == 1
    bar = "━" * 52
    assert out == (
        "⚠ Stale skill: logging-v3 (52h, 4h over SLA)\n"
        "  Path: .claude/skills/staging/logging-v3\n"
        "\n"
        f"{bar}\nSLA BREACH: 1 skill(s) older than 48 hours\n{bar}\n"
    )

    code, out = run("sla", "check", "--json")
    assert code == 1
    (entry,) = json.loads(out)
    assert entry["name"] == "logging-v3" and entry["version"] == "1.0.0"
    assert (entry["stage"], entry["sla_hours"], entry["age_hours"]) == ("staged", 48, 52.0)
    assert (entry["breach_hours"], entry["breach"], entry["override"]) == (4.0, True, None)
    assert entry["path"] == str(project.root / STAGING / "logging-v3")


def test_check_command_shows_exempt_and_expired_overrides(project: Project, run: Run) -> None:
    today = dt.datetime.now(dt.UTC).date()
    staged(
        project,
        "complex-skill",
        at=dt.datetime.now(dt.UTC) - 60 * HOUR,
        extra=override("Awaiting security review", today + dt.timedelta(days=3)),
    )
    code, out = run("sla", "check")
    assert code == 0
    assert "ℹ Exempt: complex-skill (60h, 12h over SLA)" in out
    assert f"  Override: Awaiting security review, until {today + dt.timedelta(days=3)}" in out
    assert "✓ All skills within SLA (1 checked, 1 exempt by sla_override)" in out

    staged(
        project,
        "forgotten",
        at=dt.datetime.now(dt.UTC) - 50 * HOUR,
        extra=override("Awaiting security review", today - dt.timedelta(days=2)),
    )
    code, out = run("sla", "check")
    assert code == 1
    assert "⚠ Stale skill: forgotten (50h, 2h over SLA)" in out
    expired = today - dt.timedelta(days=2)
    assert f"  Override: expired on {expired} (Awaiting security review)" in out


# -- enforce -----------------------------------------------------------------------------------


def test_enforce_dry_run_changes_nothing(project: Project, receiver: tuple[str, Received]) -> None:
    url, received = receiver
    project = with_config(project, "urls = []", f'urls = ["{url}"]')
    ready = staged(project, "auth-v2", at=T - 52 * HOUR)
    blocked = staged(project, "logging-v3", at=T - 52 * HOUR, test=FAILING_TEST)
    before = events(project)

    result = sla.enforce(project, auto_promote=True, notify=True, dry_run=True, now=T)

    assert [(d.skill.name, d.action) for d in result.details] == [
        ("auth-v2", "would_promote"),
        ("logging-v3", "blocked"),
    ]
    assert (result.stale_skills_found, result.promoted, result.would_promote) == (2, 0, 1)
    assert (result.notified, result.remaining) == (0, 2)
    assert result.failed[0].failing_gates == ["tests"]
    assert events(project) == before  # no promotion, no refused attempt, no sla_breach event
    with Store.open(project.database_url) as store:
        assert list_items(store) == []
        assert {a.stage for a in store.current_assignments()} == {"staged"}
    assert ready.is_dir() and blocked.is_dir()
    assert not (project.root / PRODUCTION / "auth-v2").exists()
    assert received == []


def test_auto_promote_promotes_the_ready_one_and_reports_the_blocked_one(
    project: Project, receiver: tuple[str, Received]
) -> None:
    url, received = receiver
    project = with_config(project, "urls = []", f'urls = ["{url}"]')
    staged(project, "auth-v2", at=T - 52 * HOUR)
    staged(project, "logging-v3", at=T - 50 * HOUR, test=FAILING_TEST)

    result = sla.enforce(project, auto_promote=True, notify=True, now=T)

    assert (result.stale_skills_found, result.promoted, result.notified) == (2, 1, 2)
    assert result.remaining == 1
    done, refused = result.details
    assert (done.skill.name, done.action, done.message) == (
        "auth-v2",
        "promoted",
        "promoted to production",
    )
    assert (refused.skill.name, refused.action, refused.failing_gates) == (
        "logging-v3",
        "blocked",
        ["tests"],
    )
    assert refused.message.startswith("gates failed: tests (")
    assert result.to_dict()["failed"] == [
        {
            "name": "logging-v3",
            "version": "1.0.0",
            "stage": "staged",
            "error": refused.message,
            "failing_gates": ["tests"],
        }
    ]
    assert (project.root / PRODUCTION / "auth-v2" / "SKILL.md").is_file()
    assert (project.root / STAGING / "logging-v3").is_dir()
    with Store.open(project.database_url) as store:
        stages = {a.name: a.stage for a in store.current_assignments()}
    assert stages == {"auth-v2": "production", "logging-v3": "staged"}

    (promotion,) = events(project, "promote")  # the blocked one was probed, not attempted
    assert (promotion.name, promotion.actor, promotion.success) == (
        "auth-v2",
        sla.ENFORCER_ACTOR,
        True,
    )
    assert promotion.reason == "SLA breach: 52h in staged, 4h over the 48h SLA"
    breaches = {e.name: e for e in events(project, "sla_breach")}
    assert set(breaches) == {"auth-v2", "logging-v3"}
    assert breaches["logging-v3"].details is not None
    assert breaches["logging-v3"].details["failing_gates"] == ["tests"]
    assert breaches["auth-v2"].from_stage == "staged" and breaches["auth-v2"].at == T

    titles = [str(body.get("title")) for body in received]
    assert titles == [
        "Skill promoted: auth-v2 1.0.0",
        "SLA breach: auth-v2 1.0.0",
        "SLA breach: logging-v3 1.0.0",
    ]
    assert "It was auto-promoted to production." in str(received[1]["message"])
    message = str(received[2]["message"])
    assert "50h (since 2025-11-13 08:30 UTC), 2h over its 48h SLA" in message
    assert "Auto-promotion was refused: gates failed: tests" in message


def test_an_sla_breach_event_is_recorded_once_per_version_and_day(project: Project) -> None:
    staged(project, "logging-v3", at=T - 52 * HOUR)

    first = sla.enforce(project, now=T)
    again = sla.enforce(project, now=T + 2 * HOUR)
    next_day = sla.enforce(project, now=T + 24 * HOUR)

    assert [r.details[0].event_recorded for r in (first, again, next_day)] == [True, False, True]
    assert [r.details[0].action for r in (first, again, next_day)] == ["reported"] * 3
    recorded = events(project, "sla_breach")
    assert [e.at for e in recorded] == [T + 24 * HOUR, T]
    assert recorded[1].reason == "52h in staged, 4h over the 48h SLA"
    assert recorded[0].actor == sla.ENFORCER_ACTOR

    # A new version is a new breach on its own clock, recorded even on a day the old one was.
    write_skill(project.root / STAGING, "logging-v3", extra={"version": "1.1.0"})
    api.list_skills(project, now=T - 25 * HOUR)
    later = sla.enforce(project, now=T + 25 * HOUR)
    assert [(d.skill.version, d.event_recorded) for d in later.details] == [("1.1.0", True)]


def test_notify_without_urls_says_how_to_configure_them(project: Project) -> None:
    staged(project, "logging-v3", at=T - 52 * HOUR)
    result = sla.enforce(project, notify=True, now=T)
    assert result.notified == 0 and result.details[0].notifications == []
    (warning,) = result.warnings
    assert "[notifications] urls is empty" in warning and "json://" in warning


def test_enforce_command_exit_codes_and_json(project: Project, run: Run) -> None:
    now = dt.datetime.now(dt.UTC)
    staged(project, "auth-v2", at=now - 52 * HOUR)

    code, out = run("sla", "enforce", "--dry-run", "--auto-promote")
    assert code == 1  # a dry run promotes nothing: the skill is still stale
    assert "⚠ Stale skill: auth-v2 (52h, 4h over SLA)" in out
    assert "  ℹ Dry run: would be promoted to production" in out
    assert "  Would promote:       1" in out and "  Still stale:         1" in out
    assert (project.root / STAGING / "auth-v2").is_dir()

    code, out = run("sla", "enforce")
    assert code == 1
    assert "  ℹ Not promoted (no --auto-promote)" in out

    code, out = run("sla", "enforce", "--auto-promote", "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["stale_skills_found"], result["promoted"], result["failed"]) == (1, 1, [])
    assert result["details"][0]["promotion"]["to_stage"] == "production"
    assert result["details"][0]["event_recorded"] is False  # recorded by the run before
    assert (project.root / PRODUCTION / "auth-v2").is_dir()

    assert run("sla", "check")[0] == 0  # production has no SLA


def test_a_naive_now_is_refused(project: Project) -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        sla.check(project, now=dt.datetime(2025, 11, 15, 10, 30))
