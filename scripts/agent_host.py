"""A small simulated agent host, for the demo: it serves requests from many subjects through the
skillstage loader and records how each execution went.

For each request it resolves the skill for the request's subject (the stable version, or a
rollout's candidate for the subjects in its share), loads it (the SKILL.md body, cached by
digest), "runs" it, and records the execution with the loader, which tags it with the arm, the
rollout and the subject. How well a run goes is drawn at random; `--candidate-fidelity` makes the
candidate misbehave, `--fidelity F --failing-version V` one version (a live version that starts
failing).

    python scripts/agent_host.py PROJECT_DIR --skill spam-filter --requests 2000 --subjects 400
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter

from skillstage.errors import SkillstageError
from skillstage.runtime import Loader


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", help="the project directory (its skillstage.toml)")
    parser.add_argument("--skill", required=True)
    parser.add_argument("--stage", help="the stage it serves from (default: production)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--subjects", type=int, default=400)
    parser.add_argument(
        "--candidate-fidelity",
        type=float,
        help="the candidate's mean pattern fidelity (default: as good as the stable version)",
    )
    parser.add_argument(
        "--fidelity",
        type=float,
        help="the mean pattern fidelity of --failing-version (a live version that misbehaves)",
    )
    parser.add_argument("--failing-version", help="the version --fidelity applies to")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    draw = random.Random(args.seed)
    try:
        loader = Loader(args.project, stage=args.stage)
    except SkillstageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with loader:
        listed = [entry.name for entry in loader.catalog()]
        if args.skill not in listed:
            known = ", ".join(listed)
            print(f"error: {args.skill} is not in the catalog ({known})", file=sys.stderr)
            return 2
        arms: Counter[str] = Counter()
        versions: Counter[str] = Counter()
        for _ in range(args.requests):
            subject = f"user-{draw.randrange(args.subjects)}"
            resolution = loader.resolve(args.skill, subject=subject)
            loader.load(resolution)  # what the agent reads when it uses the skill
            arms[resolution.arm] += 1
            versions[resolution.version] += 1
            bad = resolution.arm == "candidate" and args.candidate_fidelity is not None
            failing = args.fidelity is not None and resolution.version == args.failing_version
            mean = args.candidate_fidelity if bad else args.fidelity
            bad = bad or failing
            if bad and mean is not None:
                fidelity = min(1.0, max(0.0, draw.gauss(mean, 0.1)))
            else:
                fidelity = draw.choice([1.0, 1.0, 1.0, 0.67])
            loader.record(
                resolution,
                pattern_fidelity=round(fidelity, 3),
                outcome_quality=draw.choice([1.0] * 9 + [0.0]) if not bad else fidelity,
                execution_time_ms=round(draw.uniform(1.0, 3.0), 2),
            )
        stats = loader.stats()
    share = ", ".join(f"{arm} {count} ({count / args.requests:.0%})" for arm, count in arms.items())
    print(f"served {args.requests} requests from {args.subjects} subjects: {share}")
    print("versions: " + ", ".join(f"{v} × {n}" for v, n in sorted(versions.items())))
    print(
        f"loader: {stats['misses']} load(s) from disk, {stats['hits']} from its cache; "
        f"disclosure levels: {stats['levels']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
