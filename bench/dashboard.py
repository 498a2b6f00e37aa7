"""The dashboard's pages on a big store, fetched from a real server as a browser fetches them.

The requirement (issue 15, "Must show"): "the overview page's p95 with 1,000 skills and 10 million
executions (goal < 200 ms)".

The store is bench/readiness.py's (1,000 skills, version 1.0.0 each, 20 days in prototype then 10
in staged, 10,000 executions each, interleaved in time; built with its `build_store` and kept by
its `cached_store`), but with its own digests: the overview reads the skill directories on disk
as well as the store (`list` registers a version it has not seen), so every one of the 1,000
skills is on disk in staging with the digest the store holds for it. readiness.py's store gives
999 of them a made-up digest no directory can have, hence a store of this bench's own, cached
under `~/.cache/skillstage-bench/dashboard/<key>/` (~3.6 GB; the first build takes a minute or
more, 61 s here; later runs reuse it). Each skill also gets its history (registered in
prototype, promoted to staged) as events, added once to the cached store.

Timed: `skillstage serve --insecure-no-auth` as a process of its own (one worker) on loopback;
one client on a keep-alive connection fetches `GET /` and `GET /skills/NAME` (the middle skill:
10,000 executions, two stays, its history) in turn, as a browser loads a page (each page is one
document: CSS and charts inline, nothing else to fetch), a warm-up round first, then `--rounds`
rounds; median and p95 against the goal (< 200 ms for the overview). Then, in this process, each
data call behind the two pages once more (warm), timed alone, and the rendering: where the time
goes.

Run: `.venv/bin/python bench/dashboard.py [--rounds N] [--rebuild] [--json]`. About half a
minute with the store cached. Reported, not asserted: the exit status is 0 (1 if a page does
not answer 200).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from readiness import (
    DAYS,
    PROTOTYPE_DAYS,
    SKILLS,
    VERSION,
    Figures,
    Layout,
    cached_store,
    new_project,
    skill_name,
    write_skill,
)
from server import _port, running  # bench/ is on sys.path when a bench runs as a script
from skillstage import api
from skillstage.config import Project
from skillstage.skill.read import read_skill
from skillstage.store import Store
from skillstage.store.schema import SCHEMA_REVISION

# Bump when what this bench adds to readiness.py's layout changes: a new cache key.
DASHBOARD_LAYOUT = "1"
EXECUTIONS = 10_000_000
GOAL_MS = 200.0  # the overview's p95
ROUNDS = 50
HISTORY_ACTOR = "bench dashboard"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class DashboardLayout(Layout):
    """readiness.py's layout, every skill with the digest of its directory on disk."""

    digests: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        every = hashlib.sha256(" ".join(self.digests).encode()).hexdigest()[:12]
        return (
            f"d{DASHBOARD_LAYOUT}-schema{SCHEMA_REVISION}-{self.executions}x{self.skills}-{every}"
        )

    def digest_of(self, index: int) -> str:
        return self.digests[index]


def write_skills(root: Path, count: int) -> list[Path]:
    """Every skill's directory (readiness.py's queried skill, under each name): the same bytes
    every run, so the digests, and with them the cache key, stay put."""
    paths = []
    for index in range(count):
        path = root / skill_name(index)
        write_skill(path, skill_name(index))
        paths.append(path)
    return paths


def ensure_history(database: Path, count: int, built_at: dt.datetime) -> int:
    """Each skill's history as `list` and `promote` would have recorded it: registered in
    prototype when it was first seen, promoted to staged 20 days later. Added once (the events
    carry this bench's actor); the events added now."""
    start = (built_at - dt.timedelta(days=DAYS)).replace(second=0, microsecond=0)
    switch = start + dt.timedelta(days=PROTOTYPE_DAYS)
    with Store.open(f"sqlite:///{database}") as store:
        if any(e.actor == HISTORY_ACTOR for e in store.events(None, 1)):
            return 0
        added = 0
        with store.atomic() as tx:
            for index in range(count):
                name = skill_name(index)
                found = tx.current_assignments(name=name)
                if not found:
                    continue
                digest = found[0].digest
                tx.append_event(
                    "register",
                    name=name,
                    version=VERSION,
                    digest=digest,
                    to_stage="prototype",
                    actor=HISTORY_ACTOR,
                    reason="first seen on disk",
                    path=f".claude/skills/prototype/{name}",
                    at=start,
                )
                tx.append_event(
                    "promote",
                    name=name,
                    version=VERSION,
                    digest=digest,
                    from_stage="prototype",
                    to_stage="staged",
                    actor=HISTORY_ACTOR,
                    path=f".claude/skills/staging/{name}",
                    details={"gates": [{"gate": "validation", "status": "pass"}]},
                    at=switch + dt.timedelta(seconds=index),
                )
                added += 2
        return added


# -- the server ----------------------------------------------------------------------------------


