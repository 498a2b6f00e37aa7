"""SLA enforcement (seed 000 "SLA Enforcement"): which skill versions have waited in their stage
longer than the stage's `sla_hours`, and what to do about them.

Age counts from when the version entered the stage, as the store recorded it (so a new version
entering the stage restarts the clock; file times play no part). Every stage with an `sla_hours`
is checked (default config: staged, 48 hours).

A skill may stay longer with a documented override in its SKILL.md (seed 000 "Manual Override"):
`sla_override: true` with an `sla_override_reason` exempts it through the `sla_override_expires`
date (UTC); without an expiry date it exempts it until removed (`skillstage validate` warns about
that). An override without a reason, or past its expiry date, does not exempt: the skill is a
breach, reported with what is wrong with its override.

`enforce` acts on the breaches: auto-promotion through the promoter (only when every gate passes,
never forced), an `sla_breach` notification through the outbox, and an `sla_breach` event in the
history, recorded at most once per (skill, version, stage) and UTC day, so that a cron job running
every hour leaves one line a day in `skillstage history`, not twenty-four.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from skillstage import api
from skillstage.config import Project
from skillstage.errors import SkillReadError, SkillstageError
from skillstage.skill.model import Frontmatter
from skillstage.skill.read import read_skill

if TYPE_CHECKING:
    from skillstage.lifecycle.promote import PromotionResult
    from skillstage.store import Store, Transaction

BREACH_EVENT: Final = "sla_breach"  # the event kind, and the notification event
ENFORCER_ACTOR = "skillstage sla enforce"  # who acts in history and git commits, unless told

# At most this many of a skill's sla_breach events are read to find today's. The scan stops at
# the first event of an earlier day; the bound matters only for events dated after `now`.
_DEDUPE_SCAN = 2000


def _at(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"naive datetime {now!r}: pass an aware datetime (e.g. in UTC)")
    return now


def format_hours(hours: float) -> str:
    """Hours as people read them: 52, 4.5 (one decimal at most, no exponent)."""
    return f"{hours:.1f}".rstrip("0").rstrip(".")


# -- check -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlaOverride:
    """A skill's `sla_override` (from its SKILL.md) and whether it exempts the skill today."""

    reason: str | None
    expires: dt.date | None
    active: bool
    status: str  # why it exempts or does not, in words

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "expires": self.expires.isoformat() if self.expires else None,
            "active": self.active,
            "status": self.status,
        }


def evaluate_override(frontmatter: Frontmatter, today: dt.date) -> SlaOverride | None:
    """The skill's override as of `today` (a UTC date), or None when `sla_override` is not true.

    Active: a reason, and an expiry date of today or later (or none). Inactive: no reason, or
    expired; such a skill is a breach like any other.
    """
    if frontmatter.sla_override is not True:
        return None
    reason = (frontmatter.sla_override_reason or "").strip() or None
    expires = frontmatter.sla_override_expires
    if reason is None:
        return SlaOverride(
            None,
            expires,
            active=False,
            status="ignored: sla_override has no sla_override_reason",
        )
    if expires is not None and expires < today:
        return SlaOverride(reason, expires, active=False, status=f"expired on {expires}")
    status = f"until {expires}" if expires is not None else "no expiry date"
    return SlaOverride(reason, expires, active=True, status=status)


@dataclass(frozen=True)
class StaleSkill:
    """A skill version that has been in its stage longer than the stage's SLA (seed 000's stale
    skill: `name`, `age_hours`, `sla_breach_hours`)."""

    name: str
    version: str
    digest: str
    stage: str
    path: Path
    entered_at: dt.datetime
    age_hours: float
    sla_hours: float
    breach_hours: float  # hours over the SLA
    override: SlaOverride | None = None

    @property
    def breach(self) -> bool:
        """True unless an active override exempts the skill."""
        return self.override is None or not self.override.active

    @property
    def sla_breach_hours(self) -> float:
        """Seed 000's name for `breach_hours`."""
        return self.breach_hours

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "stage": self.stage,
            "age_hours": self.age_hours,
            "sla_hours": self.sla_hours,
            "breach_hours": self.breach_hours,
            "breach": self.breach,
            "entered_at": self.entered_at.isoformat(),
            "path": str(self.path),
            "override": self.override.to_dict() if self.override else None,
        }


