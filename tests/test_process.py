"""Running a skill's commands: a command interrupted with us does not outlive us."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

_CHILD = """\
import sys
from pathlib import Path
from skillstage.process import run

run(["bash", "-c", "echo $$ > " + sys.argv[1] + "; sleep 30"], cwd=Path.cwd(), timeout=60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # (a zombie not yet reaped by init counts as gone)
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


@pytest.mark.parametrize(
    ("stop", "exit_status", "said"),
    [(signal.SIGINT, -signal.SIGINT, "KeyboardInterrupt"), (signal.SIGTERM, 143, "")],
)
def test_a_command_interrupted_with_us_is_killed_with_its_group(
    tmp_path: Path, stop: signal.Signals, exit_status: int, said: str
) -> None:
    pid_file = tmp_path / "pid"
    runner = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(pid_file)], cwd=tmp_path, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline and runner.poll() is None
        time.sleep(0.02)
    command = int(pid_file.read_text())
    assert _alive(command)
    runner.send_signal(stop)  # as a terminal's Ctrl-C or a `kill` reaches us, not the command
    assert runner.wait(timeout=30) == exit_status
    assert runner.stderr is not None and said in runner.stderr.read().decode()
    runner.stderr.close()
    deadline = time.monotonic() + 10
    while _alive(command):
        assert time.monotonic() < deadline, "the command outlived the interrupted run"
        time.sleep(0.05)