@contextmanager
def serving(project: Project, port: int) -> Iterator[None]:
    """`skillstage serve --insecure-no-auth` on loopback until the block ends (as bench/server.py
    starts it; a store this size takes a while to open)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    argv = [str(BIN / "skillstage"), "serve", "--insecure-no-auth", "--port", str(port)]
    with running([*argv, "--log-level", "warning"], port, project.root, env, start_timeout=60):
        yield


BROWSER_HEADERS = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Encoding": "identity",
    "User-Agent": "skillstage-bench/dashboard",
}


def fetch(connection: http.client.HTTPConnection, path: str) -> tuple[float, int, int]:
    """(seconds until the whole page is read, status, bytes)."""
    started = time.perf_counter()
    connection.request("GET", path, headers=BROWSER_HEADERS)
    answer = connection.getresponse()
    body = answer.read()
    return time.perf_counter() - started, answer.status, len(body)


def over_http(port: int, pages: dict[str, str], rounds: int) -> dict[str, Any]:
    """One warm-up round, then `rounds` rounds fetching every page in turn (order alternating)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    samples = {label: Figures([], []) for label in pages}
    sizes: dict[str, int] = {}
    first: dict[str, float] = {}
    try:
        for index in range(1 + rounds):
            order = list(pages) if index % 2 == 0 else list(reversed(pages))
            for label in order:
                cpu = time.process_time()
                seconds, status, size = fetch(connection, pages[label])
                if status != 200:
                    raise SystemExit(f"GET {pages[label]}: {status}")
                sizes[label] = size
                if index == 0:
                    first[label] = seconds
                else:
                    samples[label].samples.append(seconds)
                    samples[label].cpu.append(time.process_time() - cpu)
    finally:
        connection.close()
    return {
        label: {
            **samples[label].to_dict(),
            "path": pages[label],
            "bytes": sizes[label],
            "first_ms": round(1000 * first[label], 1),
        }
        for label in pages
    }


# -- where the time goes -------------------------------------------------------------------------


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def breakdown(project: Project, name: str) -> dict[str, dict[str, float]]:
    """Each call `dashboard.data` makes for the two pages, warm, timed alone (ms), in the order
    the pages make them; and each page's rendering of the gathered facts."""
    from skillstage.dashboard import charts, data, pages
    from skillstage.rollout import engine
    from skillstage.watch.report import NoFailureReportError, failure_report

    def in_store(function: Callable[[Store], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with Store.open(project.database_url) as store:
                return function(store)

        return call

    def report() -> Any:
        try:
            return failure_report(project, name)
        except NoFailureReportError:
            return None

    def current(store: Store) -> Any:
        with store.reading() as tx:
            return tx.current_assignments(name=name)

    def arms(store: Store) -> Any:
        every = engine.history_of(store, name)
        return data.rollout_arm_series(store, every[0], data._now()) if every else None

    now = dt.datetime.now(dt.UTC)
    listing = api.list_skills(project, now=now)
    overview_calls: dict[str, Callable[[], Any]] = {
        "api.list_skills": partial(api.list_skills, project, now=now),
        "api.sla_check (listing passed)": partial(api.sla_check, project, listing=listing, now=now),
        "api.rollout_status": partial(api.rollout_status, project),
        "open_breakers": in_store(data.open_breakers),
        "api.key_metrics": partial(api.key_metrics, project),
        "api.switches": partial(api.switches, project),
        "api.history (15)": partial(api.history, project, limit=data.HISTORY_ON_OVERVIEW),
    }
    skill_calls: dict[str, Callable[[], Any]] = {
        "api.history NAME (100)": partial(
            api.history, project, name, limit=data.HISTORY_ON_SKILL_PAGE
        ),
        "api.readiness NAME": partial(api.readiness, project, name),
        "api.rollout_status NAME": partial(api.rollout_status, project, name),
        "failure_report NAME": report,
        "current_assignments NAME": in_store(current),
        "version_series NAME": in_store(lambda store: data.version_series(store, name)),
        "rollout history + arm series": in_store(arms),
        "open_breakers NAME": in_store(lambda store: data.open_breakers(store, name=name)),
        "stays NAME": in_store(lambda store: data.stays(store, name)),
        "api.switches": partial(api.switches, project),
    }
    results: dict[str, dict[str, float]] = {}
    for page, calls in (("overview", overview_calls), ("skill", skill_calls)):
        for call in calls.values():
            call()  # warm
        results[page] = {label: round(1000 * _timed(call)[0], 1) for label, call in calls.items()}

    overview = data.overview(project)
    seconds, _ = _timed(
        lambda: pages._render(
            "overview.html.j2", page=overview, project=project, actions=None, static=False
        )
    )
    results["overview"]["render (Jinja2)"] = round(1000 * seconds, 1)
    results["overview"]["data.overview, whole"] = round(
        1000 * _timed(partial(data.overview, project))[0], 1
    )
    results["overview"]["render_overview, whole"] = round(
        1000 * _timed(partial(pages.render_overview, project))[0], 1
    )
    skill = data.skill_page(project, name)

    def render_skill_page() -> str:
        version_charts = pages.build_charts(skill.series, "version", "per version")
        return pages._render(
            "skill.html.j2",
            page=skill,
            project=project,
            actions=None,
            static=False,
            notice=None,
            buckets=data.BUCKETS,
            timeline_svg=charts.stay_timeline(
                skill.stages,
                [(t.stage, t.version, t.entered_at, t.left_at) for t in reversed(skill.stays)],
                skill.at,
                pages._marks(skill),
            ),
            version_charts=version_charts,
            arm_charts=[],
            approve_to=None,
            rollback_stages=[],
        )

    results["skill"]["charts + render (Jinja2)"] = round(1000 * _timed(render_skill_page)[0], 1)
    results["skill"]["data.skill_page, whole"] = round(
        1000 * _timed(partial(data.skill_page, project, name))[0], 1
    )
    results["skill"]["render_skill, whole"] = round(
        1000 * _timed(partial(pages.render_skill, project, name))[0], 1
    )
    return results


# -- main ------------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "skillstage-bench" / "dashboard"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--executions", type=int, default=EXECUTIONS, help=f"executions ({EXECUTIONS:,})"
    )
    parser.add_argument("--skills", type=int, default=SKILLS, help=f"skills ({SKILLS:,})")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds per page ({ROUNDS})")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=_cache_dir(),
        help="where built stores are kept (default: ~/.cache/skillstage-bench/dashboard)",
    )
    parser.add_argument("--rebuild", action="store_true", help="build the store again")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args(argv)
    if options.skills < 1 or options.executions < options.skills or options.rounds < 1:
        parser.error("--skills and --rounds must be at least 1, --executions at least --skills")
    for key in [k for k in os.environ if k.startswith("SKILLSTAGE_")]:
        del os.environ[key]  # the bench's project names its store in its config
    say: Callable[[str], None] = (lambda _: None) if options.json else partial(print, flush=True)
    name = skill_name(options.skills // 2)
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "goal_ms": GOAL_MS,
    }
    with tempfile.TemporaryDirectory(prefix="skillstage-bench-dashboard-") as scratch:
        root = Path(scratch)
        templates = write_skills(root / "skills", options.skills)
        skills = [read_skill(path) for path in templates]
        queried = skills[options.skills // 2]
        layout = DashboardLayout(
            options.executions,
            options.skills,
            name,
            queried.digest,
            queried.frontmatter_dict(),
            digests=tuple(skill.digest for skill in skills),
        )
        database, facts, built = cached_store(
            options.cache_dir, layout, rebuild=options.rebuild, say=say
        )
        built_at = dt.datetime.fromisoformat(facts["built_at"])
        added = ensure_history(database, options.skills, built_at)
        project = new_project(root / "project", database, ["metrics"], templates[0])
        for path in templates[1:]:
            os.rename(path, project.stage_path("staged", path.name))
        results["store"] = {
            "path": str(database),
            "built_now": built,
            "history_events_added": added,
            "age_hours": round((dt.datetime.now(dt.UTC) - built_at).total_seconds() / 3600, 1),
            **facts,
        }
        registered = api.list_skills(project).registered
        if registered:
            raise SystemExit(f"bench set-up: {registered} skill(s) on disk the store did not know")
        say(f"serving; {options.rounds} rounds of GET / and GET /skills/{name} …")
        port = _port()
        with serving(project, port):
            results["http"] = over_http(
                port, {"overview": "/", "skill": f"/skills/{name}"}, options.rounds
            )
        say("in-process breakdown …")
        results["breakdown"] = breakdown(project, name)
    results["load_average_at_end"] = round(os.getloadavg()[0], 2)
    if options.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results))
    return 0


