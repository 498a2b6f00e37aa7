"""The promoter's check against changing a stage a rollout is comparing in."""

from __future__ import annotations

from skillstage.errors import SkillstageError
from skillstage.store import Transaction
from skillstage.store import rollouts as store_rollouts


class RolloutActiveError(SkillstageError):
    """A move was refused: a rollout is changing the stage it would change."""

    code = "ROLLOUT_ACTIVE"


def refuse_if_open(
    tx: Transaction, name: str, stage: str, what: str, rollout_id: int | None = None
) -> None:
    """Refuse `what` (a promotion into `stage`, a rollback of it, another rollout) while a rollout
    other than `rollout_id` is open there, naming it and the command that ends it."""
    found = store_rollouts.open_rollout(tx, name, stage)
    if found is None or found.id == rollout_id:
        return
    raise RolloutActiveError(
        f"{name} has an {found.state} rollout in {stage} (#{found.id}: "
        f"{found.candidate_version} at {found.steps[found.step_index]}% beside "
        f"{found.stable_version}); {what} would change what it compares",
        hint=f"`skillstage rollout abort {name} --reason …` ends it, or let it complete "
        f"(`skillstage rollout status {name}`)",
    )


class SkillHeldError(SkillstageError):
    """A move was refused: the skill is held (after an automated rollback, or by a person)."""

    code = "SKILL_HELD"


def refuse_if_held(tx: Transaction, name: str, stage: str, what: str) -> None:
    """Refuse `what` (a promotion into `stage`, a rollout there) while a hold covers it: after an
    automated rollback nothing goes back in until a person has looked (and cleared the hold)."""
    from skillstage.store.controls import HOLD, control_on

    found = control_on(tx, HOLD, name, stage)
    if found is None:
        return
    raise SkillHeldError(
        f"{name} is held in {stage} (since {found.set_at:%Y-%m-%d %H:%M} UTC, by "
        f"{found.actor}: {found.reason}); {what} waits until a person clears the hold",
        hint=f'`skillstage hold clear {name} --by YOU --reason "…"` lets it through; '
        f"`skillstage report {name} --failure` shows what went wrong",
    )
