"""`skillstage token`: the API tokens of `skillstage serve` (create, list, revoke)."""

from __future__ import annotations

import click

from skillstage.cli.context import CliContext, echo_json
from skillstage.errors import EXIT_OK
from skillstage.tokens import ROLE_WORDS, ROLES, TokenInfo

_ROLES_HELP = "; ".join(f"{role} {ROLE_WORDS[role]}" for role in ROLES)
_Row = tuple[str, str, str, str, str, str]


@click.group("token")
def token() -> None:
    """Create, list and revoke the API tokens of `skillstage serve`.

    A request sends its token as `Authorization: Bearer <token>`; the token's name is recorded
    as who acted, and its role says what it may do. The store keeps only a digest of each
    token: a token is shown once, when it is made.
    """


@token.command("create")
@click.option("--name", required=True, help="Who holds it: recorded as the actor of its writes.")
@click.option("--role", required=True, metavar="ROLE", help=f"What it may do: {_ROLES_HELP}.")
@click.option("--by", "actor", metavar="ACTOR", help="Who makes it (default: $USER).")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its record as JSON.")
@click.pass_obj
def create(obj: CliContext, name: str, role: str, actor: str | None, as_json: bool) -> int:
    """Make a token for NAME with ROLE and print it, this once."""
    from skillstage.tokens import create_token

    made = create_token(obj.project(), name=name, role=role, actor=actor)
    if as_json:
        echo_json({**made.to_dict(), "note": "the token is not shown again"})
        return EXIT_OK
    click.echo(f"Created token {made.info.name!r} with the role {made.info.role}:\n")
    click.echo(f"  {made.token}\n")
    click.echo(
        "It will not be shown again: keep it now (the store holds only its digest).\n"
        "Send it as `Authorization: Bearer <token>`; "
        f"`skillstage token revoke {made.info.name}` ends it."
    )
    return EXIT_OK


@token.command("list")
@click.option("--all", "everything", is_flag=True, help="Also the revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@click.pass_obj
def list_(obj: CliContext, everything: bool, as_json: bool) -> int:
    """The live tokens: name, role, id, who made them and when, when last used."""
    from skillstage.tokens import list_tokens

    found = list_tokens(obj.project(), revoked=everything)
    if as_json:
        echo_json([info.to_dict() for info in found])
        return EXIT_OK
    if not found:
        click.echo(
            "No tokens. `skillstage token create --role ROLE --name NAME` makes one."
            if not everything
            else "No tokens, live or revoked."
        )
        return EXIT_OK
    rows: list[_Row] = [("NAME", "ROLE", "ID", "CREATED (UTC)", "BY", "LAST USED")]
    rows += [_row(info) for info in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return EXIT_OK


def _row(info: TokenInfo) -> _Row:
    used = f"{info.last_used_at:%Y-%m-%d %H:%M}" if info.last_used_at else "never"
    if info.revoked_at is not None:
        used += f" (revoked {info.revoked_at:%Y-%m-%d %H:%M} by {info.revoked_by})"
    return (
        info.name,
        info.role,
        info.token_id,
        f"{info.created_at:%Y-%m-%d %H:%M}",
        info.created_by,
        used,
    )


@token.command("revoke")
@click.argument("name")
@click.option("--by", "actor", metavar="ACTOR", help="Who revokes it (default: $USER).")
@click.option("--json", "as_json", is_flag=True, help="Print the revoked token as JSON.")
@click.pass_obj
def revoke(obj: CliContext, name: str, actor: str | None, as_json: bool) -> int:
    """End NAME's token: every server refuses it from its next request on."""
    from skillstage.tokens import revoke_token

    revoked = revoke_token(obj.project(), name, actor=actor)
    if as_json:
        echo_json(revoked.to_dict())
    else:
        click.echo(
            f"Revoked token {revoked.name!r} (role {revoked.role}): requests with it are "
            "refused from now on."
        )
    return EXIT_OK
