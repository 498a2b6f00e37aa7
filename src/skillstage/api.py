"""The one code path that the CLI, the server and library users share.

Each function takes a `Project` (or works without one where that makes sense), does one job, and
returns a typed result or raises a `SkillstageError`. Faces parse input, call one function here, and
render what it returns.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from skillstage.arguments import checked
from skillstage.config import (
    CONFIG_FILENAME,
    DEFAULT_CONFIG_TOML,
    Project,
    Thresholds,
    ValidationPolicy,
    find_config_file,
    load_config_file,
)
from skillstage.errors import ConflictError, SkillReadError, SkillstageError, UsageError

if TYPE_CHECKING:
    from skillstage.integrations.outbox import Delivery, OutboxReport
    from skillstage.lifecycle.demote import DemoteCheck
    from skillstage.lifecycle.drill import DrillResult
    from skillstage.lifecycle.go_no_go import GoNoGo
    from skillstage.lifecycle.promote import PromotionResult
    from skillstage.lifecycle.promotion_issue import PromotionIssue
    from skillstage.lifecycle.readiness import Readiness, VersionComparison
    from skillstage.lifecycle.signoff import SignOffResult
    from skillstage.lifecycle.sla import SlaReport
    from skillstage.lifecycle.stats import KeyMetrics
    from skillstage.metrics.evals import EvalRun
    from skillstage.metrics.ingest import IngestResult, LagReport
    from skillstage.metrics.posted import PostedResult
    from skillstage.metrics.record import ExecutionRecord
    from skillstage.metrics.summary import MetricsSummary
    from skillstage.rollout.engine import RolloutStatus
    from skillstage.rollout.plan import RolloutOutcome
    from skillstage.runtime.check import RuntimeCheck
    from skillstage.runtime.routing import Resolution, RoutingTable
    from skillstage.runtime.sync import SyncResult
    from skillstage.skill.checks import Finding, SkillReport
    from skillstage.skill.model import Frontmatter, SkillVersion
    from skillstage.store import Event, Store
    from skillstage.store.controls import Control
    from skillstage.watch.switches import SwitchResult
    from skillstage.watch.watcher import PassResult as WatchPass
from skillstage.skill.read import iter_skill_dirs, read_skill, read_skill_md, stage_directories

# The store (SQLAlchemy) is imported by the functions that use it: `validate` never needs it, and
# the import is a large part of a short command's start-up time.
Progress = Callable[[int, int | None], None]  # (done, total when known)


# -- validate ----------------------------------------------------------------------------------


@dataclass
class ValidationReport:
    """The result of validating one or more skills."""

    skills: list[SkillReport]
    spec_only: bool = False
    strict: bool = False

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.skills)

    @property
    def errors(self) -> int:
        return sum(report.count("error") for report in self.skills)

    @property
    def warnings(self) -> int:
        return sum(report.count("warning") for report in self.skills)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "spec_only": self.spec_only,
            "strict": self.strict,
            "summary": {
                "skills": len(self.skills),
                "failed": sum(1 for report in self.skills if not report.ok),
                "errors": self.errors,
                "warnings": self.warnings,
            },
            "skills": [report.to_dict() for report in self.skills],
        }


def _expected_names(project: Project | None) -> dict[Path, str]:
    """The skill name each stage directory's location implies (stage path templates)."""
    if project is None:
        return {}
    return {entry.path: entry.name for entry in stage_directories(project)}


@checked
def validate(
    paths: Sequence[Path],
    *,
    project: Project | None = None,
    all_stages: bool = False,
    spec_only: bool = False,
    strict: bool = False,
    run_tests: bool = False,
    jobs: int = 1,
    test_timeout: float | None = None,
    progress: Progress | None = None,
) -> ValidationReport:
    """Validate skill directories, or every skill under the given trees.

    `all_stages` adds every skill in the project's stage folders. Dependencies are resolved against
    the skills validated plus the project's other skills. With `strict`, warnings become errors.
    `jobs` > 1 checks skills in that many processes (0: one per CPU) when there are enough of them
    to be worth it; the report is the same. `test_timeout` overrides the configured timeout of
    each test.sh.
    """
    policy = project.config.validation if project is not None else ValidationPolicy()
    if test_timeout is not None:
        policy = msgspec.structs.replace(policy, test_timeout_seconds=test_timeout)
    # A SKILL.md named directly stands for its skill directory.
    paths = [p.parent if p.name in ("SKILL.md", "skill.md") and p.is_file() else p for p in paths]
    for path in paths:
        if not path.exists():
            raise UsageError(f"{path} does not exist", hint="pass a skill directory or a tree")
        if not path.is_dir():
            raise UsageError(f"{path} is not a directory", hint="pass the skill's directory")
    if all_stages and project is None:
        raise UsageError("--all needs a project", hint="run `skillstage init` first")
    if not paths and not all_stages:
        raise UsageError("nothing to validate", hint="pass PATH... or --all")
    expected = {path.resolve(): name for path, name in _expected_names(project).items()}
    seen: set[Path] = set()

    def work() -> Iterator[_CheckArgs]:
        # A generator, so that worker processes check the first skills while the tree is still
        # being searched for the rest.
        for target in _targets(paths, project, all_stages=all_stages):
            if target not in seen:
                seen.add(target)
                yield (target, policy, spec_only, expected.get(target))

    reports = []
    for report in _check_each(work(), jobs):
        reports.append(report)
        if progress is not None:
            progress(len(reports), None)
    from skillstage.skill.checks import check_dependencies, run_skill_tests

    if not spec_only:
        known = _project_dependency_graph(project, exclude=seen)
        known.update({r.name: r.dependencies for r in reports if r.name})
        check_dependencies(reports, known)
    if run_tests:
        for report in reports:
            run_skill_tests(report, policy)
    for report in reports:
        report.findings = _in_file_order(report.findings, escalate=strict)
    return ValidationReport(reports, spec_only=spec_only, strict=strict)


def _in_file_order(findings: list[Finding], *, escalate: bool) -> list[Finding]:
    """A skill's findings file by file (in the order the files first come up), each file's by
    line, those of the file as a whole first: the order an editor walks them in. The checks add
    them rule by rule."""
    files: dict[str | None, int] = {}
    for finding in findings:
        files.setdefault(finding.file, len(files))
    ordered = sorted(findings, key=lambda f: (files[f.file], f.line or 0))
    return [finding.escalated() for finding in ordered] if escalate else ordered


# Below this many skills, starting worker processes costs more than it saves.
PARALLEL_FROM = 200

_CheckArgs = tuple[Path, ValidationPolicy, bool, str | None]


def _targets(paths: Sequence[Path], project: Project | None, *, all_stages: bool) -> Iterator[Path]:
    """Skill directories under each path, then, with `all_stages`, every directory in the
    project's stage folders. A path with no skill below it is taken as a skill missing its
    SKILL.md, unless it is or holds one of the project's stage folders (a tree with no skills
    yet: `.claude/skills` of a new project)."""
    stage_roots = (
        [project.stage_root(stage).resolve() for stage in project.config.stages]
        if project is not None
        else []
    )
    for path in paths:
        # Resolved once here: directories found below a real path are real paths themselves.
        root = path.resolve()
        found = False
        for directory in iter_skill_dirs(root):
            found = True
            yield directory
        if any(r == root or r.is_relative_to(root) for r in stage_roots):
            # A stage folder's directories are its skills, SKILL.md or not (one without it is a
            # skill missing its SKILL.md, as `--all` reports it).
            assert project is not None
            for entry in stage_directories(project):
                directory = entry.path.resolve()
                if directory.is_relative_to(root):
                    yield directory
        elif not found:
            yield root
    if all_stages and project is not None:
        for entry in stage_directories(project):
            yield entry.path.resolve()


