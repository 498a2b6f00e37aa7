"""Hook commands: real shell scripts in a temporary project, run the way the outbox runs them."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from skillstage.config import Config, HooksConfig, Project
from skillstage.integrations import outbox as delivery
from skillstage.integrations.hooks import hook_item, run_hook
from skillstage.store import Store
from skillstage.store import outbox as box

DIGEST = "d" * 64


def make_project(root: Path, **hooks: Any) -> Project:
    return Project(root=root, config=Config(hooks=HooksConfig(**hooks)), source=None)


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def item(hooks: HooksConfig, hook: str = "deploy", **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "event": "promoted",
        "skill": "auth-v2",
        "version": "2.0.0",
        "digest": DIGEST,
        "from_stage": "staged",
        "to_stage": "production",
        "path": ".claude/skills/auth-v2",
    }
    fields.update(overrides)
    payload = hook_item(hooks, hook, **fields)  # type: ignore[arg-type]
    assert payload is not None
    return payload


def test_hook_item_is_none_unless_the_hook_is_configured() -> None:
    hooks = HooksConfig(deploy="scripts/deploy.sh")
    assert (
        hook_item(
            hooks,
            "reindex",
            event="promoted",
            skill="a",
            version="1.0.0",
            digest=DIGEST,
            from_stage=None,
            to_stage="staged",
            path="p",
        )
        is None
    )
    assert item(hooks) == {
        "hook": "deploy",
        "command": "scripts/deploy.sh",
        "event": "promoted",
        "skill": "auth-v2",
        "version": "2.0.0",
        "digest": DIGEST,
        "from_stage": "staged",
        "to_stage": "production",
        "path": ".claude/skills/auth-v2",
    }


def test_the_hook_runs_in_the_project_root_with_the_change_in_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARENT_ONLY_SECRET", "do-not-leak")
    script(
        tmp_path / "scripts" / "post.sh",
        'env | grep -e "^SKILLSTAGE_" -e "^PARENT_ONLY" | sort > hook-env.txt\n'
        "pwd > hook-cwd.txt\n",
    )
    project = make_project(tmp_path, post_promote="scripts/post.sh")
    payload = item(project.config.hooks, "post_promote", from_stage=None)

    result = run_hook(project, payload)

    assert result.ok, result.output_tail
    assert result.deployment_id is None  # only deploy hooks report one
    assert Path((tmp_path / "hook-cwd.txt").read_text().strip()).resolve() == tmp_path.resolve()
    seen = dict(line.split("=", 1) for line in (tmp_path / "hook-env.txt").read_text().splitlines())
    assert seen == {
        "SKILLSTAGE_DIGEST": DIGEST,
        "SKILLSTAGE_EVENT": "promoted",
        "SKILLSTAGE_FROM_STAGE": "",
        "SKILLSTAGE_PATH": ".claude/skills/auth-v2",
        "SKILLSTAGE_PROJECT_ROOT": str(tmp_path),
        "SKILLSTAGE_SKILL": "auth-v2",
        "SKILLSTAGE_TO_STAGE": "production",
        "SKILLSTAGE_VERSION": "2.0.0",
    }


def test_the_deployment_id_is_the_last_non_empty_line_of_stdout(tmp_path: Path) -> None:
    script(
        tmp_path / "deploy.sh",
        'echo "deploying $SKILLSTAGE_SKILL"\necho "progress" >&2\n'
        'echo "dep-$1-42"\necho\necho "  "\n',
    )
    # A bare script name that is not on PATH means the file at the project root; arguments pass.
    project = make_project(tmp_path, deploy="deploy.sh 'v 2'")

    result = run_hook(project, item(project.config.hooks))

    assert result.ok
    assert result.returncode == 0
    assert result.deployment_id == "dep-v 2-42"
    assert "deploying auth-v2" in result.output_tail and "progress" in result.output_tail


def test_a_failing_deploy_reports_its_output_and_no_deployment_id(tmp_path: Path) -> None:
    script(tmp_path / "deploy.sh", 'echo "dep-1"\necho "registry unreachable" >&2\nexit 7\n')
    project = make_project(tmp_path, deploy="./deploy.sh")

    result = run_hook(project, item(project.config.hooks))

    assert not result.ok
    assert result.returncode == 7
    assert result.deployment_id is None
    assert result.error == "exited with status 7: dep-1\nregistry unreachable"


def _alive(pid: int) -> bool:
    # A zombie is dead too: nothing may reap orphans in a container whose PID 1 is not an init.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_hook_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    script(tmp_path / "slow.sh", "sleep 30 &\necho $! > child.pid\necho started\nsleep 30\n")
    project = make_project(tmp_path, reindex="slow.sh", timeout_seconds=0.5)

    started = time.monotonic()
    result = run_hook(project, item(project.config.hooks, "reindex"))

    assert time.monotonic() - started < 5
    assert not result.ok and result.timed_out
    assert result.error is not None
    assert result.error.startswith("timed out: killed after 0.5 s (hooks.timeout_seconds)")
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 3
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the hook's background child outlived the timeout"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("scripts/missing.sh", "deploy hook: scripts/missing.sh does not exist\nhint: create it"),
        (
            "not-executable.sh",
            "not-executable.sh is not executable\nhint: chmod +x not-executable.sh",
        ),
        ("no-such-program-x1 --flag", "'no-such-program-x1' is neither on PATH nor a file in"),
        ("'unbalanced", "cannot parse the deploy hook command"),
        ("   ", "empty command"),
    ],
)
def test_a_hook_that_cannot_start_is_a_result_not_an_exception(
    tmp_path: Path, command: str, expected: str
) -> None:
    (tmp_path / "not-executable.sh").write_text("#!/bin/sh\necho hi\n")
    project = make_project(tmp_path)
    payload = {**item(HooksConfig(deploy="x")), "command": command}

    result = run_hook(project, payload)

    assert not result.ok and not result.runnable
    assert result.returncode is None
    assert result.error is not None and expected in result.error


# -- through the outbox: retries and the record ---------------------------------------------------


def enqueue(store: Store, kind: str, payload: dict[str, Any]) -> int:
    with store.atomic() as tx:
        return box.enqueue(tx, kind, payload)


def test_a_failing_hook_is_retried_with_backoff_then_recorded_with_its_output(
    tmp_path: Path, sqlite_url: str
) -> None:
    runs = tmp_path / "runs.txt"
    script(
        tmp_path / "deploy.sh", f'echo run >> "{runs}"\necho "step 1 ok"\necho boom >&2\nexit 1\n'
    )
    project = make_project(tmp_path, deploy="deploy.sh", retries=3, retry_base_seconds=1)
    waits: list[float] = []
    with Store.open(sqlite_url) as store:
        item_id = enqueue(store, "deploy", item(project.config.hooks))

        [result] = delivery.deliver(project, store, sleep=waits.append)

        assert waits == [1, 2, 4]  # seed 001: 3 retries, exponential backoff from 1 s
        assert runs.read_text().count("run") == 4
        assert (result.id, result.ok, result.attempts) == (item_id, False, 4)
        assert result.error == "exited with status 1: step 1 ok\nboom"
        assert result.status == "pending"  # due again later: the backoff continues
        recorded = box.get_item(store, item_id)
        assert recorded is not None
        assert (recorded.status, recorded.attempts) == ("pending", 4)
        assert recorded.last_error == "exited with status 1: step 1 ok\nboom"
        assert recorded.next_attempt_at is not None
        # The next backoff step (8 s) has not passed, so a plain delivery leaves it alone.
        assert delivery.deliver(project, store, sleep=waits.append) == []

        # Two more deliveries use up the automatic ones; then only `--retry` runs it.
        delivery.retry(project, store, sleep=waits.append)
        [last] = delivery.retry(project, store, sleep=waits.append)
        assert last.status == "failed"
        recorded = box.get_item(store, item_id)
        assert recorded is not None and (recorded.status, recorded.attempts) == ("failed", 12)
        far_future = recorded.next_attempt_at
        assert far_future is not None
        assert delivery.deliver(project, store, now=far_future, sleep=waits.append) == []

        # Fixed: `--retry` delivers the failed item.
        script(tmp_path / "deploy.sh", 'echo "dep-7"\n')
        [fixed] = delivery.retry(project, store, sleep=waits.append)
        assert (fixed.ok, fixed.attempts, fixed.deployment_id, fixed.status) == (
            True,
            1,
            "dep-7",
            "delivered",
        )
        recorded = box.get_item(store, item_id)
        assert recorded is not None
        assert (recorded.status, recorded.attempts, recorded.output) == ("delivered", 13, "dep-7")


def test_a_hook_that_recovers_is_delivered_after_the_failed_runs(
    tmp_path: Path, sqlite_url: str
) -> None:
    runs = tmp_path / "runs.txt"
    script(
        tmp_path / "deploy.sh",
        f'echo run >> "{runs}"\n'
        f'if [ "$(wc -l < "{runs}")" -lt 3 ]; then echo flaky >&2; exit 1; fi\necho dep-99\n',
    )
    project = make_project(tmp_path, deploy="deploy.sh")
    waits: list[float] = []
    with Store.open(sqlite_url) as store:
        item_id = enqueue(store, "deploy", item(project.config.hooks))

        [result] = delivery.deliver(project, store, ids=[item_id], sleep=waits.append)

        assert waits == [1, 2]
        assert (result.ok, result.attempts, result.deployment_id) == (True, 3, "dep-99")
        assert result.error is None
        recorded = box.get_item(store, item_id)
        assert recorded is not None
        assert (recorded.status, recorded.attempts, recorded.output) == ("delivered", 3, "dep-99")


def test_a_hook_that_cannot_start_is_not_retried_and_fails_at_once(
    tmp_path: Path, sqlite_url: str
) -> None:
    (tmp_path / "deploy.sh").write_text("#!/bin/sh\necho hi\n")  # not executable
    project = make_project(tmp_path, deploy="deploy.sh")
    waits: list[float] = []
    with Store.open(sqlite_url) as store:
        item_id = enqueue(store, "deploy", item(project.config.hooks))

        [result] = delivery.deliver(project, store, sleep=waits.append)

        assert waits == []
        assert (result.ok, result.attempts, result.status) == (False, 1, "failed")
        assert result.error == "deploy hook: deploy.sh is not executable\nhint: chmod +x deploy.sh"
        # Fixed by hand: `--retry` runs it.
        os.chmod(tmp_path / "deploy.sh", 0o755)
        [again] = delivery.retry(project, store, sleep=waits.append)
        assert again.ok and again.deployment_id == "hi"
        assert box.get_item(store, item_id) is not None
