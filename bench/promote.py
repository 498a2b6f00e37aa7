"""How fast a promotion is: the engine in-process, and the whole command next to `gto assign`.

In-process: one project on SQLite (no git, no hooks), one open `Store` reused, a 20-file skill;
each round stages the skill, then times `promote(…, overwrite=True)` (1.1.0 over 1.0.0) and
`rollback(…, to_version="1.0.0")`, so every round makes a real change both ways. Once with the
gates a transition needs for the swap alone (["conflicts"]), once with the default gates (their
`tests` gate runs test.sh in a subprocess).

Whole process: `skillstage promote NAME --yes --overwrite` as a user runs it (a new Python
process each time, default gates) against GTO's `gto assign NAME --version V --stage prod --force`
in a git repository where the two versions are registered (GTO from PyPI, installed into a venv of
its own in the cache directory, never into this one). Both alternate between two versions, so each
call changes what is live. Rounds are interleaved (in-process too, between the two gate
settings): a slow spell on a shared machine hits every contender alike.

Run: `.venv/bin/python bench/promote.py [--rounds N] [--process-rounds N] [--json]`.
Targets are reported, not asserted: the exit status is 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.lifecycle.promote import promote, rollback
from skillstage.process import Completed, child_environment, run
from skillstage.store import Store

SKILL = "release-notes"
VERSIONS = ("1.0.0", "1.1.0")
SKILL_FILES = 20
TARGET_PAIR_MS = 20.0  # promote + rollback, in-process, conflicts gate only: median
TARGET_SPEEDUP = 4.0  # whole-process skillstage promote vs gto assign: medians
WARMUP_ROUNDS = 5
COMMAND_TIMEOUT = 120.0
GTO_INSTALL_TIMEOUT = 600.0
CONFLICTS_ONLY = '["conflicts"]'
DEFAULT_GATES = (
    'gates = ["structure", "schema", "spec", "tests", "conflicts", "dependencies", "security"]'
)


# -- the skill ---------------------------------------------------------------------------------


def write_skill(directory: Path, version: str) -> None:
    """A valid 20-file skill (SKILL.md, execute.sh, test.sh, 17 resources of 0.5-4 KB); the
    version changes SKILL.md and one reference, so the two versions have different digests."""
    rng = random.Random(7)
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "references").mkdir(parents=True)
    (directory / "scripts").mkdir()
    (directory / "assets").mkdir()
    (directory / "SKILL.md").write_text(
        f"---\nname: {SKILL}\nversion: {version}\ndescription: Drafts release notes from merged "
        "pull requests. Use it when preparing a release.\nauthor: bench\n---\n# Release notes\n\n"
        "Run `./execute.sh` with the release tag; see references/ for the style guide.\n"
    )
    for name, text in (
        ("execute.sh", '#!/bin/bash\necho notes "$@"\n'),
        ("test.sh", "#!/bin/bash\n./execute.sh v1 >/dev/null\n"),
    ):
        (directory / name).write_text(text)
        (directory / name).chmod(0o755)
    words = ("release", "note", "merge", "pull", "request", "change", "fix", "feature", "breaking")
    for index in range(SKILL_FILES - 3):
        folder = ("references", "scripts", "assets")[index % 3]
        size = rng.randint(512, 4096)
        text = " ".join(rng.choice(words) for _ in range(size // 6))
        if index == 0:
            text = f"{version}\n{text}"
        (directory / folder / f"part-{index:02d}.md").write_text(text + "\n")
    assert sum(1 for p in directory.rglob("*") if p.is_file()) == SKILL_FILES


def new_project(root: Path, *, gates: str | None) -> Project:
    """A fresh SQLite project at `root`; `gates` replaces the default gates of every transition."""
    api.init(root)
    config = root / "skillstage.toml"
    if gates is not None:
        config.write_text(config.read_text().replace(DEFAULT_GATES, f"gates = {gates}"))
    return load_config_file(config)


def stage(project: Project, version: str, templates: Path) -> None:
    target = project.stage_path("staged", SKILL)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(templates / version, target, copy_function=shutil.copy)


# -- figures -----------------------------------------------------------------------------------


@dataclass
class Figures:
    """Seconds per call of one operation."""

    samples: list[float]

    @property
    def median_ms(self) -> float:
        return 1000 * statistics.median(self.samples)

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.samples)
        return 1000 * ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": len(self.samples),
            "median_ms": round(self.median_ms, 2),
            "p95_ms": round(self.p95_ms, 2),
            "min_ms": round(1000 * min(self.samples), 2),
        }


def filesystem_probe(root: Path, templates: Path, repeats: int = 20) -> dict[str, Any]:
    """What the disk under the bench costs: copying and deleting one copy of the skill (a
    promotion copies it twice and deletes two copies; some filesystems, e.g. ext4 mounted with
    `discard`, make every rmdir take milliseconds)."""
    copies: list[float] = []
    deletes: list[float] = []
    for index in range(repeats):
        target = root / f"probe-{index}"
        seconds, _ = _timed(partial(shutil.copytree, templates / VERSIONS[0], target))
        copies.append(seconds)
        seconds, _ = _timed(partial(shutil.rmtree, target))
        deletes.append(seconds)
    return {"copy": Figures(copies).to_dict(), "delete": Figures(deletes).to_dict()}


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


# -- in-process --------------------------------------------------------------------------------


def in_process(root: Path, templates: Path, rounds: Mapping[str, int]) -> dict[str, Any]:
    """Promote (overwrite) + rollback rounds through the engine, one project and one open store
    per gate setting (`rounds` maps the gates to use, or "default", to a number of rounds);
    the settings take turns round by round."""
    with ExitStack() as stack:
        runs: dict[str, tuple[Project, Store]] = {}
        for gates in rounds:
            project = new_project(
                root / f"in-process-{len(runs)}", gates=None if gates == "default" else gates
            )
            store = stack.enter_context(Store.open(project.database_url))
            stage(project, VERSIONS[0], templates)
            first = promote(project, store, SKILL, actor="bench", overwrite=True)
            if not first.success:
                raise SystemExit(f"bench set-up: promotion failed: {first.error}")
            runs[gates] = (project, store)
        samples: dict[str, tuple[list[float], list[float]]] = {g: ([], []) for g in rounds}
        for index in range(WARMUP_ROUNDS + max(rounds.values())):
            for gates, (project, store) in runs.items():
                if index >= WARMUP_ROUNDS + rounds[gates]:
                    continue
                forward, back = _round_trip(project, store, templates)
                if index >= WARMUP_ROUNDS:
                    samples[gates][0].append(forward)
                    samples[gates][1].append(back)
        results = {}
        for gates, (promotes, rollbacks) in samples.items():
            pairs = [p + r for p, r in zip(promotes, rollbacks, strict=True)]
            results[gates] = {
                "gates": gates,
                "rounds": rounds[gates],
                "events_recorded": len(runs[gates][1].events(limit=1_000_000)),
                "promote": Figures(promotes).to_dict(),
                "rollback": Figures(rollbacks).to_dict(),
                "pair": Figures(pairs).to_dict(),
            }
    return results


def _round_trip(project: Project, store: Store, templates: Path) -> tuple[float, float]:
    """Stage 1.1.0 (not timed: the user's edit), promote it over 1.0.0, roll back to 1.0.0."""
    stage(project, VERSIONS[1], templates)
    forward, result = _timed(partial(promote, project, store, SKILL, actor="bench", overwrite=True))
    if not result.success:
        raise SystemExit(f"promotion failed: {result.error}")
    back, _ = _timed(
        partial(rollback, project, store, SKILL, reason="bench", actor="bench", to_version="1.0.0")
    )
    return forward, back


# -- whole process -----------------------------------------------------------------------------


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "skillstage"


def gto_executable(venv: Path, say: Callable[[str], None]) -> tuple[Path | None, str]:
    """GTO in a venv of its own (created and filled from PyPI on first use); or None and why."""
    gto = venv / "bin" / "gto"
    if not gto.exists():
        say(f"installing gto from PyPI into {venv} (once) …")
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "gto"],
        ]
        # pip's own settings (index, certificates) and proxies pass through to the install.
        passed = {
            key: value
            for key, value in os.environ.items()
            if key.startswith("PIP_") or key.lower() in ("http_proxy", "https_proxy", "no_proxy")
        }
        for step in steps:
            done = run(
                step, cwd=Path.cwd(), timeout=GTO_INSTALL_TIMEOUT, env={**_environment(), **passed}
            )
            if not done.ok:
                shutil.rmtree(venv, ignore_errors=True)
                return None, f"`{' '.join(step)}` failed: {done.output_tail(1) or 'timed out'}"
    done = run([str(gto), "--version"], cwd=Path.cwd(), timeout=COMMAND_TIMEOUT)
    if not done.ok:
        return None, f"`gto --version` failed: {done.output_tail(3)}"
    return gto, done.stdout.strip().split()[-1]