def _check_one(args: _CheckArgs) -> SkillReport:
    # The checks are imported by the commands that check: a listing or a history does not.
    from skillstage.skill.checks import check_skill

    directory, policy, spec_only, expected_name = args
    return check_skill(directory, policy, spec_only=spec_only, expected_name=expected_name)


def _check_each(work: Iterator[_CheckArgs], jobs: int) -> Iterator[SkillReport]:
    """Check skills in order; in worker processes when there are many."""
    workers = jobs or os.cpu_count() or 1
    first = list(itertools.islice(work, PARALLEL_FROM))
    if workers <= 1 or len(first) < PARALLEL_FROM:
        yield from map(_check_one, itertools.chain(first, work))
        return
    # Imported here: a promotion never needs them, and they cost its start-up ~10 ms.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork: the workers start with everything already imported; they touch no shared state.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(_check_one, itertools.chain(first, work), chunksize=_CHUNK)


# Skills per task sent to a worker: big enough to amortise the hand-over, small enough to share
# out evenly and to start while the tree is still being searched.
_CHUNK = 32


def _project_dependency_graph(project: Project | None, exclude: set[Path]) -> dict[str, list[str]]:
    """Names and declared dependencies of the project's skills not being validated themselves."""
    from skillstage.skill.frontmatter import FrontmatterError, parse_skill_md

    graph: dict[str, list[str]] = {}
    if project is None:
        return graph
    for entry in stage_directories(project):
        if entry.path in exclude:
            continue
        raw = read_skill_md(entry.path)
        if raw is None:
            continue
        try:
            frontmatter = parse_skill_md(raw, entry.path / "SKILL.md").frontmatter
        except FrontmatterError:
            continue
        name = frontmatter.get("name")
        dependencies = frontmatter.get("dependencies")
        if isinstance(name, str):
            graph[name] = (
                [d for d in dependencies if isinstance(d, str)]
                if isinstance(dependencies, list)
                else []
            )
    return graph


# -- init --------------------------------------------------------------------------------------


@dataclass
class InitResult:
    root: Path
    config_path: Path
    config_written: bool
    created_dirs: list[Path]
    database_url: str


@checked
def init(root: Path, *, force: bool = False, preset: str | None = None) -> InitResult:
    """Create a project: a commented `skillstage.toml`, `.skillstage/`, the stage folders and the
    database. An existing config is kept (and used) unless `force`. `preset` names another
    starting config (`seed001`: seed 001's stages, quality gates and thresholds)."""
    from skillstage.config import PRESETS

    if preset is not None and preset not in PRESETS:
        raise UsageError(
            f"no preset named {preset!r}", hint=f"presets: {', '.join(sorted(PRESETS))}"
        )
    text = DEFAULT_CONFIG_TOML if preset is None else PRESETS[preset]
    root = root.resolve()
    config_path = root / CONFIG_FILENAME
    if not force and not config_path.exists() and root.parent != root:
        enclosing = find_config_file(root.parent)
        if enclosing is not None:
            # (inside a stage folder it would even change a skill's content)
            raise UsageError(
                f"{root} is inside the project at {enclosing.parent}",
                path=enclosing,
                hint="use that project, or pass --force to start another one inside it",
            )
    written = False
    created = []
    try:
        if not config_path.exists() or force:
            root.mkdir(parents=True, exist_ok=True)
            from skillstage.lifecycle.fs import write_atomically

            write_atomically(config_path, text)  # a full disk leaves none
            written = True
        project = load_config_file(config_path)
        folders = [project.state_dir, *(project.stage_root(s) for s in project.config.stages)]
        for directory in folders:
            if not directory.is_dir():
                directory.mkdir(parents=True)
                created.append(directory)
    except OSError as exc:
        raise UsageError(
            f"cannot create the project: {exc.strerror or exc}",
            path=exc.filename or root,
            hint="choose a directory you can write to",
        ) from None
    from skillstage.store import Store

    with Store.open(project.database_url):
        pass
    return InitResult(root, config_path, written, created, _redact(project.database_url))


def _redact(url: str) -> str:
    """A database URL without its password, for display."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


# -- db ----------------------------------------------------------------------------------------


@dataclass
class UpgradeResult:
    database_url: str
    from_revision: str | None
    to_revision: str


@checked
def db_upgrade(project: Project) -> UpgradeResult:
    """Bring the store's schema up to date (Alembic migrations)."""
    from skillstage.store import upgrade_schema

    before, after = upgrade_schema(project.database_url)
    return UpgradeResult(_redact(project.database_url), before, after)


# -- list --------------------------------------------------------------------------------------


@dataclass
class ListedSkill:
    """A skill version in a stage, with how long it has been there (seed 000's "List Staged
    Skills" fields)."""

    name: str
    stage: str
    version: str
    digest: str
    path: Path
    entered_at: dt.datetime
    age_hours: float
    problems: list[str] = field(default_factory=list)
    # The frontmatter of the copy on disk when it is the version listed (its digest): what was
    # just read, for callers that look into it (the SLA's overrides). Not part of the JSON.
    frontmatter: Frontmatter | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stage": self.stage,
            "version": self.version,
            "digest": self.digest,
            "path": str(self.path),
            "entered_at": self.entered_at.isoformat(),
            "age_hours": self.age_hours,
            "problems": self.problems,
        }


@dataclass
class SkillListing:
    skills: list[ListedSkill]
    unreadable: list[tuple[Path, str]]  # skill directories that could not be read, and why
    registered: int  # versions seen for the first time by this call

    def to_dict(self) -> dict[str, Any]:
        return {
            "skills": [skill.to_dict() for skill in self.skills],
            "unreadable": [{"path": str(p), "error": e} for p, e in self.unreadable],
            "registered": self.registered,
        }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@checked
def list_skills(
    project: Project, *, stage: str | None = None, now: dt.datetime | None = None
) -> SkillListing:
    """The skills in each stage with their age there.

    Skill versions on disk that the store has not seen are registered first (with their digest),
    so that their age starts counting from first sight.
    """
    if stage is not None and stage not in project.config.stages:
        raise UsageError(
            f"unknown stage {stage!r}",
            hint=f"stages: {', '.join(project.config.stages)}",
        )
    from skillstage.lifecycle.leftovers import in_project, to_recover
    from skillstage.store import Store

    backdated = now  # tests and the demo register "as of" an earlier time
    policy = project.config.validation
    unreadable: list[tuple[Path, str]] = []
    problems: dict[tuple[str, str], list[str]] = {}
    registered = 0
    with Store.open(project.database_url) as store:
        if to_recover(project, store):  # a crashed promotion is finished or undone first
            from skillstage.lifecycle.move import recover_all

            recover_all(project, store)
        current = {(a.name, a.stage): a for a in store.current_assignments(stage=stage)}
        on_disk: set[tuple[str, str]] = set()
        read: dict[tuple[str, str], tuple[str, Frontmatter]] = {}  # (digest, frontmatter)
        for entry in stage_directories(project, stage):
            try:
                skill = read_skill(entry.path, policy)
            except SkillReadError as exc:
                unreadable.append((entry.path, f"{exc.code}: {exc.message}"))
                continue
            if skill.name != entry.name:
                # Two directories claiming one name would take turns being "the" skill.
                unreadable.append(
                    (
                        entry.path,
                        f"NAME_MISMATCH_DIRECTORY: SKILL.md names the skill {skill.name!r}, "
                        f"its location says {entry.name!r}",
                    )
                )
                continue
            key = (skill.name, entry.stage)
            on_disk.add(key)
            read[key] = (skill.digest, skill.frontmatter)
            assignment = current.get(key)
            if assignment is not None and assignment.digest == skill.digest:
                continue
            from skillstage.lifecycle.archive import archive_path
            from skillstage.lifecycle.fs import archive_copy
            from skillstage.lifecycle.locks import skill_lock

            try:
                # Under the skill's lock: a promoter or a recovery of this skill must not work on
                # its archive entry or stage assignment at the same time. What was read before
                # the lock may be stale by now (a rollback finished meanwhile): read it again.
                with skill_lock(project, store, skill.name):
                    try:
                        skill = read_skill(entry.path, policy)
                    except SkillReadError:
                        continue  # moved away meanwhile: not on disk any more
                    read[key] = (skill.digest, skill.frontmatter)
                    live = store.current_assignments(stage=entry.stage, name=skill.name)
                    if live and live[0].digest == skill.digest:
                        continue
                    at = backdated or _now()
                    with store.atomic() as tx:
                        record = tx.register(skill, at=at)
                        # Every version that enters a stage is kept, so it can be rolled back to.
                        archive_copy(
                            entry.path,
                            archive_path(project, skill.name, skill.version, skill.digest),
                        )
                        tx.enter_stage(record.version_id, entry.stage, str(entry.path), at=at)
                        tx.append_event(
                            "register",
                            name=skill.name,
                            version=skill.version,
                            digest=skill.digest,
                            to_stage=entry.stage,
                            actor="skillstage list",
                            reason="first seen on disk",
                            path=str(entry.path),
                            at=at,
                        )
                        registered += 1
            except ConflictError as exc:
                note = f"{exc.message}; {exc.hint}" if exc.hint else exc.message
                problems.setdefault(key, []).append(note)
        listed = []
        as_of = backdated or _now()  # after any registration above, so no age is negative
        for assignment in store.current_assignments(stage=stage):
            assignment = in_project(project, assignment)
            key = (assignment.name, assignment.stage)
            notes = list(problems.get(key, []))
            if key not in on_disk:
                notes.append("not found on disk")
            seen = read.get(key)
            listed.append(
                ListedSkill(
                    name=assignment.name,
                    stage=assignment.stage,
                    version=assignment.version,
                    digest=assignment.digest,
                    path=Path(assignment.path),
                    entered_at=assignment.entered_at,
                    age_hours=round((as_of - assignment.entered_at).total_seconds() / 3600, 1),
                    problems=notes,
                    frontmatter=seen[1] if seen and seen[0] == assignment.digest else None,
                )
            )
    order = {name: index for index, name in enumerate(project.config.stages)}
    listed.sort(key=lambda s: (order.get(s.stage, len(order)), s.entered_at, s.name))
    return SkillListing(listed, unreadable, registered)