@dataclass
class SlaReport:
    """Every version over its stage's SLA, exempt or not, in `skillstage list` order."""

    at: dt.datetime
    checked: int  # versions in stages with an SLA
    over: list[StaleSkill]
    sla_stages: dict[str, float]  # stage -> sla_hours, for the stages checked
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def breaches(self) -> list[StaleSkill]:
        """The stale skills: over the SLA with no active override."""
        return [skill for skill in self.over if skill.breach]

    @property
    def exempt(self) -> list[StaleSkill]:
        """Over the SLA, exempted by an active override."""
        return [skill for skill in self.over if not skill.breach]

    @property
    def ok(self) -> bool:
        return not self.breaches

    def to_list(self) -> list[dict[str, Any]]:
        return [skill.to_dict() for skill in self.over]


def _override_of(project: Project, path: Path, today: dt.date) -> SlaOverride | None:
    try:
        skill = read_skill(path, project.config.validation)
    except SkillReadError:
        # `list` reports the unreadable directory; an override nobody can read exempts nothing.
        return None
    return evaluate_override(skill.frontmatter, today)


def check(
    project: Project, *, now: dt.datetime | None = None, listing: api.SkillListing | None = None
) -> SlaReport:
    """The skill versions over their stage's SLA at `now` (default: the current time).

    Versions on disk that the store has not seen are registered first (as `skillstage list`
    does), so that their clock starts; or `listing` is such a listing, made at `now`, which a
    caller that lists the skills too passes in. A version whose directory is gone is not checked:
    it was removed from the stage, which seed 000 counts as meeting the SLA.
    """
    if listing is not None and now is None:
        raise ValueError("a listing passed in needs the time it was made at")
    now = _at(now)
    limits = {
        name: stage.sla_hours
        for name, stage in project.config.stages.items()
        if stage.sla_hours is not None
    }
    if listing is None:
        listing = api.list_skills(project, now=now)
    today = now.astimezone(dt.UTC).date()
    over = []
    checked = 0
    for skill in listing.skills:
        limit = limits.get(skill.stage)
        if limit is None or not skill.path.is_dir():
            continue
        checked += 1
        age = (now - skill.entered_at).total_seconds() / 3600
        if age <= limit:
            continue
        over.append(
            StaleSkill(
                name=skill.name,
                version=skill.version,
                digest=skill.digest,
                stage=skill.stage,
                path=skill.path,
                entered_at=skill.entered_at,
                age_hours=round(age, 1),
                sla_hours=limit,
                breach_hours=round(age - limit, 1),
                override=(
                    evaluate_override(skill.frontmatter, today)
                    if skill.frontmatter is not None  # the copy just read for the listing
                    else _override_of(project, skill.path, today)
                ),
            )
        )
    unreadable = [(path, error) for path, error in listing.unreadable]
    return SlaReport(now, checked, over, limits, unreadable)


# -- enforce -----------------------------------------------------------------------------------

Action = Literal["reported", "would_promote", "promoted", "blocked", "error"]


@dataclass
class EnforcementDetail:
    """What the enforcer did about one stale skill."""

    skill: StaleSkill
    action: Action
    message: str
    failing_gates: list[str] = field(default_factory=list)
    promotion: PromotionResult | None = None  # the promotion, or the dry run that refused it
    event_recorded: bool = False  # False: a dry run, or already recorded today
    notifications: list[dict[str, Any]] = field(default_factory=list)  # outbox deliveries

    @property
    def notified(self) -> bool:
        """At least one sla_breach notification was delivered."""
        return any(delivery["ok"] for delivery in self.notifications)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.skill.to_dict(),
            "action": self.action,
            "message": self.message,
            "failing_gates": self.failing_gates,
            "event_recorded": self.event_recorded,
            "notified": self.notified,
            "notifications": self.notifications,
            "promotion": self.promotion.to_dict() if self.promotion else None,
        }


