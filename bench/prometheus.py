"""How long a Prometheus scrape of `/metrics` takes on a big store: 1,000 skills and 10 million
executions by default.

The store is the readiness bench's (bench/readiness.py, the same cache: built once in
`~/.cache/skillstage-bench/readiness/<key>/`, about a minute at 10 million; `--rebuild`): 1,000
skills, each with one version 20 days in prototype then 10 days in staged, and 10,000 executions
apiece spread over the 30 days, interleaved in time. A project is pointed at it, and
`server.prometheus.exposition` — the function behind `GET /metrics` — is timed in-process:

- `history`: the exposition computing its history snapshot while the scrape waits (`max_age=0`):
  the full-history aggregate over every execution (counter per skill, version, arm and outcome;
  histogram buckets per skill and version) and the live versions' samples. What the first scrape
  of a server process pays, and what each background refresh costs;
- the two queries of the snapshot alone (`store.exposition.execution_groups`, `live_samples`);
- `scrape`: a scrape as Prometheus sees it, the snapshot fresh (within `max_age`): everything
  else read at once (stage pointers, events, rollouts, outbox, seed 000's key metrics, the inbox's
  lag) and the text rendered.

With `--postgres URL` the same is timed on PostgreSQL too: a store of the same size is made in a
fresh schema of that database (the same registrations through the store, then the executions by
one `INSERT … SELECT FROM generate_series`, a fifth of them tagged with a loader arm, indexes
built after the load), and dropped at the end.

Run: `.venv/bin/python bench/prometheus.py [--executions N] [--skills M] [--rounds N]
[--postgres URL] [--rebuild] [--json]`. Targets are reported, not asserted: the exit status is
0. Not in `make bench`: at 10 million executions it runs for about two minutes on SQLite (the
history, three times, is most of it), more when the store must be built or with --postgres.
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
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import readiness  # the readiness bench: its store and project set-up
from skillstage.config import load_config_file
from skillstage.server.prometheus import exposition
from skillstage.skill.read import read_skill
from skillstage.store import Store
from skillstage.store import exposition as queries

TARGET_S = 1.0  # a scrape at 10 million executions: "well under a second"
ROUNDS = 20
HISTORY_ROUNDS = 3


def _timed(call: Callable[[], Any]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def _figures(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "n": len(samples),
        "median_s": round(statistics.median(samples), 4),
        "p95_s": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 4),
        "min_s": round(ordered[0], 4),
    }


def _query(project_url: str, query: Callable[..., Any]) -> float:
    def run() -> None:
        with Store.open(project_url) as store, store.reading() as tx:
            query(tx)

    return _timed(run)


_PG_EXECUTIONS = """
INSERT INTO execution (execution_id, skill_id, version, digest, "timestamp", pattern_fidelity,
    outcome_quality, execution_time_ms, patterns_followed, patterns_missed, exception,
    false_positive, false_negative, critical, subject, tags, benchmark)
SELECT 'bench-' || i, m.skill_id, m.version, m.digest,
    :start + (i::float8 * :span_us / :n) * interval '1 microsecond',
    CASE WHEN random() < 0.25 THEN 0.67 ELSE 1.0 END,
    CASE WHEN random() < 0.1 THEN 0.0 ELSE 1.0 END,
    round((800 + random() * 1000)::numeric, 1)::float8,
    (random() * 4)::int, (random() * 2)::int,
    random() < 0.01, random() < 0.01, random() < 0.01, random() < 0.001,
    'user-' || (i % 500),
    CASE WHEN random() < 0.2 THEN '{"arm": "stable"}'::jsonb ELSE NULL END,
    FALSE
FROM generate_series(0, :n - 1) AS i
JOIN (SELECT row_number() OVER (ORDER BY s.id) - 1 AS k, s.id AS skill_id, v.version, v.digest
      FROM skill s JOIN skill_version v ON v.skill_id = s.id) m ON m.k = i % :m