# -- promote, rollback, history -----------------------------------------------------------------


def default_actor(given: str | None = None) -> str:
    """Who is acting: `given`, else the login name, else "skillstage". The audit trail names
    them, so a blank name is refused, and a login name that is not UTF-8 (which no store can
    keep) too."""
    if given is not None:
        if not given.strip():
            raise UsageError("who acts (--by) is blank", hint="name them, e.g. --by alice")
        return given
    for variable in ("USER", "LOGNAME"):
        name = os.environ.get(variable)
        if name:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise UsageError(
                    f"${variable} is not valid UTF-8: {name!r}",
                    hint="name who acts with --by NAME",
                ) from None
            return name
    return "skillstage"


@checked
def promote(
    project: Project,
    refs: Sequence[str],
    *,
    to: str | None = None,
    from_stage: str | None = None,
    all_ready_from: str | None = None,
    actor: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
    overwrite: bool = False,
    lock_timeout: float = 60.0,
    approver: str | None = None,
    approval_ticket: str | None = None,
    confirm: Callable[[PromotionResult], bool] | None = None,
    deploy: bool = False,
    notify: bool = False,
    git_commit: bool = False,
) -> list[PromotionResult]:
    """Promote each skill (a name or a path) independently; with `all_ready_from`, every skill in
    that stage whose gates pass. With `from_stage`, each skill must be in that stage, and is
    promoted from there. One result per skill, in order."""
    from skillstage.lifecycle.effects import side_effect_warnings
    from skillstage.lifecycle.promote import PromotionResult
    from skillstage.store import Store

    if from_stage is not None:
        _known_stage(project, from_stage, "--from")
        if all_ready_from is not None and all_ready_from != from_stage:
            raise UsageError(
                f"--from {from_stage} and --all-ready {all_ready_from} name different stages",
                hint=f"--all-ready {from_stage} promotes every ready skill in {from_stage}",
            )
        refs = [_in_stage(project, ref, from_stage) for ref in refs]
    names = list(refs)
    if all_ready_from is not None:
        if all_ready_from not in project.config.stages:
            raise UsageError(f"unknown stage {all_ready_from!r}")
        names += [
            e.name if from_stage is None else str(e.path)
            for e in stage_directories(project, all_ready_from)
        ]
    if not names:
        raise UsageError("nothing to promote", hint="pass NAME|PATH... or --all-ready")
    if force and not (reason or "").strip():
        raise UsageError("--force needs --reason", hint='e.g. --reason "hotfix for INC-1234"')
    actor = default_actor(actor)
    several = len(dict.fromkeys(names)) > 1
    results = []
    from skillstage.runtime.registry_file import one_export

    with Store.open(project.database_url) as store, one_export(project, store):
        for ref in dict.fromkeys(names):
            try:
                results.append(
                    _promote_one(
                        project,
                        store,
                        ref,
                        ready_only=all_ready_from is not None and ref not in refs,
                        to=to,
                        actor=actor,
                        dry_run=dry_run,
                        force=force,
                        reason=reason,
                        overwrite=overwrite,
                        lock_timeout=lock_timeout,
                        approver=approver,
                        approval_ticket=approval_ticket,
                        confirm=confirm,
                        deploy=deploy,
                        notify=notify,
                        git_commit=git_commit,
                    )
                )
            except SkillstageError as exc:
                if not several:
                    raise
                # Each skill is promoted independently: one refusal (a lock held elsewhere, a
                # skill moved meanwhile) must not hide what happened to the others.
                results.append(PromotionResult(success=False, skill_name=ref, error=str(exc)))
    warnings = side_effect_warnings(
        project, deploy=deploy, notify_event="promoted" if notify else None
    )
    for result in results:
        result.warnings += warnings
    return results


def _known_stage(project: Project, stage: str, option: str) -> None:
    if stage not in project.config.stages:
        raise UsageError(
            f"{option} {stage}: there is no stage {stage!r}",
            hint="stages, in order: " + " → ".join(project.config.stages),
        )


def _in_stage(project: Project, ref: str, stage: str) -> str:
    """The path of the copy of `ref` (a name or a path) in `stage`; a `UsageError` saying where
    the skill is when it is not in that stage."""
    entries = list(stage_directories(project))
    given = Path(ref)
    if given.exists():
        found = [e for e in entries if e.path.resolve() == given.resolve()]
        if found and found[0].stage != stage:
            raise UsageError(
                f"{ref} is in {found[0].stage}, not in {stage} (--from {stage})",
                hint=f"drop --from to promote it from {found[0].stage}",
            )
        return ref  # (one outside every stage folder is refused by the promoter)
    path = (
        project.stage_path(stage, ref) if given.name == ref and ref not in ("", ".", "..") else None
    )
    if path is not None and path.is_dir():
        return str(path)
    where = [e.stage for e in entries if e.name == ref]
    raise UsageError(
        f"{ref} is not in {stage} (--from {stage})"
        + (f": it is in {', '.join(where)}" if where else ": no stage holds a skill of that name"),
        hint="drop --from to promote it from where it is; `skillstage list` shows every stage"
        if where
        else "`skillstage list` shows the skills in each stage",
    )


def _promote_one(
    project: Project,
    store: Store,
    ref: str,
    *,
    ready_only: bool,
    to: str | None,
    actor: str,
    **options: Any,
) -> PromotionResult:
    from skillstage.lifecycle import promote as promoter

    if ready_only:
        probe = promoter.promote(
            project,
            store,
            ref,
            to=to,
            actor=actor,
            dry_run=True,
            lock_timeout=options["lock_timeout"],
        )
        if not probe.success:
            return probe  # not ready: reported with why, not promoted
    return promoter.promote(project, store, ref, to=to, actor=actor, **options)