def _environment() -> dict[str, str]:
    """What a user's shell passes on, minus any SKILLSTAGE_* variable (the bench's own store)."""
    return child_environment(
        {
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@example.com",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@example.com",
            "NO_COLOR": "1",
        }
    )


def _must(done: Completed) -> Completed:
    if not done.ok:
        raise SystemExit(
            f"`{' '.join(done.args)}` failed ({done.returncode}):\n{done.output_tail(10)}"
        )
    return done


def gto_repository(root: Path, templates: Path, gto: Path) -> Path:
    """A git repository holding the skill, with both versions registered as GTO versions."""
    env = _environment()
    repo = root / "gto-repo"
    repo.mkdir()
    _must(run(["git", "init", "--quiet"], cwd=repo, timeout=COMMAND_TIMEOUT, env=env))
    for version in VERSIONS:
        target = repo / "skills" / SKILL
        shutil.rmtree(target, ignore_errors=True)
        # Fresh modification times: with copied ones (and inode numbers that ext4 reuses at once)
        # git can take the new version's files for unchanged ones.
        shutil.copytree(templates / version, target, copy_function=shutil.copy)
        _must(run(["git", "add", "-A"], cwd=repo, timeout=COMMAND_TIMEOUT, env=env))
        _must(
            run(
                ["git", "commit", "--quiet", "-m", f"{SKILL} {version}"],
                cwd=repo,
                timeout=COMMAND_TIMEOUT,
                env=env,
            )
        )
        register = [str(gto), "register", SKILL, "--version", f"v{version}"]
        _must(run(register, cwd=repo, timeout=COMMAND_TIMEOUT, env=env))
    return repo