"""


def postgres_store(url: str, layout: readiness.Layout, say: Callable[[str], None]) -> str:
    """A store like the SQLite one in a fresh schema of the database at `url`: its URL."""
    schema = f"bench_prometheus_{os.getpid()}"
    admin = create_engine(make_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    store_url = (
        make_url(url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    try:
        built_at = dt.datetime.now(dt.UTC)
        start = (built_at - dt.timedelta(days=readiness.DAYS)).replace(second=0, microsecond=0)
        switch = start + dt.timedelta(days=readiness.PROTOTYPE_DAYS)
        say(f"building a PostgreSQL store ({layout.executions:,} executions) in schema {schema} …")
        with Store.open(store_url) as store:
            readiness._register(store, layout, start, switch)
        engine = create_engine(make_url(store_url), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            indexes = connection.execute(
                text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'execution'"
                    " AND schemaname = current_schema() AND indexname NOT LIKE 'pk_%'"
                )
            ).fetchall()
            for name, _ in indexes:
                connection.execute(text(f'DROP INDEX "{name}"'))
            connection.execute(
                text(_PG_EXECUTIONS),
                {
                    "start": start.replace(tzinfo=None),
                    "span_us": readiness.DAYS * 86_400 * 1_000_000,
                    "n": layout.executions,
                    "m": layout.skills,
                },
            )
            for _, definition in indexes:
                connection.execute(text(definition))
            connection.execute(text("VACUUM ANALYZE execution"))
        engine.dispose()
        admin.dispose()
    except BaseException:
        drop_postgres_store(url, store_url)
        raise
    return store_url


def drop_postgres_store(url: str, store_url: str) -> None:
    schema = make_url(store_url).query["options"].split("=", 1)[1]
    admin = create_engine(make_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def measure(
    project: Any, rounds: int, history_rounds: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """The figures of one store: history snapshots, its two queries, scrapes."""
    url = project.database_url
    results: dict[str, Any] = {"load_average_at_start": round(os.getloadavg()[0], 2)}
    say(f"history snapshot, computed while the scrape waits: {history_rounds} …")
    history = [_timed(lambda: exposition(project, max_age=0)) for _ in range(history_rounds)]
    results["history"] = _figures(history)
    say("the snapshot's two queries alone …")
    results["execution_groups"] = _figures(
        [_query(url, queries.execution_groups) for _ in range(history_rounds)]
    )
    results["live_samples"] = _figures(
        [_query(url, queries.live_samples) for _ in range(history_rounds)]
    )
    say(f"scrapes with a fresh snapshot: {rounds} …")
    body, _ = exposition(project)  # (the snapshot of this process, now fresh)
    scrapes = [_timed(lambda: exposition(project, max_age=3600)) for _ in range(rounds)]
    results["scrape"] = _figures(scrapes)
    results["body_bytes"] = len(body)
    results["series"] = sum(
        1 for line in body.decode().splitlines() if line and not line.startswith("#")
    )
    results["load_average_at_end"] = round(os.getloadavg()[0], 2)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--executions", type=int, default=readiness.EXECUTIONS)
    parser.add_argument("--skills", type=int, default=readiness.SKILLS)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"scrapes timed ({ROUNDS})")
    parser.add_argument(
        "--history-rounds",
        type=int,
        default=HISTORY_ROUNDS,
        help=f"history snapshots timed ({HISTORY_ROUNDS})",
    )
    parser.add_argument("--cache-dir", type=Path, default=readiness._cache_dir())
    parser.add_argument(
        "--postgres", metavar="URL", help="also on PostgreSQL, in a fresh schema of this database"
    )
    parser.add_argument("--rebuild", action="store_true", help="build the store again")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args(argv)
    if options.skills < 1 or options.executions < options.skills:
        parser.error("--skills must be at least 1 and --executions at least --skills")
    for key in [k for k in os.environ if k.startswith("SKILLSTAGE_")]:
        del os.environ[key]  # the bench's project names its store in its config
    say: Callable[[str], None] = (lambda _: None) if options.json else partial(print, flush=True)
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    name = readiness.skill_name(options.skills // 2)
    with tempfile.TemporaryDirectory(prefix="skillstage-bench-prometheus-") as scratch:
        root = Path(scratch)
        template = root / "template" / name
        readiness.write_skill(template, name)
        skill = read_skill(template)
        layout = readiness.Layout(
            options.executions, options.skills, name, skill.digest, skill.frontmatter_dict()
        )
        database, facts, built = readiness.cached_store(
            options.cache_dir, layout, rebuild=options.rebuild, say=say
        )
        results["store"] = {
            "path": str(database),
            "built_now": built,
            "executions": options.executions,
            "skills": options.skills,
            "bytes": facts.get("bytes"),
        }
        project = readiness.new_project(root / "project", database, ["metrics"], template)
        results["sqlite"] = measure(project, options.rounds, options.history_rounds, say)
        if options.postgres:
            store_url = postgres_store(options.postgres, layout, say)
            try:
                config = project.root / "skillstage.toml"
                config.write_text(
                    config.read_text().replace(
                        f"database = {json.dumps(str(database))}",
                        f"database = {json.dumps(store_url)}",
                    )
                )
                on_postgres = load_config_file(config)
                assert on_postgres.database_url == store_url
                results["postgresql"] = measure(
                    on_postgres, options.rounds, options.history_rounds, say
                )
            finally:
                drop_postgres_store(options.postgres, store_url)
    results["target_s"] = TARGET_S
    results["measured_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if options.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results))
    return 0


def render(results: dict[str, Any]) -> str:
    store = results["store"]
    lines = [
        f"Prometheus exposition on {store['executions']:,} executions over "
        f"{store['skills']:,} skills ({results['cpus']} CPUs)"
    ]
    for backend in ("sqlite", "postgresql"):
        if backend not in results:
            continue
        found = results[backend]
        lines.append(
            f"{backend}: {found['series']:,} series, {found['body_bytes']:,} bytes of text "
            f"(load {found['load_average_at_start']} → {found['load_average_at_end']})"
        )
        for key, label in (
            ("scrape", "scrape, snapshot fresh (what Prometheus waits for)"),
            ("history", "scrape computing the history snapshot (first scrape; each refresh)"),
            ("execution_groups", "  of which the full-history aggregate"),
            ("live_samples", "  of which the live versions' samples"),
        ):
            figures = found[key]
            lines.append(
                f"  {label:<68} median {figures['median_s']:8.3f} s  p95 {figures['p95_s']:8.3f} s"
            )
        verdict = "met" if found["scrape"]["p95_s"] < results["target_s"] else "missed"
        lines.append(f"  target: a scrape < {results['target_s']:g} s: {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