@checked
def rollback(
    project: Project,
    name: str,
    *,
    reason: str,
    to_version: str | None = None,
    to_stage: str | None = None,
    stage: str | None = None,
    trigger_metric: str | None = None,
    actor: str | None = None,
    lock_timeout: float = 60.0,
    git_commit: bool = False,
    dry_run: bool = False,
    approver: str | None = None,
) -> PromotionResult:
    """Put the previous good version of a skill back live (seed 002 §3.2); with `dry_run`, say
    which version would come back, from where, and change nothing. `approver`: a person's manual
    override of the automation (seed 002 §4.1), recorded as such. `to_stage`: the stage to roll
    back to, `stage` itself (the previous good version) or the stage before it (the skill
    leaves `stage` and goes back there)."""
    from skillstage.lifecycle import promote as promoter
    from skillstage.store import Store

    demote = (
        rollback_leaves_stage(project, stage=stage, to_stage=to_stage, to_version=to_version)
        is not None
    )
    with Store.open(project.database_url) as store:
        return promoter.rollback(
            project,
            store,
            name,
            reason=reason,
            actor=default_actor(actor),
            to_version=to_version,
            stage=stage,
            trigger_metric=trigger_metric,
            lock_timeout=lock_timeout,
            git_commit=git_commit,
            dry_run=dry_run,
            approver=approver,
            demote=demote,
        )


@checked
def drill(project: Project, name: str, *, actor: str | None = None) -> DrillResult:
    """Rehearse a rollback of `name` (seed 001, seed 003: "rollback procedure tested"): its
    current versions promoted and rolled back in a scratch copy of the project, nothing live
    changed, each step timed and checked; the drill is recorded (`history`) whether it passed
    or not. `DrillRefused` when there is nothing to roll back to."""
    from skillstage.lifecycle.drill import run_drill
    from skillstage.store import Store

    with Store.open(project.database_url) as store:
        return run_drill(project, store, name, actor=default_actor(actor))


@checked
def rollback_leaves_stage(
    project: Project,
    *,
    stage: str | None,
    to_stage: str | None,
    to_version: str | None = None,
) -> tuple[str, str] | None:
    """(stage, the stage before it) when a rollback in `stage` (default: the last) to `to_stage`
    takes the skill out of its stage; None when it stays there (no `to_stage`, or `stage`
    itself). Any other `to_stage` is a `UsageError`: a rollback goes back at most one stage; so
    is a `to_version` with a rollback that leaves the stage."""
    leaves = _rollback_leaves_stage(project, stage, to_stage)
    if leaves is not None and to_version is not None:
        raise UsageError(
            f"a rollback to {to_stage} moves the skill's live version back to {to_stage}: there "
            f"is no version to choose (--to-version {to_version})",
            hint=f"drop --to-version, or roll back within its stage to restore {to_version}",
        )
    return leaves


def _rollback_leaves_stage(
    project: Project, stage: str | None, to_stage: str | None
) -> tuple[str, str] | None:
    if to_stage is None:
        return None
    order = list(project.config.stages)
    _known_stage(project, to_stage, "--to")
    where = stage or order[-1]
    if where not in order:
        return None  # the rollback says so, with the stages
    here, there = order.index(where), order.index(to_stage)
    if there == here:
        return None
    if there == here - 1:
        return where, to_stage
    back = f"to {order[here - 1]} (the stage before it), or " if here > 0 else ""
    raise UsageError(
        f"cannot roll back from {where} to {to_stage}: "
        + (
            f"{to_stage} comes after {where}"
            if there > here
            else f"{to_stage} is more than one stage back"
        ),
        hint=f"a rollback from {where} goes {back}stays in {where} and restores its previous "
        f"version; stages, in order: {' → '.join(order)}",
    )


@checked
def history(project: Project, name: str | None = None, *, limit: int = 50) -> list[Event]:
    """Promotions, rollbacks, forced gates, registrations: newest first."""
    from skillstage.store import Store

    with Store.open(project.database_url) as store:
        events = store.events(name, limit)
        if not events and name is not None:
            with store.reading() as tx:
                if tx.skill_id(name) is None:
                    raise UsageError(
                        f"no skill named {name!r} in the store",
                        hint="`skillstage list` registers the skills on disk and shows them",
                    )
        return events


@checked
def history_entries(
    project: Project, name: str | None = None, *, limit: int = 50
) -> list[dict[str, Any]]:
    """`history` as JSON: every recorded event, newest first, a forced promotion's `force`
    record too (the two name each other), a rollback's version change, and the timeline of each
    rollback and rollout abort."""
    from skillstage.lifecycle import events as reading

    found = history(project, name, limit=limit)
    promotion_of = reading.promotion_of(found)
    force_of = {promotion: force for force, promotion in promotion_of.items()}
    steps = timelines(project, [e.id for e in found if e.kind in reading.WITH_TIMELINE])
    return [reading.as_json(e, promotion_of, force_of, steps.get(e.id)) for e in found]