def render(results: dict[str, Any]) -> str:
    store = results["store"]
    lines = [
        f"\nstore: {store['executions']:,} executions over {store['skills']:,} skills, "
        f"{store['bytes'] / 1e9:.2f} GB, built "
        f"{'now' if store['built_now'] else str(store['age_hours']) + ' h ago'} "
        f"in {store['seconds']['total']:.0f} s; every skill on disk in staging",
        f"  {store['path']}",
        "\nover HTTP (skillstage serve, one worker; one keep-alive client), "
        f"{results['http']['overview']['n']} rounds:",
        f"  {'':<28} {'median':>8} {'p95':>8} {'min':>8} {'first':>8} {'size':>9}",
    ]
    for label, title in (
        ("overview", "GET /"),
        ("skill", f"GET {results['http']['skill']['path']}"),
    ):
        found = results["http"][label]
        lines.append(
            f"  {title:<28} {found['median_ms']:8.1f} {found['p95_ms']:8.1f} "
            f"{found['min_ms']:8.1f} {found['first_ms']:8.1f} {found['bytes'] / 1024:7.0f} KB"
        )
    for page, title in (("overview", "overview"), ("skill", "skill page")):
        lines.append(f"\n{title}, in-process, warm, each call once (ms):")
        for label, ms in results["breakdown"][page].items():
            lines.append(f"  {label:<40} {ms:8.1f}")
    p95 = results["http"]["overview"]["p95_ms"]
    lines.append(
        f"\n{results['cpus']} CPUs; load average {results['load_average_at_start']} at the "
        f"start, {results['load_average_at_end']} at the end"
    )
    lines.append(
        f"goal: the overview's p95 < {GOAL_MS:g} ms: {p95:.1f} ms, "
        + ("met" if p95 < GOAL_MS else "NOT met")
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
