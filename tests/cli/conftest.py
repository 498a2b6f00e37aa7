from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli(tmp_path: Path) -> Run:
    """Run the real `skillstage` command in a subprocess (cwd: tmp_path unless given)."""

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
        environment.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "skillstage", *args],
            cwd=cwd or tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run
