"""How long a command takes to start, as a user runs it, next to the bare interpreter.

A small project on SQLite (two skills, one promoted, so the store has versions and history); each
command is a new process of the venv's `skillstage` script: `--help`, `--version`, `list`,
`history`, `status NAME` and `validate` of one skill. The bare interpreter is the same venv's
`python -c pass`. Rounds are interleaved (one run of every command per round), so a slow spell on a
shared machine hits all of them alike; medians are reported with their ratio to the interpreter's.

Goal: every command ≤ 5x the interpreter. Reported, not asserted: the exit status is 0.

Run: `.venv/bin/python bench/startup.py [--rounds N] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 5.0
SKILL = "release-notes"
BIN = Path(sys.executable).parent


def _skill(directory: Path, name: str, version: str) -> None:
    directory.mkdir(parents=True)
    (directory / "SKILL.md").write_text(
        f"---\nname: {name}\ndescription: Drafts release notes from merged pull requests. Use it "
        f"when preparing a release.\nmetadata:\n  version: {version}\n---\n# Release notes\n\n"
        "Run `./execute.sh` with the release tag.\n"
    )
    for script in ("execute.sh", "test.sh"):
        (directory / script).write_text("#!/bin/bash\necho notes\n")
        (directory / script).chmod(0o755)


def _skillstage(project: Path, *args: str) -> None:
    subprocess.run([str(BIN / "skillstage"), *args], cwd=project, check=True, capture_output=True)


def make_project(root: Path) -> Path:
    """A project with `release-notes` 1.0.0 in staging and `changelog` 0.1.0 in prototype."""
    project = root / "project"
    project.mkdir()
    _skillstage(project, "init")
    prototype = project / ".claude" / "skills" / "prototype"
    _skill(prototype / SKILL, SKILL, "1.0.0")
    _skill(prototype / "changelog", "changelog", "0.1.0")
    _skillstage(project, "promote", SKILL, "--yes")
    return project


def commands(project: Path) -> dict[str, list[str]]:
    script = str(BIN / "skillstage")
    one_skill = str(project / ".claude" / "skills" / "prototype" / "changelog")
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "--help": [script, "--help"],
        "--version": [script, "--version"],
        "list": [script, "list"],
        "history": [script, "history"],
        f"status {SKILL}": [script, "status", SKILL],
        "validate (1 skill)": [script, "validate", one_skill],
    }


def measure(project: Path, rounds: int) -> dict[str, list[float]]:
    runs = commands(project)
    times: dict[str, list[float]] = {name: [] for name in runs}
    environment = {**os.environ, "NO_COLOR": "1"}
    for _ in range(2):  # warm the page cache and the .pyc files
        for argv in runs.values():
            subprocess.run(argv, cwd=project, capture_output=True, env=environment)
    for _ in range(rounds):
        for name, argv in runs.items():
            start = time.perf_counter()
            done = subprocess.run(argv, cwd=project, capture_output=True, env=environment)
            times[name].append(time.perf_counter() - start)
            if done.returncode not in (0, 1):
                raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.decode()}")
    return times


def compile_bytecode() -> None:
    """Write skillstage's .pyc files, as installing a package does. An editable install writes
    them on first import unless the environment says PYTHONDONTWRITEBYTECODE (this machine's
    does): then every run would compile the edited modules from source, which no user pays."""
    import skillstage

    package = str(Path(skillstage.__file__).parent)
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    options = parser.parse_args()
    compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="skillstage-startup-") as tmp:
        times = measure(make_project(Path(tmp)), options.rounds)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    base = medians["python -c pass"]
    rows = [
        {"command": name, "median_ms": round(ms, 1), "ratio": round(ms / base, 2)}
        for name, ms in medians.items()
    ]
    met = all(row["ratio"] <= TARGET_RATIO for row in rows)
    if options.json:
        print(json.dumps({"rounds": options.rounds, "commands": rows, "goal_met": met}, indent=2))
        return
    print(f"Start-up, whole process, {options.rounds} interleaved rounds (medians)")
    for row in rows:
        mark = "" if row["ratio"] <= TARGET_RATIO else f"  (goal ≤ {TARGET_RATIO:g}x: missed)"
        print(f"  {row['command']:<22} {row['median_ms']:7.1f} ms  {row['ratio']:5.2f}x{mark}")
    print(f"goal every command ≤ {TARGET_RATIO:g}x the interpreter: {'met' if met else 'missed'}")


if __name__ == "__main__":
    main()