@checked
def timelines(project: Project, event_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The timeline of each rollback or abort among `event_ids` (seed 002 §3.2: the switch, the
    alert sent, the failed version archived, the re-index, the report), each step with its time
    and its delay after the event."""
    from skillstage.store import Store
    from skillstage.store.controls import steps

    with Store.open(project.database_url) as store, store.reading() as tx:
        return {
            event_id: [step.to_dict() for step in found]
            for event_id, found in steps(tx, event_ids).items()
        }


# -- execution metrics ---------------------------------------------------------------------------


@checked
def record_execution(project: Project, skill: str, **fields: Any) -> ExecutionRecord:
    """Append one execution record to the project's metrics inbox (seed 002 §5.2), dated no
    later than now plus the project's `metrics.max_clock_skew_minutes` (or `max_clock_skew`)."""
    from skillstage.metrics.record import record_execution as append

    fields.setdefault("max_clock_skew", project.config.metrics.max_clock_skew)
    return append(project.metrics_inbox, skill=skill, **fields)


def _inbox(project: Project, inbox: Path | None) -> Path:
    """The inbox to read: `inbox` (given by the user: it must be a directory) or the project's."""
    if inbox is not None and not inbox.is_dir():
        raise UsageError(f"{inbox} is not a directory", hint="pass the inbox directory to --path")
    return inbox or project.metrics_inbox


@checked
def ingest_metrics(
    project: Project,
    *,
    inbox: Path | None = None,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    store: Store | None = None,
) -> IngestResult:
    """Ingest the metrics inbox into the store (seed 002 §5.4): idempotent and resumable."""
    from skillstage.metrics.ingest import ingest
    from skillstage.store import Store

    where = _inbox(project, inbox)
    size = batch_size or project.config.metrics.batch_size
    skew = project.config.metrics.max_clock_skew
    if store is not None:
        return ingest(store, where, batch_size=size, progress=progress, max_clock_skew=skew)
    with Store.open(project.database_url) as opened:
        return ingest(opened, where, batch_size=size, progress=progress, max_clock_skew=skew)


@checked
def metrics_lag(project: Project, *, inbox: Path | None = None) -> LagReport:
    """How far ingestion is behind: the age of the oldest record not yet ingested."""
    from skillstage.metrics.ingest import lag
    from skillstage.store import Store

    where = _inbox(project, inbox)
    with Store.open(project.database_url) as store:
        return lag(store, where, alert_hours=project.config.metrics.lag_alert_hours)


# -- readiness, comparisons, sign-off, evals (seed 002) ------------------------------------------


@checked
def readiness(
    project: Project, name: str, *, to_stage: str | None = None, from_stage: str | None = None
) -> Readiness:
    """Every gate of the skill's next transition (or the one into `to_stage`), with its actual
    value, its requirement and what is missing; nothing moves (seed 002 `status`)."""
    from skillstage.lifecycle import promote as promoter
    from skillstage.lifecycle.readiness import Readiness
    from skillstage.store import Store

    ref = name
    if from_stage is not None:
        if from_stage not in project.config.stages:
            raise UsageError(f"unknown stage {from_stage!r}")
        if Path(name).name != name or name in (".", ".."):
            # (`../staging/x` would name a skill of another stage)
            raise UsageError(
                f"{name!r} is not a skill name", hint="with --from, give the skill's name alone"
            )
        path = project.stage_path(from_stage, name)
        if not path.is_dir():
            raise UsageError(f"{name} is not in {from_stage} ({path})")
        ref = str(path)
    with Store.open(project.database_url) as store:
        result = promoter.promote(project, store, ref, to=to_stage, actor="status", dry_run=True)
    return Readiness(
        name=result.skill_name,
        version=result.version,
        digest=result.digest,
        from_stage=result.from_stage,
        to_stage=result.to_stage,
        gates=result.gates,
        error=None if result.gates else result.error,
    )


@checked
def skill_metrics(
    project: Project,
    name: str,
    *,
    timeframe: str = "7d",
    version: str | None = None,
    include_benchmark: bool = False,
) -> MetricsSummary:
    """Count, means, rates and execution-time percentiles of a skill's executions in use in the
    timeframe (`7d`, `24h`, `last_7_days`, `all`), optionally of one version, digest or stage;
    with `include_benchmark`, its benchmark runs (`skillstage eval`) too."""
    from skillstage.lifecycle.readiness import ingest_on_demand, resolve_side
    from skillstage.metrics.summary import parse_timeframe, summarise
    from skillstage.store import Store
    from skillstage.store import metrics as store_metrics

    window = parse_timeframe(timeframe)
    since = dt.datetime.now(dt.UTC) - window if window is not None else None
    with Store.open(project.database_url) as store:
        ingest_on_demand(project, store)
        with store.reading() as tx:
            skill_id = tx.skill_id(name)
            if skill_id is None:
                raise UsageError(f"no skill named {name!r} in the store")
            digest = until = None
            if version is not None:
                # A stage means its version's stay there: from when it came to when it left.
                side = resolve_side(project, tx, skill_id, name, version)
                digest, until = side.digest, side.until
                if side.since is not None:
                    since = max(since, side.since) if since else side.since
            rows = store_metrics.execution_rows(
                tx, skill_id, digest=digest, since=since, until=until, in_use=not include_benchmark
            )
    return summarise(rows)


@checked
def compare_versions(project: Project, name: str, ref_a: str, ref_b: str) -> VersionComparison:
    """Compare two versions (versions, digests or stages) of a skill metric by metric."""
    from skillstage.lifecycle import readiness as policy
    from skillstage.store import Store

    # Judged as the regression check judges: with the thresholds of the transition that has one.
    thresholds = next(
        (t.thresholds for t in project.config.transitions if t.thresholds.forbid_regression),
        Thresholds(),
    )
    with Store.open(project.database_url) as store:
        return policy.compare_versions(project, store, name, ref_a, ref_b, thresholds=thresholds)


@checked
def approve(
    project: Project,
    name: str,
    *,
    to_stage: str,
    ticket: str,
    decision: str,
    approver: str | None = None,
    checklist_file: Path | None = None,
    checklist: str | Mapping[str, Any] | None = None,
    notes: str | None = None,
) -> SignOffResult:
    """Record a human sign-off (seed 002 §4) of the skill's copy that would move into `to_stage`.
    The filled-in checklist is a file, or (from the server) its text or its parsed mapping."""
    from skillstage.lifecycle import signoff
    from skillstage.store import Store

    if checklist_file is not None:
        form = signoff.read_checklist(checklist_file)
    elif isinstance(checklist, str):
        form = signoff.parse_checklist(checklist, "the checklist sent")
    elif checklist is not None:
        form = signoff.filled_checklist(dict(checklist), {}, "the checklist sent")
    else:
        form = None
    with Store.open(project.database_url) as store:
        return signoff.approve(
            project,
            store,
            name,
            to_stage=to_stage,
            ticket=ticket,
            decision=decision,
            approver=default_actor(approver),
            checklist=form.answers if form else None,
            stated=form.stated if form else None,
            notes=notes,
        )


@checked
def signoff_template(
    project: Project,
    name: str,
    *,
    to_stage: str,
    approver: str | None = None,
    ticket: str | None = None,
) -> str:
    """Seed 002 §4.2's sign-off checklist, automated checks filled in from the store."""
    from skillstage.lifecycle import signoff
    from skillstage.store import Store

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    with Store.open(project.database_url) as store:
        return signoff.template(
            project,
            store,
            name,
            to_stage=to_stage,
            approver=default_actor(approver),
            ticket=ticket or f"APPROVAL_{stamp}_XXX",
        )


def _skill_copy(project: Project, name: str, version: str | None) -> SkillVersion:
    """The skill's copy in its earliest stage, or the copy (in a stage or the archive) of
    `version`."""
    from skillstage.lifecycle.archive import archive_path

    policy = project.config.validation
    copies = [
        read_skill(entry.path, policy)
        for stage in project.config.stages
        for entry in stage_directories(project, stage)
        if entry.name == name
    ]
    if version is None:
        if copies:
            return copies[0]
        raise UsageError(
            f"no skill named {name!r} in any stage", hint="`skillstage list` shows the skills"
        )
    for copy in copies:
        if copy.version == version:
            return copy
    from skillstage.store import Store

    with Store.open(project.database_url) as store:
        record = store.find_version(name, version)
    if record is not None:
        archived = archive_path(project, name, version, record.digest)
        if archived.is_dir():
            return read_skill(archived, policy)
    raise UsageError(f"{name} {version} is neither in a stage nor in the archive")


@dataclass
class EvalOutcome:
    """A benchmark run of one skill version, recorded (`skillstage eval`)."""

    name: str
    version: str
    digest: str
    run: EvalRun
    results_path: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "skill_name": self.name,
            "version": self.version,
            "digest": self.digest,
            "results_path": str(self.results_path),
            **self.run.to_dict(),
        }


@checked
def run_eval(project: Project, name: str, *, version: str | None = None) -> EvalOutcome:
    """Run every benchmark case of a skill version through its execute.sh, grade it, record each
    case as an execution, and keep the results (store and a JSON file)."""
    import json

    from skillstage.lifecycle.fs import write_atomically
    from skillstage.metrics.evals import prepare_evals
    from skillstage.metrics.record import append_records
    from skillstage.store import Store
    from skillstage.store import metrics as store_metrics

    skill = _skill_copy(project, name, version)
    # Everything checked before anything is registered or run: a fix the messages ask for
    # (chmod +x, evals.json) must not meet "already registered with another digest".
    benchmark = prepare_evals(skill.path, timeout=project.config.metrics.eval_timeout_seconds)
    with Store.open(project.database_url) as store:
        with store.reading() as tx:
            tx.check_registration(skill)  # content changed under a registered version: refused
        started = dt.datetime.now(dt.UTC)
        run = benchmark.run()
        _unchanged_by(skill, project, "the benchmark run")
        with store.atomic() as tx:
            # (its stay in its stage counts from its first benchmark run)
            registered = tx.register(skill, at=started)
        now = dt.datetime.now(dt.UTC)
        results = project.state_dir / "evals" / skill.name
        path = results / f"{skill.version}-{skill.short_digest}-{now:%Y%m%dT%H%M%S%fZ}.json"
        # The results file, then the run in the store, then its executions in the inbox: a full
        # disk stops it before anything is recorded, or leaves a stored run whose executions a
        # second run adds (with a run of its own), never executions of a run not on record.
        try:
            results.mkdir(parents=True, exist_ok=True)
            write_atomically(path, json.dumps(run.to_dict(), indent=2, default=str))
        except OSError as exc:
            raise SkillstageError(
                f"the benchmark ran, but its results could not be written: {exc.strerror or exc}"
                " (nothing was recorded)",
                path=path,
                hint="free some space, then run eval again",
            ) from None
        with store.atomic() as tx:
            store_metrics.add_eval_run(
                tx,
                registered.skill_id,
                version=skill.version,
                digest=skill.digest,
                summary=run.summary.to_dict(),
                cases=[case.to_dict() for case in run.cases],
                at=now,
            )
        try:
            append_records(project.metrics_inbox, _eval_records(skill, run, now))
        except OSError as exc:
            raise SkillstageError(
                "the benchmark run is recorded, but its executions could not be added to the "
                f"metrics inbox: {exc.strerror or exc}",
                path=project.metrics_inbox,
                hint="free some space, then run eval again (it records a run of its own)",
            ) from None
    return EvalOutcome(skill.name, skill.version, skill.digest, run, path)


