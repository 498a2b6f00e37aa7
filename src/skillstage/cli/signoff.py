"""`skillstage approve` and `skillstage signoff template`: a person's sign-off of a move."""

from __future__ import annotations

from pathlib import Path

import click

from skillstage import api
from skillstage.cli.context import STAGE, CliContext, echo_json
from skillstage.errors import EXIT_OK


@click.group()
def signoff() -> None:
    """Human sign-off: the checklist to fill in before `skillstage approve`."""


@signoff.command("template")
@click.argument("name")
@click.option("--to", "to_stage", type=STAGE, required=True, help="The stage the sign-off is for.")
@click.option("--by", "approver", metavar="ACTOR", help="The approver (default: $USER).")
@click.option("--ticket", help="The approval ticket (default: APPROVAL_<today>_XXX).")
@click.option("--json", "as_json", is_flag=True, help="Print the checklist as JSON instead.")
@click.pass_obj
def template(
    obj: CliContext,
    name: str,
    to_stage: str,
    approver: str | None,
    ticket: str | None,
    as_json: bool,
) -> int:
    """Print the sign-off checklist (YAML) for NAME's move into a stage, with the
    automated checks filled in from the store. Save it, answer each human_review item YES or
    NO, and pass it to `skillstage approve --checklist FILE` (a JSON copy, from --json, is
    valid YAML too)."""
    text = api.signoff_template(
        obj.project(), name, to_stage=to_stage, approver=approver, ticket=ticket
    )
    if as_json:
        import yaml

        echo_json(yaml.safe_load(text))
    else:
        click.echo(text, nl=False)
    return EXIT_OK


@click.command()
@click.argument("name")
@click.option(
    "--to", "to_stage", type=STAGE, required=True, help="The stage the skill would move into."
)
@click.option("--ticket", required=True, help="The approval ticket, e.g. APPROVAL_20251020_001.")
@click.option(
    "--decision",
    type=click.Choice(["approved", "rejected", "needs_iteration"], case_sensitive=False),
    required=True,
    help="The decision.",
)
@click.option(
    "--checklist",
    "checklist_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The filled-in checklist from `skillstage signoff template` (required to approve).",
)
@click.option("--notes", help="Comments on the decision, concerns, or required changes.")
@click.option("--by", "approver", metavar="ACTOR", help="Who decides (default: $USER).")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded sign-off as JSON.")
@click.pass_obj
def approve(
    obj: CliContext,
    name: str,
    to_stage: str,
    ticket: str,
    decision: str,
    checklist_file: Path | None,
    notes: str | None,
    approver: str | None,
    as_json: bool,
) -> int:
    """Record a human sign-off of NAME's move into a stage, against the content
    digest of the copy that would move: a changed skill needs a new sign-off.

    The approver must be listed under [approvals] approvers and, unless allow_self_approval,
    must not be the skill's author. An approval needs every checklist item YES. The newest
    decision counts: a rejection blocks the `approval` gate until a later approval.
    """
    result = api.approve(
        obj.project(),
        name,
        to_stage=to_stage,
        ticket=ticket,
        decision=decision,
        approver=approver,
        checklist_file=checklist_file,
        notes=notes,
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(
            f"{result.decision}: {result.name} {result.version} ({result.digest[:12]}) "
            f"{result.from_stage} → {result.to_stage} by {result.approver}, {result.ticket}"
        )
    return EXIT_OK