@dataclass
class EnforcementResult:
    """Seed 000's enforcer result: stale skills found, promoted, notified, and why the others
    were not promoted."""

    at: dt.datetime
    dry_run: bool
    details: list[EnforcementDetail] = field(default_factory=list)
    exempt: list[StaleSkill] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def stale_skills_found(self) -> int:
        return len(self.details)

    @property
    def promoted(self) -> int:
        return sum(1 for detail in self.details if detail.action == "promoted")

    @property
    def would_promote(self) -> int:
        return sum(1 for detail in self.details if detail.action == "would_promote")

    @property
    def notified(self) -> int:
        return sum(1 for detail in self.details if detail.notified)

    @property
    def remaining(self) -> int:
        """Stale skills still in their stage (a dry run promotes nothing)."""
        return sum(1 for detail in self.details if detail.action != "promoted")

    @property
    def failed(self) -> list[EnforcementDetail]:
        """Stale skills whose promotion was refused or failed."""
        return [detail for detail in self.details if detail.action in ("blocked", "error")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stale_skills_found": self.stale_skills_found,
            "promoted": self.promoted,
            "would_promote": self.would_promote,
            "notified": self.notified,
            "remaining": self.remaining,
            "failed": [
                {
                    "name": detail.skill.name,
                    "version": detail.skill.version,
                    "stage": detail.skill.stage,
                    "error": detail.message,
                    "failing_gates": detail.failing_gates,
                }
                for detail in self.failed
            ],
            "details": [detail.to_dict() for detail in self.details],
            "exempt": [skill.to_dict() for skill in self.exempt],
            "warnings": self.warnings,
            "dry_run": self.dry_run,
            "at": self.at.isoformat(),
        }


def _refused(stale: StaleSkill, result: PromotionResult) -> EnforcementDetail:
    failing = [gate.gate for gate in result.gates if gate.blocks]
    return EnforcementDetail(
        stale,
        "blocked" if failing else "error",
        result.error or "the promotion was refused",
        failing_gates=failing,
        promotion=result,
    )


def _promote_stale(
    project: Project,
    stale: StaleSkill,
    *,
    actor: str,
    dry_run: bool,
    deploy: bool,
    notify: bool,
    git_commit: bool,
) -> EnforcementDetail:
    # By path: a skill of the same name may sit in an earlier stage too, and a name resolves to
    # the earliest stage it can leave.
    ref = str(stale.path)
    try:
        # A dry run first, as `promote --all-ready` does: a skill that is not ready is reported
        # with its failing gates, and an hourly enforcer does not fill the history with refused
        # promotions (seed 000's success rate counts them).
        (probe,) = api.promote(project, [ref], actor=actor, dry_run=True, git_commit=git_commit)
        if not probe.success:
            return _refused(stale, probe)
        if dry_run:
            where = probe.to_stage or "the next stage"
            return EnforcementDetail(
                stale, "would_promote", f"would be promoted to {where}", promotion=probe
            )
        (done,) = api.promote(
            project,
            [ref],
            actor=actor,
            reason=(
                f"SLA breach: {format_hours(stale.age_hours)}h in {stale.stage}, "
                f"{format_hours(stale.breach_hours)}h over the "
                f"{format_hours(stale.sla_hours)}h SLA"
            ),
            deploy=deploy,
            notify=notify,
            git_commit=git_commit,
        )
    except SkillstageError as exc:
        return EnforcementDetail(stale, "error", str(exc))
    if not done.success:
        return _refused(stale, done)
    return EnforcementDetail(
        stale, "promoted", f"promoted to {done.to_stage or 'the next stage'}", promotion=done
    )


def _notification_text(project: Project, detail: EnforcementDetail) -> tuple[str, str]:
    stale = detail.skill
    label = project.config.stages[stale.stage].label or stale.stage
    body = (
        f"{stale.name} {stale.version} has been in {label} for {format_hours(stale.age_hours)}h "
        f"(since {stale.entered_at:%Y-%m-%d %H:%M} UTC), {format_hours(stale.breach_hours)}h "
        f"over its {format_hours(stale.sla_hours)}h SLA."
    )
    if stale.override is not None:
        body += f" Its sla_override is {stale.override.status}."
    to_stage = detail.promotion.to_stage if detail.promotion else None
    outcome = {
        "promoted": f"It was auto-promoted to {to_stage}.",
        "blocked": f"Auto-promotion was refused: {detail.message}",
        "error": f"Auto-promotion failed: {detail.message}",
        "would_promote": "It is ready to promote.",
        "reported": "Promote it, remove it from the stage, or document an sla_override "
        "with a reason and an expiry date.",
    }[detail.action]
    return f"SLA breach: {stale.name} {stale.version}", f"{body} {outcome}"


