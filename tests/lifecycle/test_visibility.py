"""Atomic visibility: a reader of the live directory never sees it missing, nor a mix of versions.

A separate process opens the live directory and reads its files relative to that handle (as an
agent runtime loading a skill does) in a tight loop, while this process swaps two versions in and
out hundreds of times through `rollback --to`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from skillstage import api
from skillstage.config import load_config_file
from skillstage.lifecycle import fs
from tests.skilltree import write_skill

CYCLES = 150  # each cycle is two swaps: 300 promote/rollback exchanges in all

READER = textwrap.dedent(
    """
    import os, sys, time
    live, stop = sys.argv[1], sys.argv[2]
    expected = {"1.0.0": "only-in-one.txt", "1.1.0": "only-in-two.txt"}
    reads = problems = 0
    while not os.path.exists(stop):
        try:
            fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            problems += 1
            print("missing live directory", flush=True)
            continue
        try:
            names = set(os.listdir(fd))
            with os.fdopen(os.open("SKILL.md", os.O_RDONLY, dir_fd=fd)) as handle:
                text = handle.read()
            version = next(l.split(":", 1)[1].strip() for l in text.splitlines()
                           if l.startswith("version:"))
            marker = expected[version]
            with os.fdopen(os.open(marker, os.O_RDONLY, dir_fd=fd)) as handle:
                if handle.read() != version:
                    raise ValueError("marker content from another version")
            other = [m for v, m in expected.items() if v != version][0]
            if other in names:
                raise ValueError("files of both versions")
            reads += 1
        except Exception as exc:
            problems += 1
            print(f"mixed or missing: {exc!r}", flush=True)
        finally:
            os.close(fd)
    print(f"reads={reads} problems={problems}", flush=True)
    """
)


def test_readers_never_see_a_missing_or_mixed_skill(tmp_path: Path) -> None:
    api.init(tmp_path)
    config = tmp_path / "skillstage.toml"
    # Only the conflict gate: this test is about the swap, not the checks.
    text = config.read_text().replace(
        'gates = ["structure", "schema", "spec", "tests", "conflicts", "dependencies", "security"]',
        'gates = ["conflicts"]',
    )
    config.write_text(text)
    project = load_config_file(config)
    staging = tmp_path / ".claude/skills/staging"
    for version, marker in (("1.0.0", "only-in-one.txt"), ("1.1.0", "only-in-two.txt")):
        write_skill(staging, "auth-v2", extra={"version": version}, files={marker: version})
        (result,) = api.promote(project, ["auth-v2"], actor="t", overwrite=True)
        assert result.success, result.error
    live = tmp_path / ".claude/skills/auth-v2"
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(live), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(CYCLES):
            for version in ("1.0.0", "1.1.0"):
                api.rollback(project, "auth-v2", reason="swap test", to_version=version)
    finally:
        stop.touch()
        output, _ = reader.communicate(timeout=60)
    summary = output.strip().splitlines()[-1]
    reads = int(summary.split()[0].split("=")[1])
    assert summary.endswith("problems=0"), output[-2000:]
    assert reads > CYCLES, "the reader hardly ran; the test proved nothing"


def test_swap_leaves_no_scratch(tmp_path: Path) -> None:
    api.init(tmp_path)
    project = load_config_file(tmp_path / "skillstage.toml")
    write_skill(tmp_path / ".claude/skills/staging", "a")
    (result,) = api.promote(project, ["a"], actor="t")
    assert result.success
    assert sorted(p.name for p in (tmp_path / ".claude/skills").iterdir()) == [
        "a",
        "prototype",
        "staging",
    ]


def test_a_swapped_out_copy_stays_whole_for_a_reader_that_holds_it(tmp_path: Path) -> None:
    api.init(tmp_path)
    project = load_config_file(tmp_path / "skillstage.toml")
    staging = tmp_path / ".claude/skills/staging"
    write_skill(staging, "a", extra={"version": "1.0.0"}, files={"marker.txt": "one"})
    (result,) = api.promote(project, ["a"], actor="t")
    assert result.success
    live = tmp_path / ".claude/skills/a"
    held = os.open(live, os.O_RDONLY | os.O_DIRECTORY)  # an agent runtime mid-load
    try:
        write_skill(staging, "a", extra={"version": "1.1.0"}, files={"marker.txt": "two"})
        (result,) = api.promote(project, ["a"], actor="t", overwrite=True)
        assert result.success
        with os.fdopen(os.open("marker.txt", os.O_RDONLY, dir_fd=held)) as handle:
            assert handle.read() == "one"  # the old version, whole, though no longer live
        assert (live / "marker.txt").read_text() == "two"
    finally:
        os.close(held)
    retired = project.state_dir / "retired"
    assert len(list(retired.iterdir())) == 1
    fs.sweep_retired(retired, grace=0)
    assert list(retired.iterdir()) == []


def test_retired_copies_are_deleted_once_the_grace_period_is_over(tmp_path: Path) -> None:
    retired = tmp_path / "retired"
    fresh = tmp_path / ".skillstage-incoming-a-000000000001"
    fresh.mkdir()
    fs.retire(fresh, retired)
    old = retired / ".skillstage-incoming-a-000000000000"
    old.mkdir()
    fs.sweep_retired(retired, grace=3600)
    assert sorted(p.name for p in retired.iterdir()) == [old.name, fresh.name]
    fs.sweep_retired(retired, grace=-1)
    assert list(retired.iterdir()) == []