def _unchanged_by(skill: SkillVersion, project: Project, what: str) -> None:
    """Refuse to record what ran if it changed the skill's files (a script writing a log beside
    itself): the results would be filed under content that is no longer there."""
    try:
        after = read_skill(skill.path, project.config.validation)
    except SkillReadError as exc:
        changed = f"it can no longer be read ({exc.message})"
    else:
        if after.digest == skill.digest:
            return
        before, now = {f.path for f in skill.files}, {f.path for f in after.files}
        added, removed = sorted(now - before), sorted(before - now)
        changed = "; ".join(
            part
            for part in (
                f"added {', '.join(added)}" if added else "",
                f"removed {', '.join(removed)}" if removed else "",
                "changed the content of its files" if not added and not removed else "",
            )
            if part
        )
    raise ConflictError(
        f"{what} changed {skill.name}'s files: {changed}; nothing was recorded",
        path=skill.path,
        hint="restore the files, and make execute.sh write elsewhere ($TMPDIR is its own "
        "scratch directory)",
        code="SKILL_CHANGED_BY_RUN",
    )


def _eval_records(skill: SkillVersion, run: EvalRun, now: dt.datetime) -> list[ExecutionRecord]:
    """Each benchmark case of `run` as an execution record (tagged as a benchmark run)."""
    from skillstage.metrics.record import ExecutionRecord, new_execution_id

    records = []
    for case in run.cases:
        fields = {k: v for k, v in case.to_record_fields().items() if v is not None}
        records.append(
            msgspec.convert(
                {
                    "execution_id": new_execution_id(),
                    "timestamp": now.isoformat(),
                    "skill": skill.name,
                    "version": skill.version,
                    "digest": skill.digest,
                    **fields,
                },
                ExecutionRecord,
                strict=False,
            )
        )
    return records


@dataclass
class ScoredLog:
    """A breadcrumb log scored against the skill's expected patterns, and recorded."""

    name: str
    version: str
    digest: str
    fidelity: float
    followed: list[str]
    missed: list[str]
    execution_id: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@checked
def score_log(project: Project, log: Path, name: str, *, version: str | None = None) -> ScoredLog:
    """Score a breadcrumb log (JSONL) against the skill's patterns.yaml and record the
    execution (seed 002's pattern fidelity scoring)."""
    from skillstage.metrics.patterns import load_patterns, read_breadcrumbs, score_execution
    from skillstage.metrics.record import record_execution as append

    skill = _skill_copy(project, name, version)
    patterns = load_patterns(skill.path)
    if not patterns:
        missing = not (skill.path / "patterns.yaml").exists()
        raise UsageError(
            f"{skill.name} has no patterns.yaml"
            if missing
            else f"{skill.name} declares no expected patterns",
            path=skill.path / "patterns.yaml",
            hint="list them in patterns.yaml beside SKILL.md (id, description, regex or keywords)",
        )
    breadcrumbs = read_breadcrumbs(log)
    if not breadcrumbs:
        # An empty log is a run that was not logged (or the wrong file), not a run that
        # followed no pattern: recording fidelity 0 would drag the version's numbers down.
        raise UsageError(
            "the breadcrumb log holds no events: nothing recorded",
            path=log,
            hint="pass the log the skill's run wrote (one JSON event a line)",
        )
    score = score_execution(breadcrumbs, patterns)
    from skillstage.store import Store

    # Scored by these patterns: this content's, which a registered version must be.
    with Store.open(project.database_url) as store, store.atomic() as tx:
        tx.register(skill, at=dt.datetime.now(dt.UTC))
    record = append(
        project.metrics_inbox,
        skill=skill.name,
        version=skill.version,
        digest=skill.digest,
        pattern_fidelity=score.fidelity,
        patterns_followed=score.followed,
        patterns_missed=score.missed,
    )
    return ScoredLog(
        skill.name,
        skill.version,
        skill.digest,
        score.fidelity,
        score.followed,
        score.missed,
        record.execution_id,
    )


@checked
def demote_check(project: Project, *, apply: bool = False, actor: str | None = None) -> DemoteCheck:
    """Seed 002 §3.1: staged versions that broke a demotion rule; `apply` demotes them."""
    from skillstage.lifecycle import demote
    from skillstage.store import Store

    with Store.open(project.database_url) as store:
        found = demote.check(project, store)
        if apply:
            demote.apply(project, store, found, actor=default_actor(actor))
    return found


# -- rollouts and routing -------------------------------------------------------------------------


@checked
def rollout_start(
    project: Project,
    name: str,
    *,
    candidate: str | None = None,
    stage: str | None = None,
    steps: Sequence[int] | None = None,
    step_min_duration: str | None = None,
    step_min_executions: int | None = None,
    segments: Sequence[str] = (),
    group_id: str | None = None,
    on_failure: str | None = None,
    actor: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
) -> RolloutOutcome:
    """Serve the candidate waiting in the stage before `stage` (default: the last stage) to the
    first step's share of its traffic, beside the version live there (seed 002 §3.3). The gates
    of the promotion it ends with run first; `segments` ("tier=internal") limit it to requests
    whose context matches (a canary)."""
    from skillstage.rollout import engine, plan
    from skillstage.store import Store

    if step_min_executions is not None and step_min_executions < 1:
        raise UsageError("--step-min-executions must be at least 1")
    with Store.open(project.database_url) as store:
        return engine.start(
            project,
            store,
            name,
            actor=default_actor(actor),
            candidate=candidate,
            stage=stage,
            steps=steps,
            step_min_duration_s=plan.parse_duration(step_min_duration)
            if step_min_duration is not None
            else None,
            step_min_executions=step_min_executions,
            segments=plan.parse_segments(segments),
            group_id=group_id,
            on_failure=on_failure,
            dry_run=dry_run,
            force=force,
            reason=reason,
        )


@checked
def rollout_status(
    project: Project, name: str | None = None, *, stage: str | None = None
) -> list[RolloutStatus]:
    """Each open rollout (of `name`): its step, weight, per-arm figures and the analysis."""
    from skillstage.rollout import engine
    from skillstage.store import Store

    with Store.open(project.database_url) as store:
        return engine.status(project, store, name, stage=stage)


@checked
def rollout_change(
    project: Project,
    action: str,
    name: str,
    *,
    actor: str | None = None,
    reason: str | None = None,
    force: bool = False,
    stage: str | None = None,
) -> RolloutOutcome:
    """Change a rollout by hand: `advance` (after the analysis, or `force` with a reason),
    `pause`, `resume`, `abort` (needs a reason) or `retry` (an aborted one, from its first
    step)."""
    from skillstage.rollout import steering
    from skillstage.store import Store

    who = default_actor(actor)
    with Store.open(project.database_url) as store:
        if action == "advance":
            return steering.advance(
                project, store, name, actor=who, force=force, reason=reason, stage=stage
            )
        if action == "pause":
            return steering.pause(project, store, name, actor=who, reason=reason, stage=stage)
        if action == "resume":
            return steering.resume(project, store, name, actor=who, stage=stage)
        if action == "abort":
            return steering.abort(project, store, name, actor=who, reason=reason or "", stage=stage)
        if action == "retry":
            return steering.retry(project, store, name, actor=who, stage=stage)
    raise UsageError(f"unknown rollout action {action!r}")