def whole_process(root: Path, templates: Path, rounds: int, gto: Path | None) -> dict[str, Any]:
    """Interleaved rounds of `skillstage promote` (and `skillstage --version`, the start-up
    floor) and `gto assign`, each call a new process, alternating between the two versions."""
    project = new_project(root / "project", gates=None)
    env = _environment()
    python = [sys.executable, "-m", "skillstage"]
    _compile_bytecode()
    repo = gto_repository(root, templates, gto) if gto is not None else None
    names = ["skillstage_promote", "skillstage_startup", *(["gto_assign"] if repo else [])]
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for index in range(1 + rounds):  # round 0 warms the page cache and .pyc files
        version = VERSIONS[index % 2]
        stage(project, version, templates)  # not timed: the user's edit
        calls: dict[str, list[str]] = {
            "skillstage_promote": [*python, "promote", SKILL, "--yes", "--overwrite"],
            "skillstage_startup": [*python, "--version"],
        }
        if repo is not None:
            calls["gto_assign"] = [
                str(gto),
                "assign",
                SKILL,
                "--version",
                f"v{version}",
                "--stage",
                "prod",
                "--force",  # GTO refuses to re-assign a version already in the stage without it
            ]
        order = list(calls)
        if index % 2:
            order.reverse()  # neither contender always runs right after the other
        for name in order:
            cwd = repo if name == "gto_assign" and repo is not None else project.root
            before = _children_cpu()
            seconds, done = _timed(
                partial(run, calls[name], cwd=cwd, timeout=COMMAND_TIMEOUT, env=env)
            )
            _must(done)
            if index > 0:
                wall[name].append(seconds)
                cpu[name].append(_children_cpu() - before)
    result: dict[str, Any] = {"rounds": rounds}
    for name in names:
        result[name] = {**Figures(wall[name]).to_dict(), "cpu": Figures(cpu[name]).to_dict()}
    if repo is not None:
        result["ratio_gto_over_skillstage"] = round(
            statistics.median(wall["gto_assign"]) / statistics.median(wall["skillstage_promote"]),
            2,
        )
        result["cpu_ratio_gto_over_skillstage"] = round(
            statistics.median(cpu["gto_assign"]) / statistics.median(cpu["skillstage_promote"]),
            2,
        )
    return result


def _compile_bytecode() -> None:
    """Write skillstage's .pyc files, as installing a package does (GTO's were written when pip
    installed it). An editable install writes them on first import, unless the environment says
    PYTHONDONTWRITEBYTECODE (this machine's does): then every run would compile from source."""
    package = Path(api.__file__).parent
    _must(
        run(
            [sys.executable, "-m", "compileall", "-q", str(package)],
            cwd=package,
            timeout=COMMAND_TIMEOUT,
        )
    )


