"""How long `skillstage check-runtime` takes, and the load times it reports, for 100 and 1,000
production skills.

For each size a fresh SQLite project gets that many skills (bench/loader.py's 4-file, ~3 KB
skills) written to staging and promoted to production by one `api.promote` call (set-up, not
timed). Then `api.check_runtime(project, concurrency=N)` runs `--repeats` times; reported: the
whole check's wall time (median and spread), the thread and process load p50/p99/max of the
median run, the peak memory of a loading process, and the verdict (a healthy tree must pass:
exit 1 otherwise). No peer: the figures are for judging the check's own cost and the loader's
load times at those sizes.

Not part of `make bench`. Run: `.venv/bin/python bench/check_runtime.py [--sizes 100,1000]
[--concurrency 5] [--repeats 3] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loader import new_project, promoted, skill_names, stage  # bench/ is on sys.path
from skillstage import api


def one_size(root: Path, count: int, concurrency: int, repeats: int) -> dict[str, Any]:
    project = new_project(root / f"skills-{count}")
    names = skill_names(count)
    for name in names:
        stage(project, name, "1.0.0")
    started = time.perf_counter()
    promoted(project, names, confirm=lambda _result: True)
    setup = time.perf_counter() - started
    runs = []
    for _ in range(repeats):
        began = time.perf_counter()
        report = api.check_runtime(project, concurrency=concurrency)
        runs.append((time.perf_counter() - began, report.to_dict()))
    runs.sort(key=lambda run: run[0])
    seconds, median = runs[len(runs) // 2]
    return {
        "skills": count,
        "concurrency": concurrency,
        "setup_seconds": round(setup, 2),
        "check_seconds": [round(s, 3) for s, _ in runs],
        "check_seconds_median": round(seconds, 3),
        "verdicts": sorted({run["verdict"] for _, run in runs}),
        "threads": _times(median["loads"]["threads"]),
        "processes": _times(median["loads"]["processes"]),
        "peak_memory_mb": median["memory"]["peak_mb"],
        "before_loading_mb": median["memory"]["before_loading_mb"],
        "cache_hit_rate": median["cache"]["hit_rate"],
    }


def _times(loads: dict[str, Any]) -> dict[str, Any]:
    keys = ("loads_done", "p50_ms", "p99_ms", "max_ms", "seconds")
    return {key: loads[key] for key in keys}


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "check-runtime: wall time and load times (ms), median of the runs",
        f"{'skills':>7} {'check s':>8} {'spread':>15}  {'mode':<9} {'loads':>6} "
        f"{'p50':>7} {'p99':>7} {'max':>7}  memory",
    ]
    for result in results:
        spread = f"{min(result['check_seconds']):.2f}-{max(result['check_seconds']):.2f}"
        for index, mode in enumerate(("threads", "processes")):
            loads = result[mode]
            head = (
                f"{result['skills']:>7,} {result['check_seconds_median']:>8.2f} {spread:>15}"
                if index == 0
                else " " * 32
            )
            memory = (
                f"peak {result['peak_memory_mb']} MB ({result['before_loading_mb']} before)"
                if mode == "processes"
                else f"cache {result['cache_hit_rate']:.0%}"
            )
            lines.append(
                f"{head}  {mode:<9} {loads['loads_done']:>6,} {loads['p50_ms']:>7.3f} "
                f"{loads['p99_ms']:>7.3f} {loads['max_ms']:>7.3f}  {memory}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="production skill counts")
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-check-runtime-") as scratch:
        for count in sizes:
            print(f"{count:,} skills: setting up and checking …", file=sys.stderr)
            results.append(one_size(Path(scratch), count, args.concurrency, args.repeats))
    print(json.dumps(results, indent=2) if args.json else render(results))
    healthy = all(result["verdicts"] == ["pass"] for result in results)
    if not healthy:
        print("a healthy tree did not pass the check", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
