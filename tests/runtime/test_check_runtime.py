"""`api.check_runtime`: every production skill loaded through the real loader from N threads and
N real processes at once, on real projects and stores (SQLite and PostgreSQL). A healthy project
passes; a missing, corrupted or modified skill copy, a dependency cycle, a load that fails, a
load over the timeout and memory over its limits each fail (or warn) and name the skill."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.errors import UsageError
from skillstage.runtime import Loader
from skillstage.runtime.check import FAIL, PASS, WARN, RuntimeCheck, serving_versions
from skillstage.runtime.check_loads import load_in_processes, load_in_threads, percentile
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")
MiB = 1024 * 1024


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


def promote(
    project: Project, name: str, version: str = "1.0.0", dependencies: list[str] | None = None
) -> None:
    """`name` at `version` (with its dependencies) staged and promoted to production."""
    extra: dict[str, object] = {"version": version}
    if dependencies is not None:
        extra["dependencies"] = dependencies
    write_skill(project.root / STAGING, name, extra=extra)
    (result,) = api.promote(project, [name], to="production", overwrite=True, actor="tester")
    assert result.success, result.error


def configure(project: Project, **settings: float) -> Project:
    """The project with these `[runtime_check]` keys set in its config file."""
    assert project.source is not None
    text = project.source.read_text(encoding="utf-8")
    head, section = text.split("\n[runtime_check]\n", 1)
    body, rest = section.split("\n\n", 1)
    kept = [line for line in body.splitlines() if line.split(" ", 1)[0] not in settings]
    given = [f"{key} = {value!r}" for key, value in settings.items()]
    section_text = "\n".join([*given, *kept])
    project.source.write_text(f"{head}\n[runtime_check]\n{section_text}\n\n{rest}", "utf-8")
    return load_config_file(project.source)


def evidence_of(report: RuntimeCheck, criterion: str) -> list[dict[str, object]]:
    return [e.to_dict() for e in report.criterion(criterion).evidence]


@pytest.fixture
def healthy(project: Project) -> Project:
    """billing and auth-v2 (which depends on billing) live in production."""
    promote(project, "billing")
    promote(project, "auth-v2", dependencies=["billing"])
    return project


def test_a_healthy_project_passes_every_criterion(healthy: Project) -> None:
    report = api.check_runtime(healthy, concurrency=3)

    assert report.verdict == PASS, report.to_dict()["criteria"]
    assert [c.name for c in report.criteria] == [
        "skills",
        "skill_files",
        "dependencies",
        "thread_loads",
        "process_loads",
        "memory",
        "cache",
    ]
    assert all(c.status == PASS for c in report.criteria)
    assert sorted(v.name for v in report.versions) == ["auth-v2", "billing"]
    assert report.criterion("dependencies").summary.startswith(
        "0 cycle(s) in 1 declared dependencies of 2 skills"
    )
    # Both skills, from every worker: 3 x 2 loads per mode, each timed.
    for loads in (report.threads, report.processes):
        assert (loads.workers, loads.workers_started, loads.expected) == (3, 3, 6)
        assert len(loads.times_ms) == 6 and all(ms >= 0 for ms in loads.times_ms)
        assert loads.failures == []
        times = loads.summary()
        assert times["p50_ms"] is not None and times["max_ms"] is not None
        assert times["p50_ms"] <= times["p95_ms"] <= times["p99_ms"] <= times["max_ms"]  # type: ignore[operator]
    # The second pass came from the cache.
    assert report.cache == {"second_pass_loads": 2, "hits": 2, "misses": 0, "hit_rate": 1.0}
    memory = report.memory
    assert 5 < memory["peak_mb"] < 1000
    assert memory["before_loading_mb"] <= memory["peak_mb"]
    assert len(memory["per_process_peak_mb"]) == 3
    assert report.criterion("memory").value == memory["peak_mb"]


@pytest.fixture
def heavy(project: Project) -> Project:
    """Twelve production skills with a 1 MiB file each: a cold load reads and digests it, so
    loading them all takes each worker long enough for the others to be loading too."""
    for number in range(12):
        name = f"heavy-{number}"
        write_skill(project.root / STAGING, name, files={"references/data.bin": os.urandom(MiB)})
        (result,) = api.promote(project, [name], to="production", actor="tester")
        assert result.success, result.error
    return project


def test_threads_and_processes_really_load_at_once(heavy: Project) -> None:
    report = api.check_runtime(heavy, concurrency=4)

    assert report.verdict == PASS, report.to_dict()["criteria"]
    # Four threads of this process, each of which loaded every skill.
    assert len(set(report.threads.loaders)) == 4
    # Four other processes, each with its own loader, loading every skill from scratch.
    pids = report.processes.loaders
    assert len(set(pids)) == 4 and os.getpid() not in pids
    assert report.threads.done == report.processes.done == 4 * 12
    # At once: every worker began its loads before any one had finished them.
    for loads in (report.threads, report.processes):
        starts = [began for began, _ in loads.spans]
        ends = [ended for _, ended in loads.spans]
        assert len(starts) == 4 and max(starts) < min(ends), loads.mode


def test_json_shape(healthy: Project) -> None:
    document = json.loads(json.dumps(api.check_runtime(healthy, concurrency=2).to_dict()))

    assert document["verdict"] == "pass"
    assert (document["stage"], document["concurrency"]) == ("production", 2)
    assert {s["name"] for s in document["skills"]} == {"auth-v2", "billing"}
    assert set(document["skills"][0]) == {"name", "version", "digest", "arm", "path"}
    for criterion in document["criteria"]:
        assert set(criterion) == {
            "name",
            "status",
            "value",
            "unit",
            "threshold",
            "summary",
            "evidence",
        }
        assert criterion["status"] in ("pass", "warn", "fail")
    for mode in ("threads", "processes"):
        loads = document["loads"][mode]
        assert loads["mode"] == mode and loads["loads_done"] == loads["loads_expected"] == 4
        for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
            assert isinstance(loads[key], float)
    assert "RSS" in document["memory"]["measure"]
    assert document["cache"]["hit_rate"] == 1.0


def test_a_removed_production_directory_fails_with_its_name_and_path(healthy: Project) -> None:
    live = healthy.root / PRODUCTION / "billing"
    shutil.rmtree(live)

    report = api.check_runtime(healthy, concurrency=2)

    assert report.verdict == FAIL
    files = report.criterion("skill_files")
    assert files.status == FAIL and files.value == 1
    (problem,) = evidence_of(report, "skill_files")
    assert problem["skill"] == "billing" and problem["path"] == str(live)
    assert "missing" in str(problem["detail"])
    # The loader still serves billing, from the archive: the loads themselves pass.
    assert report.criterion("thread_loads").status == PASS


def test_a_corrupted_skill_md_fails(healthy: Project) -> None:
    skill_md = healthy.root / PRODUCTION / "auth-v2" / "SKILL.md"
    skill_md.write_bytes(b"---\nname: [unclosed\n---\n")

    report = api.check_runtime(healthy, concurrency=2)

    assert report.criterion("skill_files").status == FAIL
    (problem,) = evidence_of(report, "skill_files")
    assert problem["skill"] == "auth-v2"
    assert "corrupted" in str(problem["detail"]) and "SKILL.md" in str(problem["path"])
    assert report.verdict == FAIL


def test_a_modified_file_fails_on_its_digest(healthy: Project) -> None:
    script = healthy.root / PRODUCTION / "billing" / "execute.sh"
    script.write_text(script.read_text() + "echo edited\n")

    report = api.check_runtime(healthy, concurrency=2)

    (problem,) = evidence_of(report, "skill_files")
    assert problem["skill"] == "billing"
    assert "modified" in str(problem["detail"]) and "digest" in str(problem["detail"])
    assert report.verdict == FAIL


def test_a_dependency_cycle_fails_and_is_named(project: Project) -> None:
    promote(project, "alpha")
    promote(project, "beta", dependencies=["alpha"])
    promote(project, "alpha", "1.1.0", dependencies=["beta"])  # beta is live: the gate passes
    promote(project, "gamma")

    report = api.check_runtime(project, concurrency=2)

    dependencies = report.criterion("dependencies")
    assert (dependencies.status, dependencies.value) == (FAIL, 1)
    (cycle,) = evidence_of(report, "dependencies")
    assert cycle["detail"] == "dependency cycle: alpha → beta → alpha"
    assert cycle["skill"] == "alpha"
    assert str(cycle["path"]).endswith("alpha/SKILL.md")
    assert report.verdict == FAIL
    # With --skill, the cycle counts only for the skills on it.
    assert api.check_runtime(project, concurrency=1, skill="gamma").verdict == PASS
    assert api.check_runtime(project, concurrency=1, skill="beta").verdict == FAIL


def test_a_dependency_not_live_warns(project: Project) -> None:
    promote(project, "billing")
    promote(project, "auth-v2", dependencies=["billing"])
    # billing 2.0.0 depends on something that is nowhere: forced past its gate.
    write_skill(
        project.root / STAGING, "billing", extra={"version": "2.0.0", "dependencies": ["ledger"]}
    )
    (result,) = api.promote(
        project,
        ["billing"],
        to="production",
        overwrite=True,
        actor="tester",
        force=True,
        reason="testing",
    )
    assert result.success, result.error

    report = api.check_runtime(project, concurrency=1)

    assert report.criterion("dependencies").status == WARN
    (absent,) = evidence_of(report, "dependencies")
    assert absent["detail"] == "billing depends on ledger, which is not live in production"
    assert report.verdict == WARN


def test_a_load_that_fails_is_named_in_both_modes(healthy: Project) -> None:
    # No live copy and no archive copy: nothing can serve billing.
    shutil.rmtree(healthy.root / PRODUCTION / "billing")
    archived = healthy.state_dir / "archive" / "billing"
    for directory, _, _ in os.walk(archived):
        os.chmod(directory, 0o755)  # archive entries are read-only
    shutil.rmtree(archived)

    report = api.check_runtime(healthy, concurrency=2)

    for name in ("thread_loads", "process_loads"):
        criterion = report.criterion(name)
        assert criterion.status == FAIL
        assert len(criterion.evidence) == 2  # one per worker
        assert {e.skill for e in criterion.evidence} == {"billing"}
        assert all("no intact copy" in e.detail for e in criterion.evidence)
    assert report.cache["misses"] == 1  # a load that fails is never cached
    assert report.verdict == FAIL


def test_loads_over_the_timeout_fail(healthy: Project) -> None:
    project = configure(healthy, load_timeout_seconds=0.000001)

    report = api.check_runtime(project, concurrency=2)

    threads = report.criterion("thread_loads")
    assert threads.status == FAIL
    assert threads.threshold == "every load done, none failed, none over 1e-06 s"
    assert {e.skill for e in threads.evidence} <= {"auth-v2", "billing"}
    # (over the limit when it ended, or not ended when the limit passed)
    assert all("1e-06 s" in e.detail for e in threads.evidence)
    assert report.criterion("process_loads").status == FAIL
    assert report.verdict == FAIL


def test_a_worker_process_stuck_in_a_load_is_stopped_and_the_load_named(
    healthy: Project, tmp_path: Path
) -> None:
    # A stand-in worker speaking the protocol: ready, one load, then stuck in the second.
    worker = tmp_path / "stuck_worker.py"
    worker.write_text(
        textwrap.dedent(
            """
            import json, sys, time
            sys.stdin.readline()
            print(json.dumps({"ready": {"rss_kb": 1000}}), flush=True)
            sys.stdin.readline()
            print(json.dumps({"load": 0, "ms": 1.5, "error": None}), flush=True)
            time.sleep(60)
            """
        )
    )
    with Loader(healthy) as loader:
        versions, _ = serving_versions(loader.table, loader.stage, None)
    started = time.monotonic()

    loads = load_in_processes(
        healthy,
        "production",
        versions,
        workers=2,
        timeout=0.5,
        command=[sys.executable, str(worker)],
    )

    assert time.monotonic() - started < 20  # stopped, not waited for
    assert loads.times_ms == [1.5, 1.5]
    assert len(loads.failures) == 2
    second = versions[1]
    for failure in loads.failures:
        assert failure.skill == second.name
        assert "did not finish within 0.5 s" in failure.detail
        assert "the process was stopped" in failure.detail


def test_a_worker_process_that_dies_is_reported(healthy: Project, tmp_path: Path) -> None:
    worker = tmp_path / "dying_worker.py"
    worker.write_text(
        "import sys\nsys.stdin.readline()\nsys.stderr.write('out of luck\\n')\nsys.exit(7)\n"
    )
    with Loader(healthy) as loader:
        versions, _ = serving_versions(loader.table, loader.stage, None)

    loads = load_in_processes(
        healthy, "production", versions, workers=1, timeout=5, command=[sys.executable, str(worker)]
    )

    (failure,) = loads.failures
    assert "ended (exit 7) after 0 of 2 loads: out of luck" in failure.detail
    assert loads.workers_started == 0


def test_a_worker_process_that_cannot_start_says_why_once(healthy: Project, tmp_path: Path) -> None:
    worker = tmp_path / "refusing_worker.py"
    worker.write_text(
        "import json, sys\nsys.stdin.readline()\n"
        "print(json.dumps({'error': 'StoreError: the store cannot be opened'}))\nsys.exit(1)\n"
    )
    with Loader(healthy) as loader:
        versions, _ = serving_versions(loader.table, loader.stage, None)

    loads = load_in_processes(
        healthy, "production", versions, workers=2, timeout=5, command=[sys.executable, str(worker)]
    )

    assert sorted(f.detail.split(", pid")[0] for f in loads.failures) == ["process 1", "process 2"]
    assert all(
        f.detail.endswith("could not start: StoreError: the store cannot be opened")
        for f in loads.failures
    )
    assert loads.times_ms == [] and loads.workers_started == 0


def test_a_thread_stuck_in_a_load_is_left_behind_and_named(healthy: Project) -> None:
    class SlowLoader:
        """The real loader, with one skill's reads held up (a disk that stopped answering)."""

        def __init__(self, loader: Loader) -> None:
            self.loader = loader

        def load(self, resolution: object) -> object:
            if getattr(resolution, "name", None) == "billing":
                time.sleep(3)
            return self.loader.load(resolution)  # type: ignore[arg-type]

    with Loader(healthy) as loader:
        versions, _ = serving_versions(loader.table, loader.stage, None)
        started = time.monotonic()
        loads = load_in_threads(SlowLoader(loader), versions, workers=2, timeout=0.3)  # type: ignore[arg-type]
        assert time.monotonic() - started < 2.5  # not waited for

    assert len(loads.failures) == 2
    assert {f.skill for f in loads.failures} == {"billing"}
    assert all("did not finish within 0.3 s" in f.detail for f in loads.failures)


