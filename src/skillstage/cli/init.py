"""`skillstage init`: create a project."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from skillstage.cli.context import NonEmptyPath, echo_json

if TYPE_CHECKING:
    from skillstage.config import Project

_GITIGNORE_COMMENT = "# skillstage's local state (database, version archive, locks): not committed"


@dataclass
class Ignored:
    """What init did to the project's .gitignore."""

    path: str
    added: list[str] = field(default_factory=list)  # the entries appended
    already: list[str] = field(default_factory=list)  # those it had
    error: str | None = None  # why it could not be read or written


@click.command()
@click.argument("directory", type=NonEmptyPath(path_type=Path, file_okay=False), default=".")
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite an existing skillstage.toml; or start a project inside another one.",
)
@click.option(
    "--gitignore/--no-gitignore",
    default=None,
    help="Add the state directory (.skillstage/: the database, the version archive, locks) to "
    "DIRECTORY/.gitignore, appended to one that exists unless it already has it (default: when "
    "DIRECTORY is in a git repository).",
)
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Print the default config (TOML, or JSON with --json) and stop.",
)
@click.option(
    "--preset",
    type=click.Choice(["seed001"]),
    help="Start from another config: seed001 is the promotion of Python components, with the "
    "stages development, staging and production, the quality gates (tests, coverage, lint, "
    "types, secrets, integration-tests-exist) and thresholds (coverage 60%, 70% into "
    "staging, 80% into production).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def init(
    directory: Path,
    force: bool,
    gitignore: bool | None,
    print_only: bool,
    preset: str | None,
    as_json: bool,
) -> int:
    """Create a skillstage project in DIRECTORY (default: here).

    Writes a commented skillstage.toml with every key and its default (stages prototype, staged
    and production in .claude/skills/, a 48-hour staging SLA, the default promotion thresholds:
    pattern fidelity 0.90, outcome quality 0.85, false-positive rate below 0.05, no critical
    false negatives, 100 executions before production), creates .skillstage/ and the stage
    folders, and the database. An existing skillstage.toml is kept unless --force. In a git
    repository, .skillstage/ is added to .gitignore (unless --no-gitignore): it is this
    checkout's state, not something to commit.
    """
    if print_only:
        if as_json:  # the defaults as a script reads them, keys as in the file
            import msgspec

            from skillstage.config import PRESETS, Config, parse_config

            if preset is not None:
                import tomllib

                config = parse_config(tomllib.loads(PRESETS[preset]), Path(f"{preset} preset"))
            else:
                config = Config()
            echo_json(msgspec.to_builtins(config))
        else:
            from skillstage.config import DEFAULT_CONFIG_TOML, PRESETS

            click.echo(DEFAULT_CONFIG_TOML if preset is None else PRESETS[preset], nl=False)
        return 0
    from skillstage import api
    from skillstage.config import load_config_file

    result = api.init(directory, force=force, preset=preset)
    project = load_config_file(result.config_path)
    if gitignore is None:
        gitignore = _in_a_git_repository(project)
    ignored = _ignore_state(project) if gitignore else None
    if as_json:
        echo_json(
            {
                "root": str(result.root),
                "config": str(result.config_path),
                "config_written": result.config_written,
                "created": [str(p) for p in result.created_dirs],
                "database": result.database_url,
                "gitignore": asdict(ignored) if ignored is not None else None,
            }
        )
        return 0
    verb = "wrote" if result.config_written else "kept existing"
    click.echo(f"{verb} {result.config_path}")
    for created in result.created_dirs:
        click.echo(f"created {created}")
    click.echo(f"database {result.database_url}")
    if ignored is not None and ignored.added:
        click.echo(f"added {', '.join(ignored.added)} to {ignored.path}: git leaves the state out")
    elif ignored is not None and ignored.already:
        click.echo(f"kept {ignored.path}: it already has {', '.join(ignored.already)}")
    return 0


def _in_a_git_repository(project: Project) -> bool:
    from skillstage.errors import SkillstageError
    from skillstage.integrations.git import repository_root

    try:
        return repository_root(project.root, timeout=project.config.git.timeout_seconds) is not None
    except SkillstageError as exc:  # a repository git refuses to use: said, and left alone
        click.echo(
            click.style("⚠ ", fg="yellow")
            + f"no .gitignore written: git cannot tell whether {project.root} is in a repository "
            f"({exc.message}); `skillstage init --gitignore` writes one anyway",
            err=True,
        )
        return False


def _state_entries(project: Project) -> list[str]:
    """The .gitignore lines (relative to the project's root) for what init creates that must not
    be committed: the state directory (the database, the version archive, locks, the metrics
    inbox), and a SQLite database file configured outside it."""
    root = project.root.resolve()
    paths = [(project.state_dir, True)]
    database = project.config.database
    if database and (database.startswith("sqlite:///") or "://" not in database):
        file = Path(database.removeprefix("sqlite:///"))
        paths.append((file if file.is_absolute() else project.root / file, False))
    entries = []
    state = project.state_dir.resolve()
    for path, is_directory in paths:
        resolved = path.resolve()
        if resolved != root and root not in resolved.parents:
            continue  # outside the project: not in this .gitignore
        if not is_directory and state in resolved.parents:
            continue  # in the state directory, ignored with it
        relative = resolved.relative_to(root).as_posix()
        # (a SQLite database comes with its -wal, -shm and -journal files)
        entries.append(f"/{relative}/" if is_directory else f"/{relative}*")
    return entries


def _same_entry(line: str, entry: str) -> bool:
    """Whether a .gitignore line already ignores what `entry` does (`.skillstage`, `.skillstage/`,
    `/.skillstage/`, `/.skillstage/*` for `/.skillstage/`)."""
    text = line.strip()
    for suffix in ("/**", "/*"):
        if entry.endswith("/"):
            text = text.removesuffix(suffix)
    return text.strip("/") == entry.strip("/")


def _ignore_state(project: Project) -> Ignored | None:
    """Append the state's entries that are missing to the project's .gitignore. What was added
    and what was already there; None when nothing of it is inside the project."""
    entries = _state_entries(project)
    if not entries:
        return None
    path = project.root / ".gitignore"
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        return _not_written(path, entries, exc)
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    already = [e for e in entries if any(_same_entry(line, e) for line in lines)]
    added = [e for e in entries if e not in already]
    if added:
        addition = "\n".join([_GITIGNORE_COMMENT, *added]) + "\n"
        separator = "\n" if text and not text.endswith("\n") else ""
        try:
            with path.open("a", encoding="utf-8") as file:  # (a symlinked one stays linked)
                file.write(separator + ("\n" if text.strip() else "") + addition)
        except OSError as exc:
            return _not_written(path, added, exc)
    return Ignored(str(path), added, already)


def _not_written(path: Path, entries: list[str], exc: Exception) -> Ignored:
    """The project is made; only its .gitignore could not be read or written: a warning."""
    reason = getattr(exc, "strerror", None) or str(exc)
    click.echo(
        click.style("⚠ ", fg="yellow")
        + f"cannot write {path} ({reason}): add {' '.join(entries)} to it yourself, so the "
        "state is not committed",
        err=True,
    )
    return Ignored(str(path), error=reason)
