"""How long a rollback drill takes (`skillstage drill NAME`, seed 001 / seed 003 "rollback
procedure tested") as the store grows: one skill with two versions promoted for real, among
N other skills' records (each registered, staged and promoted: three events) and E executions.

The drill copies the store's records (every table but the executions and the others no move
reads) into a scratch SQLite store whose schema is created first, then runs a rollback and a
restore (each rewrites the registry file of every skill, as a real rollback does).
Each round is one `api.drill`; the best and the median of the rounds are reported, with the
copy step's share.

Run: `.venv/bin/python bench/drill.py [--skills N] [--executions N] [--rounds N]
[--database URL] [--json]` (default: SQLite in a temporary directory; a PostgreSQL URL is used
as it is: give it an empty schema, e.g. `?options=-csearch_path%3Dbench`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from skillstage import api
from skillstage.config import DATABASE_ENV, load_config_file
from skillstage.store import Store
from skillstage.store.executions import EXECUTION_COLUMNS, insert_executions

NAME = "drilled"


def write_skill(stage: Path, version: str) -> None:
    """A small valid skill NAME at `version` in the stage folder `stage`."""
    directory = stage / NAME
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "SKILL.md").write_text(
        f"---\nname: {NAME}\nversion: {version}\ndescription: A drilled skill. Use it when "
        "benchmarking.\n---\n# Drilled\n"
    )
    script = directory / "execute.sh"
    script.write_text("#!/bin/bash\necho ok\n")
    script.chmod(0o755)


def fill(store: Store, skills: int, executions: int) -> None:
    """`skills` other skills' records and `executions` executions of the first of them."""
    now = dt.datetime.now(dt.UTC)
    first_id = None
    with store.atomic() as tx:
        for index in range(skills):
            name = f"skill-{index:05d}"
            digest = f"{index:064x}"
            record = tx.ensure_version(
                name, "1.0.0", digest, path=f"/p/{name}", frontmatter={"name": name}, at=now
            )
            first_id = first_id or record.skill_id
            tx.enter_stage(record.version_id, "staged", f"/p/staging/{name}", at=now)
            tx.append_event("register", name=name, version="1.0.0", actor="bench", at=now)
            tx.enter_stage(record.version_id, "production", f"/p/{name}", at=now)
            tx.append_event(
                "promote",
                name=name,
                version="1.0.0",
                from_stage="staged",
                to_stage="production",
                actor="bench",
                details={"gates": [{"gate": "tests", "status": "pass"}]},
                at=now,
            )
    batch: list[tuple[Any, ...]] = []
    for number in range(executions):
        values = {
            "execution_id": f"e{number}",
            "skill_id": first_id,
            "version": "1.0.0",
            "digest": f"{0:064x}",
            "timestamp": now - dt.timedelta(seconds=number),
            "pattern_fidelity": 0.9,
            "outcome_quality": 0.9,
            "execution_time_ms": 10.0,
            "patterns_followed": 3,
            "patterns_missed": 0,
            "exception": False,
            "false_positive": False,
            "false_negative": False,
            "critical": False,
            "subject": None,
            "tags": None,
            "benchmark": False,
        }
        batch.append(tuple(values[c] for c in EXECUTION_COLUMNS))
        if len(batch) == 5000 or number == executions - 1:
            with store.atomic() as tx:
                insert_executions(tx, batch)
            batch.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skills", type=int, default=1000)
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database", help="a store URL (default: SQLite in the project)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="skillstage-bench-drill-") as temporary:
        root = Path(temporary)
        if args.database:
            os.environ[DATABASE_ENV] = args.database
        api.init(root)
        project = load_config_file(root / "skillstage.toml")
        began = time.perf_counter()
        with Store.open(project.database_url) as store:
            fill(store, args.skills, args.executions)
        for version in ("1.0.0", "1.1.0"):
            write_skill(root / ".claude/skills/staging", version)
            (promoted,) = api.promote(project, [NAME], actor="bench", overwrite=True)
            assert promoted.success, promoted.error
        built = time.perf_counter() - began
        totals, copies = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            result = api.drill(project, NAME, actor="bench")
            totals.append(time.perf_counter() - started)
            copies.append(result.steps[0].seconds)
            assert result.passed, result.to_dict()
        dialect = "postgresql" if project.database_url.startswith("postgresql") else "sqlite"
        size = (root / ".skillstage" / "state.db").stat().st_size if dialect == "sqlite" else None
    report = {
        "dialect": dialect,
        "skills": args.skills,
        "executions": args.executions,
        "store_bytes": size,
        "build_seconds": round(built, 2),
        "rounds": args.rounds,
        "drill_seconds": {
            "best": round(min(totals), 3),
            "median": round(statistics.median(totals), 3),
        },
        "copy_seconds": {
            "best": round(min(copies), 3),
            "median": round(statistics.median(copies), 3),
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        mib = f", {size / 2**20:.1f} MiB" if size else ""
        print(
            f"{dialect}: {args.skills:,} skills, {args.executions:,} executions{mib}: drill "
            f"best {report['drill_seconds']['best']:.3f} s, median "
            f"{report['drill_seconds']['median']:.3f} s (the copy: best "
            f"{report['copy_seconds']['best']:.3f} s, "
            f"median {report['copy_seconds']['median']:.3f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