def test_memory_over_the_critical_limit_fails(healthy: Project) -> None:
    project = configure(healthy, memory_warning_mb=1, memory_critical_mb=2)

    report = api.check_runtime(project, concurrency=1)

    memory = report.criterion("memory")
    assert memory.status == FAIL
    assert memory.threshold == "warn at 1 MB, fail at 2 MB"
    (evidence,) = memory.evidence
    assert "at or over the 2 MB critical limit" in evidence.detail
    assert report.verdict == FAIL


def test_memory_over_the_warning_limit_warns(healthy: Project) -> None:
    project = configure(healthy, memory_warning_mb=1, memory_critical_mb=100000)

    report = api.check_runtime(project, concurrency=1)

    assert report.criterion("memory").status == WARN
    assert report.verdict == WARN


def test_the_default_limits_are_the_alert_tables(project: Project) -> None:
    settings = project.config.runtime_check
    assert (settings.memory_warning_mb, settings.memory_critical_mb) == (75, 100)
    assert settings.min_cache_hit_rate == 0.90


def test_a_rollout_candidate_is_loaded_beside_the_live_version(healthy: Project) -> None:
    write_skill(
        healthy.root / STAGING, "billing", extra={"version": "1.1.0", "dependencies": ["auth-v2"]}
    )
    outcome = api.rollout_start(
        healthy, "billing", steps=[10, 100], step_min_duration="0s", actor="tester"
    )
    assert outcome.success, outcome.error

    report = api.check_runtime(healthy, concurrency=2)

    served = {(v.name, v.version, v.arm) for v in report.versions}
    assert served == {
        ("auth-v2", "1.0.0", "stable"),
        ("billing", "1.0.0", "stable"),
        ("billing", "1.1.0", "candidate"),
    }
    assert report.threads.expected == report.processes.expected == 6
    assert report.criterion("process_loads").status == PASS
    # The candidate's dependency on auth-v2, which depends on billing, closes a cycle.
    (cycle,) = evidence_of(report, "dependencies")
    assert cycle["detail"] == "dependency cycle: auth-v2 → billing → auth-v2"
    assert report.verdict == FAIL


