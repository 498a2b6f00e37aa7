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