def _children_cpu() -> float:
    """User + system CPU seconds of every child waited for so far (GTO's git calls included):
    a figure that waiting for a busy CPU does not inflate, unlike the wall-clock time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=200, help="in-process rounds (200)")
    parser.add_argument(
        "--default-gates-rounds",
        type=int,
        default=100,
        help="in-process rounds with the default gates (100)",
    )
    parser.add_argument("--process-rounds", type=int, default=15, help="whole-process rounds (15)")
    parser.add_argument(
        "--gto-venv",
        type=Path,
        default=_cache_dir() / "bench-gto-venv",
        help="where GTO is installed (default: ~/.cache/skillstage/bench-gto-venv)",
    )
    parser.add_argument("--no-gto", action="store_true", help="skip the comparison with GTO")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the bench's projects go (default: $TMPDIR)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args(argv)
    if min(options.rounds, options.default_gates_rounds, options.process_rounds) < 1:
        parser.error("rounds must be at least 1")
    for key in [k for k in os.environ if k.startswith("SKILLSTAGE_")]:
        del os.environ[key]  # the bench's projects use their own SQLite stores
    say: Callable[[str], None] = (lambda _: None) if options.json else print
    results: dict[str, Any] = {
        "skill_files": SKILL_FILES,
        "cpus": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }

    with tempfile.TemporaryDirectory(
        prefix="skillstage-bench-promote-", dir=options.dir
    ) as scratch:
        root = Path(scratch)
        templates = root / "templates"
        for version in VERSIONS:
            write_skill(templates / version, version)
        results["filesystem"] = {"dir": str(root), **filesystem_probe(root, templates)}

        say(
            f"in-process: {options.rounds} rounds with the conflicts gate only, "
            f"{options.default_gates_rounds} with the default gates, interleaved …"
        )
        figures = in_process(
            root,
            templates,
            {CONFLICTS_ONLY: options.rounds, "default": options.default_gates_rounds},
        )
        results["in_process"] = {
            "conflicts_gate": figures[CONFLICTS_ONLY],
            "default_gates": figures["default"],
        }

        gto: Path | None = None
        if options.no_gto:
            results["gto"] = {"skipped": "--no-gto"}
        else:
            gto, detail = gto_executable(options.gto_venv, say)
            results["gto"] = {"version": detail} if gto else {"skipped": detail}
            if gto is None:
                say(f"comparison with gto skipped: {detail}")
        say(f"whole process: {options.process_rounds} interleaved rounds …")
        results["whole_process"] = whole_process(
            root / "process", templates, options.process_rounds, gto
        )

    results["load_average_at_end"] = round(os.getloadavg()[0], 2)
    pair = results["in_process"]["conflicts_gate"]["pair"]["median_ms"]
    ratio = results["whole_process"].get("ratio_gto_over_skillstage")
    results["targets"] = {
        "pair_median_ms": TARGET_PAIR_MS,
        "pair_met": pair <= TARGET_PAIR_MS,
        "speedup_vs_gto": TARGET_SPEEDUP,
        "speedup_met": None if ratio is None else ratio >= TARGET_SPEEDUP,
    }
    if options.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results))
    return 0


def render(results: dict[str, Any]) -> str:
    def row(label: str, figures: dict[str, Any]) -> str:
        cpu = f"{figures['cpu']['median_ms']:9.1f}" if "cpu" in figures else ""
        return (
            f"  {label:<34} {figures['median_ms']:9.1f} {figures['p95_ms']:9.1f} "
            f"{figures['min_ms']:9.1f} {cpu:>9}   n={figures['n']}"
        )

    lines = [f"\n{'':<36} {'median':>9} {'p95':>9} {'min':>9} {'CPU med':>9}   (ms)"]
    for key, title in (("conflicts_gate", '["conflicts"]'), ("default_gates", "default")):
        figures = results["in_process"][key]
        lines.append(f"in-process, {SKILL_FILES}-file skill, SQLite, gates {title}:")
        for op in ("promote", "rollback", "pair"):
            label = "promote + rollback" if op == "pair" else op
            lines.append(row(label, figures[op]))
    probe = results["filesystem"]
    lines.append(f"filesystem under {probe['dir']}, one copy of the skill:")
    lines.append(row("copytree", probe["copy"]))
    lines.append(row("rmtree", probe["delete"]))
    process = results["whole_process"]
    lines.append("whole process (a new process per call):")
    lines.append(row("skillstage promote --overwrite", process["skillstage_promote"]))
    lines.append(row("skillstage --version (start-up)", process["skillstage_startup"]))
    if "gto_assign" in process:
        lines.append(
            row(f"gto assign --force ({results['gto']['version']})", process["gto_assign"])
        )
        lines.append(
            f"  ratio gto / skillstage (medians): {process['ratio_gto_over_skillstage']}x wall "
            f"clock, {process['cpu_ratio_gto_over_skillstage']}x CPU time"
        )
    else:
        lines.append(f"  gto: skipped ({results['gto'].get('skipped')})")
    lines.append(
        f"{results['cpus']} CPUs; load average {results['load_average_at_start']} at the start, "
        f"{results['load_average_at_end']} at the end"
    )
    targets = results["targets"]
    lines.append(
        f"target: promote + rollback median <= {targets['pair_median_ms']:g} ms in-process: "
        + ("met" if targets["pair_met"] else "NOT met")
    )
    speedup = targets["speedup_met"]
    lines.append(
        f"target: skillstage promote >= {targets['speedup_vs_gto']:g}x faster than gto assign: "
        + ("not measured" if speedup is None else "met" if speedup else "NOT met")
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
