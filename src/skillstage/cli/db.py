"""`skillstage db`: the store's schema."""

from __future__ import annotations

import click

from skillstage import api
from skillstage.cli.context import CliContext, echo_json


@click.group()
def db() -> None:
    """Manage the state store (SQLite by default, PostgreSQL for teams)."""


@db.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def upgrade(obj: CliContext, as_json: bool) -> int:
    """Upgrade the store's schema to the one this skillstage needs.

    Safe to run at any time: a store already up to date is left as it is.
    """
    result = api.db_upgrade(obj.project())
    if as_json:
        echo_json(
            {
                "database": result.database_url,
                "from_revision": result.from_revision,
                "to_revision": result.to_revision,
            }
        )
    elif result.from_revision == result.to_revision:
        click.echo(f"{result.database_url}: already at schema {result.to_revision}")
    else:
        click.echo(
            f"{result.database_url}: upgraded schema {result.from_revision or '(empty)'} → "
            f"{result.to_revision}"
        )
    return 0