@checked
def rollout_tick(project: Project, *, actor: str | None = None) -> list[RolloutOutcome]:
    """Evaluate every active rollout once (for cron or the watcher): advance, abort or wait."""
    from skillstage.rollout import steering
    from skillstage.store import Store

    with Store.open(project.database_url) as store:
        return steering.tick(project, store, actor=default_actor(actor or "skillstage-rollout"))


@checked
def resolve(
    project: Project,
    name: str,
    *,
    subject: str | None = None,
    context: dict[str, Any] | None = None,
    stage: str | None = None,
) -> Resolution:
    """Which copy of `name` serves a request from `subject` (with `context`) in `stage`: the
    routing function every loader uses, over the store as it is now."""
    from skillstage.runtime.routing import serving_stage

    stage = serving_stage(project, stage)
    return _routing_table(project).resolve(name, stage, subject, context)


def _routing_table(project: Project) -> RoutingTable:
    from skillstage.runtime.routing import build_table
    from skillstage.store import Store

    with Store.open(project.database_url) as store, store.reading() as tx:
        return build_table(project, tx, built_at=_now())


@checked
def sync(
    project: Project,
    into: Path,
    *,
    subject: str,
    context: dict[str, Any] | None = None,
    stage: str | None = None,
) -> SyncResult:
    """Make `into/<name>` hold, for every skill serving in `stage`, the copy `subject` resolves to
    (read-only, from the archive), each swapped in atomically; only changed skills are touched,
    and skills that stopped serving are removed. For hosts that read skill directories."""
    from skillstage.runtime.registry_file import refresh_registry
    from skillstage.runtime.routing import build_table, serving_stage
    from skillstage.runtime.sync import sync_directory
    from skillstage.store import Store

    stage = serving_stage(project, stage)
    with Store.open(project.database_url) as store:
        with store.reading() as tx:
            table = build_table(project, tx, built_at=_now())
        result = sync_directory(project, table, into, subject=subject, context=context, stage=stage)
        # The registry file, if lost or stale; one that cannot be written is said by the change
        # that writes it.
        with contextlib.suppress(OSError):
            refresh_registry(project, store)
    return result


def sync_watch(
    project: Project,
    into: Path,
    *,
    subject: str,
    stop: threading.Event,
    on_change: Callable[[SyncResult], None],
    on_error: Callable[[Exception], None] | None = None,
    context: dict[str, Any] | None = None,
    stage: str | None = None,
) -> None:
    """`sync`, then again whenever what serves changes, until `stop` is set (`sync --watch`)."""
    from skillstage.runtime.sync import watch

    watch(
        project,
        into,
        subject=subject,
        stop=stop,
        on_change=on_change,
        on_error=on_error,
        context=context,
        stage=stage,
    )


@checked
def check_runtime(
    project: Project, *, concurrency: int = 5, skill: str | None = None
) -> RuntimeCheck:
    """Load every production skill (or `skill`) through the loader from `concurrency` threads
    and processes at once: load times (p50/p95/p99/max), peak memory, the cache's second-pass
    hit rate, missing, corrupted or modified skill files and dependency cycles, each judged
    against `[runtime_check]`. `.verdict` is "pass", "warn" or "fail"."""
    from skillstage.runtime.check import check_runtime as check

    return check(project, concurrency=concurrency, skill=skill)


@checked
def go_no_go(
    project: Project,
    name: str | None = None,
    *,
    concurrency: int = 5,
    drill_days: float = 7,
) -> GoNoGo:
    """Seed 003's deployment decision, GO / NO-GO / DELAY, for the production candidates (or
    `name`'s): the runtime checks, monitoring, and per skill its rollback drill, open failures,
    test gates, documentation and sign-off, each with its evidence."""
    from skillstage.lifecycle.drill_record import latest_drill
    from skillstage.lifecycle.fact_gates import monitoring_configured
    from skillstage.lifecycle.go_no_go import decide
    from skillstage.store import Store
    from skillstage.watch.report import latest_failure, report_paths

    def runtime() -> tuple[str, dict[str, Any]]:
        check = check_runtime(project, concurrency=concurrency)
        return check.verdict, check.to_dict()

    with Store.open(project.database_url) as store:

        def failure(skill: str) -> tuple[dict[str, Any] | None, Path | None]:
            document = latest_failure(project, store, skill)
            if document is None:
                return None, None
            return document, report_paths(project, skill, int(document["event_id"]))[0]

        return decide(
            project,
            store,
            name=name,
            runtime=runtime,
            monitoring=monitoring_configured(project),
            latest_drill=latest_drill,
            latest_failure=failure,
            drill_days=drill_days,
        )


# -- the watcher, holds and the kill switch ----------------------------------------------------


@checked
def watch_pass(project: Project, *, dry_run: bool = False, actor: str | None = None) -> WatchPass:
    """One watch pass: evaluate every trigger, act (roll back, abort, demote), alert, report."""
    from skillstage.store import Store
    from skillstage.watch.watcher import Watcher

    with Store.open(project.database_url) as store:
        return Watcher(project, store, dry_run=dry_run, actor=actor).run_pass()


def watch_loop(
    project: Project,
    *,
    interval: float,
    dry_run: bool = False,
    stop: threading.Event | None = None,
    on_pass: Callable[[WatchPass], None] | None = None,
) -> int:
    """Watch passes every `interval` seconds until `stop` is set; the number run."""
    from skillstage.store import Store
    from skillstage.watch.watcher import watch

    with Store.open(project.database_url) as store:
        return watch(project, store, interval=interval, dry_run=dry_run, stop=stop, on_pass=on_pass)


@checked
def switch(
    project: Project,
    name: str,
    *,
    kind: str,
    on: bool,
    stage: str | None = None,
    actor: str | None = None,
    reason: str = "",
) -> SwitchResult:
    """Set (`on`) or clear a hold (`kind="hold"`) or the kill switch (`kind="disabled"`)."""
    from skillstage.store import Store
    from skillstage.watch.switches import clear_switch, set_switch

    change = set_switch if on else clear_switch
    with Store.open(project.database_url) as store:
        return change(
            project, store, kind, name, stage=stage, actor=default_actor(actor), reason=reason
        )


@checked
def switches(
    project: Project, *, kind: str | None = None, everything: bool = False
) -> list[Control]:
    """The holds and kill switches set now (every one ever, with `everything`)."""
    from skillstage.store import Store
    from skillstage.watch.switches import listed

    with Store.open(project.database_url) as store:
        return listed(store, kind, everything=everything)


# -- reports the CLI and the server share ------------------------------------------------------


@checked
def sla_check(
    project: Project, *, listing: SkillListing | None = None, now: dt.datetime | None = None
) -> SlaReport:
    """Every skill version that waited in its stage longer than the stage's SLA (exempted ones
    too, marked). A caller that listed the skills at `now` passes its `listing`: the skills are
    not listed a second time."""
    from skillstage.lifecycle import sla

    return sla.check(project, now=now, listing=listing)


@checked
def key_metrics(project: Project) -> KeyMetrics:
    """The key promotion metrics, each with its target, alert threshold and status."""
    from skillstage.lifecycle import stats

    return stats.collect(project)


