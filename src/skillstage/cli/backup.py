"""`skillstage backup`: back up and restore the skill trees, the archive and the store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from skillstage import api
from skillstage.cli.context import CliContext, echo_json, is_terminal
from skillstage.errors import EXIT_FAILED, EXIT_OK, UsageError


@click.group("backup")
def backup() -> None:
    """Back up and restore the skill trees, archive and store.

    A backup is one compressed, checksummed file under <state_dir>/backups/ holding every
    stage's skill directories, the version archive and the store, with a manifest of every
    file's sha256. The newest [backups] keep (10) are kept.
    """


@contextmanager
def _progress(enabled: bool, doing: str) -> Iterator[Callable[[str, int, int], None] | None]:
    if not enabled:
        yield None
        return
    # rich is imported only to draw on a terminal: piped output does not pay for it.
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn(f"{doing} {{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, object] = {}

    def advance(what: str, done: int, total: int) -> None:
        if what not in tasks:
            bar.start()
            tasks[what] = bar.add_task(what, total=total)
        bar.update(tasks[what], completed=done, total=total)  # type: ignore[arg-type]

    try:
        yield advance
    finally:
        bar.stop()


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)


@backup.command("create")
@click.option("--name", help="A name for it, part of its id (letters, digits, . _ -).")
@click.option("--by", "actor", metavar="ACTOR", help="Who takes it (default: $USER).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def create(obj: CliContext, name: str | None, actor: str | None, as_json: bool) -> int:
    """Back up every stage's skills, the archive and the store."""
    project = obj.project()
    with _progress(is_terminal() and not as_json, "backing up") as progress:
        result = api.backup_create(project, name=name, actor=actor, progress=progress)
    if as_json:
        echo_json(result.to_dict())
        return EXIT_OK
    info = result.backup.to_dict()
    click.echo(
        click.style("✓ ", fg="green")
        + f"backup {info['id']}: {info['skills']} skill(s), {info['files']} file(s), "
        f"store {info['store'].get('kind')} ({info['store'].get('events')} events), "
        f"{_size(info['size'])}"
    )
    click.echo(f"  {info['path']}")
    for removed in result.removed:
        click.echo(f"  deleted {removed} (keeping the newest {project.config.backups.keep})")
    return EXIT_OK


@backup.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@click.pass_obj
def list_(obj: CliContext, as_json: bool) -> int:
    """The backups, newest first."""
    found = api.backup_list(obj.project())
    if as_json:
        echo_json(
            [
                b.to_dict() | ({"error": b.manifest["error"]} if "error" in b.manifest else {})
                for b in found
            ]
        )
        return EXIT_OK
    if not found:
        click.echo("No backups yet: `skillstage backup create` takes one.")
    for b in found:
        if "error" in b.manifest:
            click.echo(f"{b.id}  ⚠ unreadable: {b.manifest['error']}")
            continue
        info = b.to_dict()
        click.echo(
            f"{b.id}  {info['created_at'][:19]}  by {info['who']}  {info['skills']} skill(s)  "
            f"{info['store'].get('events')} events  {_size(b.size)}"
        )
    return EXIT_OK


@backup.command("verify")
@click.argument("backup_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def verify(obj: CliContext, backup_id: str, as_json: bool) -> int:
    """Check every checksum of backup ID: exit 1 when anything differs."""
    result = api.backup_verify(obj.project(), backup_id)
    if as_json:
        echo_json(result.to_dict())
    elif result.ok:
        click.echo(click.style("✓ ", fg="green") + f"{result.id}: {result.checked} members intact")
    else:
        click.echo(click.style("✗ ", fg="red") + f"{result.id} is damaged ({result.path}):")
        for problem in result.problems:
            click.echo(f"  {problem}")
        click.echo("  hint: restore another backup (`skillstage backup list`)")
    return EXIT_OK if result.ok else EXIT_FAILED


@backup.command("restore")
@click.argument("backup_id", metavar="ID", required=False)
@click.option("--skill", "skill", metavar="NAME", help="Restore only this skill.")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--force", is_flag=True, help="Restore over a store newer than the backup.")
@click.option(
    "--resume", is_flag=True, help="Finish a restore that stopped part-way (no ID needed)."
)
@click.option("--by", "actor", metavar="ACTOR", help="Who restores (default: $USER).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def restore(
    obj: CliContext,
    backup_id: str | None,
    skill: str | None,
    dry_run: bool,
    force: bool,
    resume: bool,
    actor: str | None,
    as_json: bool,
) -> int:
    """Restore backup ID: the whole project, or one skill with --skill NAME.

    The backup is verified first; a backup of the current state is taken before anything
    changes; each skill directory is swapped in atomically and recorded as a `restore` event.
    A restore that stopped part-way (killed, the disk full) is finished by --resume; until
    then no other restore or backup starts.
    """
    from skillstage.lifecycle.backup_restore import iter_changes

    if resume == (backup_id is not None) or (resume and (skill or dry_run or force)):
        raise UsageError(
            "give a backup ID to restore, or --resume (alone) to finish a restore that stopped",
            hint="`skillstage backup list` shows the backups",
        )
    with _progress(is_terminal() and not as_json and not dry_run, "restoring") as progress:
        if backup_id is None:
            result = api.backup_resume(obj.project(), progress=progress)
        else:
            result = api.backup_restore(
                obj.project(),
                backup_id,
                skill=skill,
                dry_run=dry_run,
                force=force,
                actor=actor,
                progress=progress,
            )
    if as_json:
        echo_json(result.to_dict())
        return EXIT_OK
    for warning in result.warnings:
        click.echo(click.style("⚠ ", fg="yellow") + warning, err=True)
    if result.pre_restore_backup:
        click.echo(f"backed up the current state first: {result.pre_restore_backup}")
    for line in iter_changes(result):
        click.echo(("· " if dry_run else click.style("✓ ", fg="green")) + line)
    what = f"{result.skill} from {result.backup_id}" if result.skill else result.backup_id
    if not result.changes:
        click.echo(f"{what}: nothing to restore, everything is as in the backup")
    elif result.resumed:
        click.echo(f"finished the restore of {what}: {len(result.changes)} change(s)")
    elif not dry_run:
        click.echo(
            f"restored {what}: {len(result.changes)} change(s), {result.unchanged} unchanged"
        )
    return EXIT_OK
