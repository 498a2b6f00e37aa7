"""Crash safety, randomised: 100 promotions and rollbacks killed with SIGKILL at random points.

Each trial either dies at a randomly chosen journal step (SKILLSTAGE_FAULT) or is killed by this
process after a random delay, wherever it happens to be. After every kill the next command's
recovery must leave every skill whole (see test_crash._assert_whole), and after all the trials the
event log must hold exactly one event per operation that completed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from skillstage import api
from skillstage.config import load_config_file
from skillstage.store import Store
from tests.lifecycle.test_crash import PROMOTE_POINTS, ROLLBACK_POINTS, _assert_whole
from tests.skilltree import write_skill

TRIALS = 100
STAGING = Path(".claude/skills/staging")


def test_random_kills_always_recover(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    api.init(tmp_path)
    project = load_config_file(tmp_path / "skillstage.toml")
    live = tmp_path / ".claude/skills/auth-v2"
    write_skill(tmp_path / STAGING, "auth-v2", extra={"version": "1.0.0"})
    (first,) = api.promote(project, ["auth-v2"], actor="t")
    assert first.success
    killed_by = {"fault": 0, "timer": 0, "finished": 0}
    for trial in range(TRIALS):
        if trial % 2 == 0:
            version = f"2.{trial}.0"
            write_skill(tmp_path / STAGING, "auth-v2", extra={"version": version})
            args = ["promote", "auth-v2", "--yes", "--overwrite"]
            points = PROMOTE_POINTS
        else:
            args = ["rollback", "auth-v2", "--reason", f"trial {trial}", "--yes"]
            points = ROLLBACK_POINTS
        env = dict(os.environ)
        how = rng.choice(["fault", "timer"])
        if how == "fault":
            env["SKILLSTAGE_FAULT"] = rng.choice(points)
        process = subprocess.Popen(
            [sys.executable, "-m", "skillstage", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if how == "timer":
            # Within a command's life (~0.1-0.2 s here since start-up got faster; 0.2-0.4 s
            # before): start-up, gates, the move, clean-up.
            time.sleep(rng.uniform(0.01, 0.15))
            process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=120)
        if process.returncode == -signal.SIGKILL:
            killed_by[how] += 1
        else:
            killed_by["finished"] += 1
            assert b"Traceback" not in stderr, stderr.decode()
        _assert_whole(project)
    assert killed_by["fault"] >= 30 and killed_by["timer"] >= 10, killed_by
    assert live.is_dir()
    with Store.open(project.database_url) as store:
        ids = [e.id for e in store.events(limit=10_000)]
        assert ids == sorted(set(ids), reverse=True)
        assert store.open_journals() == []