@checked
def promotion_issue(
    project: Project,
    name: str,
    *,
    output: Path | None = None,
    gh: bool = False,
    repo: str | None = None,
) -> PromotionIssue:
    """Seed 001's promotion issue for `name`'s latest promotion attempt, filled from its report;
    written to `output` if given. With `gh`: written (to `output`, else under the state
    directory) and filed with `gh issue create` through the outbox (`repo`: OWNER/NAME); raises
    `GhMissingError`, naming the file, when gh is not on PATH."""
    from skillstage.lifecycle import promotion_issue as issues
    from skillstage.store import Store

    if repo is not None and not issues.REPO_FORM.match(repo):
        raise UsageError(f"--repo {repo!r} is not OWNER/NAME", hint="e.g. --repo acme/skills")
    if repo is not None and not gh:
        raise UsageError("--repo is where --gh files the issue", hint="add --gh, or drop --repo")
    with Store.open(project.database_url) as store:
        issue = issues.promotion_issue(project, store, name)
        if gh:
            path = output or issues.issue_file(project, issue)
            return issues.file_issue(project, store, issue, path, repo=repo)
    return issues.write_issue(issue, output) if output is not None else issue


@checked
def outbox(
    project: Project, *, status: str | None = None, retry: bool = False
) -> tuple[OutboxReport, list[Delivery] | None]:
    """The outbox's items (in `status`); with `retry`, every pending and failed one delivered
    first, and the deliveries."""
    from skillstage.integrations.outbox import outbox_report
    from skillstage.integrations.outbox import retry as deliver
    from skillstage.store import Store

    with Store.open(project.database_url) as store:
        deliveries = deliver(project, store) if retry else None
        return outbox_report(project, store, status=status), deliveries


@checked
def registry(project: Project) -> dict[str, Any]:
    """The registry as the registry file holds it, from the store: what serves in each stage,
    with the store's routing generation."""
    from skillstage.runtime.registry_file import registry_document
    from skillstage.store import Store

    with Store.open(project.database_url) as store:
        return registry_document(project, store)


@checked
def routing_generation(project: Project) -> int:
    """The store's routing generation: it moves whenever what serves changes."""
    from skillstage.store import Store
    from skillstage.store.rollouts import generation

    with Store.open(project.database_url) as store, store.reading() as tx:
        return generation(tx)


@checked
def post_executions(project: Project, body: bytes, *, source: str) -> PostedResult:
    """Store the execution records of one request: one JSON object, a JSON array or NDJSON;
    an execution id already stored adds nothing, a record that cannot be kept is quarantined
    under `source`."""
    from skillstage.metrics.posted import split_records, store_posted
    from skillstage.store import Store

    records = split_records(body)
    with Store.open(project.database_url) as store:
        return store_posted(
            store, records, source=source, max_clock_skew=project.config.metrics.max_clock_skew
        )


# -- format upgrade ------------------------------------------------------------------------------

if TYPE_CHECKING:
    from skillstage.skill.upgrade import FormatUpgrade


@dataclass
class FormatUpgradeReport:
    """The result of `upgrade`: one entry per skill directory."""

    skills: list[FormatUpgrade]
    write: bool = False

    @property
    def ok(self) -> bool:
        return all(skill.ok for skill in self.skills)

    def count(self, status: str) -> int:
        return sum(1 for skill in self.skills if skill.status == status)

    def to_dict(self) -> dict[str, Any]:
        statuses = ("upgraded", "would-upgrade", "already-v2", "refused")
        return {
            "ok": self.ok,
            "write": self.write,
            "summary": {status: self.count(status) for status in statuses},
            "skills": [skill.to_dict() for skill in self.skills],
        }


@checked
def upgrade(
    paths: Sequence[Path],
    *,
    project: Project | None = None,
    write: bool = False,
    spec_only: bool = False,
) -> FormatUpgradeReport:
    """Upgrade old-format (v1) skills to today's format: each path is a skill directory, its skill
    file, or a tree holding skills (searched for SKILL.md and skill.md; a prompt.md only where its
    directory is named). Each result is checked by the rules `validate` runs (with `spec_only`,
    only the spec's) and refused when it would not pass; with `write` it replaces the old file.
    """
    from skillstage.skill.upgrade import SKILL_FILE_NAMES, skill_file, upgrade_directory

    if not paths:
        raise UsageError("nothing to upgrade", hint="pass PATH... (a skill directory or a tree)")
    directories: list[Path] = []
    for path in paths:
        if path.name in SKILL_FILE_NAMES and path.is_file():
            path = path.parent
        if not path.exists():
            raise UsageError(f"{path} does not exist", hint="pass a skill directory or a tree")
        if not path.is_dir():
            raise UsageError(f"{path} is not a directory", hint="pass the skill's directory")
        found = [path] if skill_file(path) else [Path(d) for d in iter_skill_dirs(path)]
        directories.extend(found or [path])
    policy = project.config.validation if project is not None else ValidationPolicy()
    expected = {p.resolve(): name for p, name in _expected_names(project).items()}
    resolved = [d.resolve() for d in directories]
    known = None if spec_only else _project_dependency_graph(project, exclude=set(resolved))
    results = []
    seen: set[Path] = set()
    for directory, real in zip(directories, resolved, strict=True):
        if real in seen:
            continue
        seen.add(real)
        results.append(
            upgrade_directory(
                directory,
                policy,
                expected_name=expected.get(real) or real.name,
                spec_only=spec_only,
                write=write,
                known_skills=known,
                shown_as=os.path.relpath(directory),
            )
        )
    return FormatUpgradeReport(results, write=write)


# -- backups -------------------------------------------------------------------------------------

if TYPE_CHECKING:
    from skillstage.lifecycle.backup import BackupInfo, Verification
    from skillstage.lifecycle.backup_restore import RestoreResult

BackupProgress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class BackupCreated:
    """A new backup, and the older ones retention deleted."""

    backup: BackupInfo
    removed: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {**self.backup.to_dict(), "removed_by_retention": self.removed}


@checked
def backup_create(
    project: Project,
    *,
    name: str | None = None,
    actor: str | None = None,
    progress: BackupProgress | None = None,
) -> BackupCreated:
    """Back up every stage's skill tree, the archive and the store into one checksummed file
    under `<state_dir>/backups/`; then keep the newest `[backups] keep`."""
    from skillstage.lifecycle.backup_create import create_backup

    backup, removed = create_backup(
        project,
        name=name,
        who=default_actor(actor),
        keep=project.config.backups.keep,
        progress=progress,
    )
    return BackupCreated(backup, removed)


@checked
def backup_list(project: Project) -> list[BackupInfo]:
    """The project's backups, newest first."""
    from skillstage.lifecycle.backup import list_backups

    return list_backups(project)


@checked
def backup_verify(project: Project, backup_id: str) -> Verification:
    """Check a backup's file checksum and every member's sha256 and size."""
    from skillstage.lifecycle.backup import find_backup, verify_backup

    return verify_backup(find_backup(project, backup_id))


@checked
def backup_restore(
    project: Project,
    backup_id: str,
    *,
    skill: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    actor: str | None = None,
    progress: BackupProgress | None = None,
) -> RestoreResult:
    """Restore a backup: the whole project (skill trees, archive, store), or one skill's
    directories and archive entries. Refuses a damaged backup, and a store newer than the
    backup without `force`; takes a backup of the current state first."""
    from skillstage.lifecycle.backup import apply_retention, find_backup
    from skillstage.lifecycle.backup_restore import restore_backup

    result = restore_backup(
        project,
        find_backup(project, backup_id),
        who=default_actor(actor),
        skill=skill,
        dry_run=dry_run,
        force=force,
        progress=progress,
    )
    if not dry_run:
        # (the backup just restored from stays, however old: it is the known good state)
        apply_retention(project, project.config.backups.keep, protect=frozenset([result.backup_id]))
    return result


@checked
def backup_resume(project: Project, *, progress: BackupProgress | None = None) -> RestoreResult:
    """Finish a restore that stopped part-way (killed, the disk full): from its journal and
    its verified extraction, what is not yet as in the backup is put back, and its events
    recorded once."""
    from skillstage.lifecycle.backup import apply_retention
    from skillstage.lifecycle.backup_restore import resume_restore

    result = resume_restore(project, progress)
    apply_retention(project, project.config.backups.keep, protect=frozenset([result.backup_id]))
    return result