def test_skill_checks_that_one_only(healthy: Project) -> None:
    report = api.check_runtime(healthy, concurrency=2, skill="billing")

    assert [v.name for v in report.versions] == ["billing"]
    assert report.threads.expected == report.processes.expected == 2
    assert report.verdict == PASS


def test_an_empty_production_warns(project: Project) -> None:
    report = api.check_runtime(project, concurrency=2)

    assert report.criterion("skills").status == WARN
    assert report.verdict == WARN
    assert report.threads.expected == 0


def test_a_disabled_skill_is_skipped_and_listed(healthy: Project) -> None:
    api.switch(healthy, "billing", kind="disabled", on=True, reason="testing", actor="tester")

    report = api.check_runtime(healthy, concurrency=1)

    assert [v.name for v in report.versions] == ["auth-v2"]
    assert report.disabled == ["billing"]
    assert "switched off, not loaded: billing" in report.criterion("skills").summary


@pytest.mark.parametrize("bad", [0, -1, 65])
def test_concurrency_out_of_range_is_refused(healthy: Project, bad: int) -> None:
    with pytest.raises(UsageError, match=f"concurrency must be between 1 and 64, not {bad}"):
        api.check_runtime(healthy, concurrency=bad)


def test_an_unknown_skill_is_refused_with_the_live_ones(healthy: Project) -> None:
    with pytest.raises(UsageError, match="'nope' is not live in production") as raised:
        api.check_runtime(healthy, skill="nope")
    assert raised.value.hint == "skills live in production: auth-v2, billing"


def test_memory_limits_out_of_order_are_a_config_error(project: Project) -> None:
    from skillstage.errors import ConfigError

    with pytest.raises(ConfigError, match="memory_warning_mb"):
        configure(project, memory_warning_mb=200)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
