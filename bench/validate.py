"""How fast `skillstage validate` is next to the reference validator, skills-ref.

Generates a tree of valid skills with a realistic mix of sizes, then times, in one process:
skillstage's `validate([tree_root])` over the whole tree (discovery, every file read and digested,
secret scan, content, schema and spec rules), and skills-ref's `validate(skill_dir)` called once
per skill (SKILL.md frontmatter rules only). Both are warmed up on a small subset first. Also times
both on the real public skills of bench/corpus.py when the package registries can be reached.

Whole process, as a user runs it: `skillstage validate TREE` and `skillstage validate DIR1 … DIRn`
(every skill an argument), each a new process with its start-up, output piped, against the same
skills-ref in-process figure: the goal is ≥ 10x faster per skill either way.

Run: `.venv/bin/python bench/validate.py [--count N] [--seed S] [--json]` (`make bench`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from skills_ref.validator import validate as reference_validate

from corpus import CorpusUnavailableError, fetch_public_skills
from skillstage.api import validate

WARMUP_SKILLS = 20
TARGET_SPEEDUP = 10.0
# Piped output, no colour, no config from the environment: as a script or CI runs it.
_ENVIRONMENT = {
    **{k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")},
    "NO_COLOR": "1",
}

# fmt: off
_WORDS = (
    "data", "report", "invoice", "chart", "deploy", "review", "sync", "cache", "index", "query",
    "schema", "table", "image", "video", "audio", "parse", "render", "export", "import", "backup",
    "metric", "alert", "ticket", "release", "branch", "commit", "issue", "document", "slide",
    "sheet", "form", "email", "calendar", "contact", "search", "vector", "model", "prompt",
    "agent", "tool", "config", "secret", "policy", "audit", "trace", "log", "stream", "batch",
    "queue", "worker", "job", "cluster", "node", "service",
)
# fmt: on
_CATEGORIES = ("documents", "engineering", "data", "ops", "media", "productivity", "security")


# -- the generated tree ------------------------------------------------------------------------


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _prose(rng: random.Random, size: int) -> str:
    """About `size` bytes of Markdown-ish text."""
    lines: list[str] = []
    total = 0
    while total < size:
        line = (
            f"## {_sentence(rng, 3)[:-1]}"
            if rng.random() < 0.08
            else f"- {_sentence(rng, rng.randint(6, 14))}"
            if rng.random() < 0.3
            else " ".join(_sentence(rng, rng.randint(6, 14)) for _ in range(rng.randint(1, 4)))
        )
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n"


def _script(rng: random.Random) -> str:
    """A Python script of one to four KB."""
    steps = (
        f"# {_sentence(rng, 10)}\nprint({rng.randint(0, 999)})\n"
        for _ in range(rng.randint(20, 80))
    )
    return "#!/usr/bin/env python3\n" + "".join(steps)


def _skill_md(rng: random.Random, name: str, body_lines: int, links: Sequence[str]) -> str:
    tags = "".join(f"\n  - {rng.choice(_WORDS)}" for _ in range(rng.randint(1, 4)))
    description = (
        _sentence(rng, rng.randint(8, 30))[:-1]
        + ". Use it when "
        + _sentence(rng, rng.randint(4, 12)).lower()
    )
    head = (
        f"---\nname: {name}\nversion: {rng.randint(0, 3)}.{rng.randint(0, 20)}."
        f"{rng.randint(0, 40)}\ndescription: {description}\nauthor: {rng.choice(_WORDS)}-team\n"
        f"tags:{tags}\n---\n# {name.replace('-', ' ').title()}\n\n"
    )
    body = [f"See [{Path(link).stem}]({link}) for details." for link in links]
    while len(body) < body_lines:
        roll = rng.random()
        if roll < 0.1:
            body += ["", f"## {_sentence(rng, 3)[:-1]}", ""]
        elif roll < 0.15:
            body += ["```bash", f"./execute.sh --{rng.choice(_WORDS)} {rng.choice(_WORDS)}", "```"]
        else:
            body.append(_sentence(rng, rng.randint(6, 18)))
    return head + "\n".join(body[:body_lines]) + "\n"


def _write(path: Path, text: str, *, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755 if executable else 0o644)


@dataclass
class GeneratedTree:
    root: Path
    skills: list[Path]
    sizes: Counter[str]
    files: int
    bytes: int


def generate_tree(root: Path, count: int, seed: int) -> GeneratedTree:
    """`count` valid skills under root/<category>/<name>: ~85% small, ~13% medium, ~2% large."""
    rng = random.Random(seed)
    skills: list[Path] = []
    sizes: Counter[str] = Counter()
    for index in range(count):
        name = f"{rng.choice(_WORDS)}-{rng.choice(_WORDS)}-{index:05d}"
        directory = root / rng.choice(_CATEGORIES) / name
        roll = rng.random()
        size = "large" if roll < 0.02 else "medium" if roll < 0.15 else "small"
        sizes[size] += 1
        extra: dict[str, str] = {}
        if size == "medium":
            for i in range(rng.randint(2, 5)):
                extra[f"scripts/{rng.choice(_WORDS)}_{i}.py"] = _script(rng)
            for i in range(rng.randint(2, 4)):
                extra[f"references/{rng.choice(_WORDS)}-{i}.md"] = _prose(
                    rng, rng.randint(1_000, 6_000)
                )
        elif size == "large":
            for i in range(20):
                folder = ("references", "scripts", "assets")[i % 3]
                extra[f"{folder}/{rng.choice(_WORDS)}-{i}.md"] = _prose(
                    rng, rng.randint(5_000, 100_000)
                )
        body_lines = 400 if size == "large" else rng.randint(12, 142)
        links = [p for p in extra if p.startswith("references/")][:5]
        _write(directory / "SKILL.md", _skill_md(rng, name, body_lines, links))
        _write(directory / "execute.sh", f"#!/bin/bash\necho '{name}' \"$@\"\n", executable=True)
        _write(
            directory / "test.sh", "#!/bin/bash\n./execute.sh --check >/dev/null\n", executable=True
        )
        _write(directory / "README.md", f"# {name}\n\n{_prose(rng, rng.randint(200, 1_500))}")
        for relative, text in extra.items():
            _write(directory / relative, text, executable=relative.startswith("scripts/"))
        skills.append(directory)
    files = sum(len(names) for _, _, names in os.walk(root))
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return GeneratedTree(root, skills, sizes, files, total)


# -- timing ------------------------------------------------------------------------------------


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass
class Timing:
    skills: int
    skillstage_seconds: float  # as the CLI runs it: worker processes, one per CPU
    skillstage_one_process_seconds: float  # jobs=1
    skills_ref_seconds: float
    skillstage_spec_only_seconds: float  # the Agent Skills spec rules only, like skills-ref
    skillstage_failed: int  # skills skillstage rejected (0 expected on the generated tree)
    skills_ref_failed: int
    process_tree_seconds: float  # `skillstage validate TREE`, a new process
    process_arguments_seconds: float  # `skillstage validate DIR1 … DIRn`, a new process

    @property
    def ratio_process_tree(self) -> float:
        return self.skills_ref_seconds / self.process_tree_seconds

    @property
    def ratio_process_arguments(self) -> float:
        return self.skills_ref_seconds / self.process_arguments_seconds

    @property
    def skillstage_ms_per_skill(self) -> float:
        return 1000 * self.skillstage_seconds / self.skills

    @property
    def skillstage_one_process_ms_per_skill(self) -> float:
        return 1000 * self.skillstage_one_process_seconds / self.skills

    @property
    def ratio_one_process(self) -> float:
        return self.skills_ref_seconds / self.skillstage_one_process_seconds

    @property
    def skillstage_spec_only_ms_per_skill(self) -> float:
        return 1000 * self.skillstage_spec_only_seconds / self.skills

    @property
    def skills_ref_ms_per_skill(self) -> float:
        return 1000 * self.skills_ref_seconds / self.skills

    @property
    def ratio(self) -> float:
        """How many times faster skillstage is per skill."""
        return self.skills_ref_seconds / self.skillstage_seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "skillstage_ms_per_skill": round(self.skillstage_ms_per_skill, 3),
            "skillstage_one_process_ms_per_skill": round(
                self.skillstage_one_process_ms_per_skill, 3
            ),
            "ratio_one_process": round(self.ratio_one_process, 2),
            "skillstage_spec_only_ms_per_skill": round(self.skillstage_spec_only_ms_per_skill, 3),
            "skills_ref_ms_per_skill": round(self.skills_ref_ms_per_skill, 3),
            "ratio_skills_ref_over_skillstage": round(self.ratio, 2),
            "ratio_process_tree": round(self.ratio_process_tree, 2),
            "ratio_process_arguments": round(self.ratio_process_arguments, 2),
        }


def _best_of(repeats: int, run: Callable[[], int]) -> tuple[float, int]:
    """The fastest of `repeats` runs, and what the last one returned."""
    best = float("inf")
    result = 0
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def time_both(skillstage_paths: list[Path], skill_dirs: list[Path], *, repeats: int = 1) -> Timing:
    """Time skillstage over `skillstage_paths` and skills-ref over each of `skill_dirs`."""

    def run_skillstage(spec_only: bool = False, jobs: int = 0) -> int:
        report = validate(skillstage_paths, spec_only=spec_only, jobs=jobs)
        if len(report.skills) != len(skill_dirs):
            raise SystemExit(
                f"skillstage validated {len(report.skills)} skills, expected {len(skill_dirs)}"
            )
        return sum(1 for skill in report.skills if not skill.ok)

    def run_skills_ref() -> int:
        return sum(1 for skill_dir in skill_dirs if reference_validate(skill_dir))

    def run_process(paths: Sequence[Path]) -> int:
        command = [str(Path(sys.executable).parent / "skillstage"), "validate", *map(str, paths)]
        done = subprocess.run(command, capture_output=True, text=True, env=_ENVIRONMENT)
        if done.returncode not in (0, 1):
            raise SystemExit(f"skillstage validate failed ({done.returncode}): {done.stderr}")
        return done.returncode

    # Interleaved rounds, best of each: a slow spell on a shared machine then hits every
    # contender alike instead of whichever happened to be running.
    best: dict[str, float] = {}
    failed: dict[str, int] = {}
    contenders: dict[str, Callable[[], int]] = {
        "skillstage": run_skillstage,
        "one_process": lambda: run_skillstage(jobs=1),
        "skills_ref": run_skills_ref,
        "spec_only": lambda: run_skillstage(spec_only=True),
        "process_tree": lambda: run_process(skillstage_paths),
        "process_arguments": lambda: run_process(skill_dirs),
    }
    for _ in range(repeats):
        for name, contender in contenders.items():
            seconds, failed[name] = _best_of(1, contender)
            best[name] = min(best.get(name, float("inf")), seconds)
    skillstage_seconds, skillstage_failed = best["skillstage"], failed["skillstage"]
    one_process_seconds = best["one_process"]
    skills_ref_seconds, skills_ref_failed = best["skills_ref"], failed["skills_ref"]
    spec_only_seconds = best["spec_only"]
    return Timing(
        skills=len(skill_dirs),
        skillstage_seconds=skillstage_seconds,
        skillstage_one_process_seconds=one_process_seconds,
        skills_ref_seconds=skills_ref_seconds,
        skillstage_spec_only_seconds=spec_only_seconds,
        skillstage_failed=skillstage_failed,
        skills_ref_failed=skills_ref_failed,
        process_tree_seconds=best["process_tree"],
        process_arguments_seconds=best["process_arguments"],
    )


def _first_failures(paths: list[Path], limit: int = 5) -> list[str]:
    """A few findings from skills skillstage rejected, to explain a non-zero failure count."""
    lines: list[str] = []
    for skill in validate(paths).skills:
        for finding in skill.findings:
            if finding.severity == "error" and len(lines) < limit:
                lines.append(f"{skill.path.name}: {finding.id}: {finding.message}")
    return lines


def _corpus_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "skillstage" / "bench-public-skills"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=3000, help="skills to generate (3000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the tree (1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--no-corpus", action="store_true", help="skip the real public skills corpus"
    )
    options = parser.parse_args(argv)
    if options.count < WARMUP_SKILLS:
        parser.error(f"--count must be at least {WARMUP_SKILLS}")
    say = (lambda *_: None) if options.json else print
    results: dict[str, Any] = {"count": options.count, "seed": options.seed}

    from startup import compile_bytecode

    compile_bytecode()  # the whole-process runs start as an installed package does
    with tempfile.TemporaryDirectory(prefix="skillstage-bench-") as scratch:
        started = time.perf_counter()
        tree = generate_tree(Path(scratch) / "skills", options.count, options.seed)
        results["generated"] = {
            "seconds": round(time.perf_counter() - started, 2),
            "sizes": dict(tree.sizes),
            "files": tree.files,
            "mib": round(tree.bytes / 2**20, 1),
        }
        say(
            f"generated {len(tree.skills)} skills ({dict(tree.sizes)}), {tree.files} files, "
            f"{tree.bytes / 2**20:.1f} MiB in {results['generated']['seconds']} s"
        )
        rss_before = _peak_rss_mib()
        time_both(tree.skills[:WARMUP_SKILLS], tree.skills[:WARMUP_SKILLS])  # warm-up
        timing = time_both([tree.root], tree.skills, repeats=3)
        results["generated_tree"] = timing.to_dict()
        results["peak_rss_mib"] = round(_peak_rss_mib(), 1)
        results["peak_rss_mib_before_validating"] = round(rss_before, 1)
        if timing.skillstage_failed:
            results["skillstage_failures"] = _first_failures([tree.root])
    say(_render("generated tree (best of 3 interleaved rounds)", timing))
    say("  (skills-ref rejects the seed's keys version, author and tags; it still runs every rule)")
    for line in results.get("skillstage_failures", []):
        say(f"  unexpected failure: {line}")
    say(f"peak RSS: {results['peak_rss_mib']:.0f} MiB (after generating: {rss_before:.0f} MiB)")

    if not options.no_corpus:
        try:
            corpus = fetch_public_skills(_corpus_cache())
        except CorpusUnavailableError as exc:
            results["public_corpus"] = {"skipped": str(exc)}
            say(f"public corpus skipped: {exc}")
        else:
            time_both(corpus[:WARMUP_SKILLS], corpus[:WARMUP_SKILLS])
            corpus_timing = time_both(corpus, corpus, repeats=5)
            results["public_corpus"] = corpus_timing.to_dict()
            say(_render("public corpus (best of 5)", corpus_timing))
            say(
                "  (skillstage's seed rules reject real skills for lacking execute.sh and a "
                "version; --spec-only is the like-for-like figure)"
            )

    results["target_speedup"] = TARGET_SPEEDUP
    results["target_met"] = timing.ratio >= TARGET_SPEEDUP
    results["target_met_whole_process"] = (
        min(timing.ratio_process_tree, timing.ratio_process_arguments) >= TARGET_SPEEDUP
    )
    if options.json:
        print(json.dumps(results, indent=2))
    else:
        verdict = "met" if results["target_met"] else "NOT met"
        print(f"target: skillstage >= {TARGET_SPEEDUP:g}x faster per skill: {verdict}")
        verdict = "met" if results["target_met_whole_process"] else "NOT met"
        print(
            f"target, whole process (tree and arguments, start-up included) >= "
            f"{TARGET_SPEEDUP:g}x: {verdict}"
        )
    return 0


def _render(title: str, timing: Timing) -> str:
    return (
        f"{title}: {timing.skills} skills\n"
        f"  skillstage validate(tree): {timing.skillstage_seconds:8.2f} s "
        f"{timing.skillstage_ms_per_skill:8.3f} ms/skill  ({timing.skillstage_failed} rejected;"
        f" {os.cpu_count()} worker processes, as the CLI)\n"
        f"  skillstage, one process:   {timing.skillstage_one_process_seconds:8.2f} s "
        f"{timing.skillstage_one_process_ms_per_skill:8.3f} ms/skill"
        f"  (ratio {timing.ratio_one_process:.1f}x)\n"
        f"  skillstage --spec-only:    {timing.skillstage_spec_only_seconds:8.2f} s "
        f"{timing.skillstage_spec_only_ms_per_skill:8.3f} ms/skill\n"
        f"  skills-ref validate(dir):  {timing.skills_ref_seconds:8.2f} s "
        f"{timing.skills_ref_ms_per_skill:8.3f} ms/skill  ({timing.skills_ref_failed} rejected)\n"
        f"  ratio skills-ref/skillstage: {timing.ratio:.1f}x\n"
        f"  whole process, `validate TREE`:      {timing.process_tree_seconds:8.2f} s "
        f"{1000 * timing.process_tree_seconds / timing.skills:8.3f} ms/skill"
        f"  (ratio {timing.ratio_process_tree:.1f}x)\n"
        f"  whole process, `validate DIR1 … DIRn`: {timing.process_arguments_seconds:8.2f} s "
        f"{1000 * timing.process_arguments_seconds / timing.skills:8.3f} ms/skill"
        f"  (ratio {timing.ratio_process_arguments:.1f}x)"
    )


if __name__ == "__main__":
    sys.exit(main())