def _recorded_on(tx: Transaction, stale: StaleSkill, day: dt.date) -> bool:
    """Whether an sla_breach event of this version in this stage was recorded on `day` (UTC)."""
    for event in tx.events(stale.name, _DEDUPE_SCAN, kind=BREACH_EVENT):
        on = event.at.astimezone(dt.UTC).date()
        if on < day:
            return False  # newest first: nothing of `day` further down
        if on == day and event.version == stale.version and event.from_stage == stale.stage:
            return True
    return False


def _record_breach(
    project: Project,
    store: Store,
    detail: EnforcementDetail,
    *,
    now: dt.datetime,
    actor: str,
    notify: bool,
) -> None:
    """The sla_breach event (once a day) and its notifications, in one transaction; the
    notifications are delivered after it commits."""
    from skillstage.integrations.notify import notification_items
    from skillstage.integrations.outbox import NOTIFY_KIND, deliver
    from skillstage.lifecycle.locks import skill_lock
    from skillstage.store.outbox import enqueue

    stale = detail.skill
    # Under the skill's lock: two enforcers (two machines on one PostgreSQL store) must not both
    # find no event for today and both record one.
    with skill_lock(project, store, stale.name), store.atomic() as tx:
        if not _recorded_on(tx, stale, now.astimezone(dt.UTC).date()):
            tx.append_event(
                BREACH_EVENT,
                name=stale.name,
                version=stale.version,
                digest=stale.digest,
                from_stage=stale.stage,
                actor=actor,
                reason=(
                    f"{format_hours(stale.age_hours)}h in {stale.stage}, "
                    f"{format_hours(stale.breach_hours)}h over the "
                    f"{format_hours(stale.sla_hours)}h SLA"
                ),
                path=str(stale.path),
                details={
                    "age_hours": stale.age_hours,
                    "sla_hours": stale.sla_hours,
                    "breach_hours": stale.breach_hours,
                    "entered_at": stale.entered_at.isoformat(),
                    "override": stale.override.to_dict() if stale.override else None,
                    "action": detail.action,
                    "failing_gates": detail.failing_gates,
                },
                at=now,
            )
            detail.event_recorded = True
        ids = []
        if notify:
            title, body = _notification_text(project, detail)
            for payload in notification_items(
                project.config.notifications,
                BREACH_EVENT,
                title=title,
                body=body,
                skill=stale.name,
            ):
                ids.append(enqueue(tx, NOTIFY_KIND, payload))
    if ids:
        # After the commit: a failed send stays queued for `skillstage outbox --retry`.
        detail.notifications = [d.to_dict() for d in deliver(project, store, ids=ids)]


def enforce(
    project: Project,
    *,
    auto_promote: bool = False,
    notify: bool = False,
    git_commit: bool = False,
    deploy: bool = False,
    dry_run: bool = False,
    actor: str | None = None,
    now: dt.datetime | None = None,
) -> EnforcementResult:
    """Seed 000's SLA enforcer: find the stale skills (`check`) and act on each.

    `auto_promote`: promote it through the promoter when every gate passes (never forced); a
    skill that is not ready is reported with its failing gates. `notify`: an `sla_breach`
    notification through the outbox (and `notify` on the promotion). Every stale skill gets an
    `sla_breach` event, at most one per (skill, version, stage) and UTC day. `dry_run` reports
    what would be done and changes nothing (versions first seen on disk are still registered, as
    `skillstage list` does: that is bookkeeping, and it decides which version's clock counts).
    """
    from skillstage.store import Store

    now = _at(now)
    actor = actor or ENFORCER_ACTOR
    report = check(project, now=now)
    result = EnforcementResult(now, dry_run, exempt=report.exempt)
    if notify:
        # (imported here: `sla check`, run by cron, never needs the promoter)
        from skillstage.lifecycle.effects import side_effect_warnings

        result.warnings += side_effect_warnings(project, notify_event=BREACH_EVENT)
    with Store.open(project.database_url) as store:
        for stale in report.breaches:
            if auto_promote:
                detail = _promote_stale(
                    project,
                    stale,
                    actor=actor,
                    dry_run=dry_run,
                    deploy=deploy,
                    notify=notify,
                    git_commit=git_commit,
                )
            else:
                detail = EnforcementDetail(
                    stale,
                    "reported",
                    "not promoted (no --auto-promote): promote it, remove it from the stage, or "
                    "document an sla_override with a reason",
                )
            if not dry_run:
                _record_breach(project, store, detail, now=now, actor=actor, notify=notify)
            result.details.append(detail)
    return result
