"""After a promotion or rollback: deploy and other hooks, notifications, all through the outbox."""

from __future__ import annotations

from pathlib import Path

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.store import Store
from skillstage.store.outbox import list_items
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")


def _project(root: Path, **replacements: str) -> Project:
    """A new project whose default config has these (commented-out) lines replaced."""
    api.init(root)
    config = root / "skillstage.toml"
    text = config.read_text()
    for old, new in replacements.items():
        assert old in text
        text = text.replace(old, new)
    config.write_text(text)
    return load_config_file(config)


DEPLOY = '# deploy = "scripts/deploy.sh"'
POST_PROMOTE = '# post_promote = "scripts/notify-team.sh"'
REINDEX = '# reindex = "python holo_index.py --reindex-skills"'


def _script(root: Path, name: str, body: str) -> None:
    path = root / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def test_deploy_and_reindex_hooks_follow_a_promotion(tmp_path: Path) -> None:
    _script(
        tmp_path,
        "deploy.sh",
        'echo "deploying $SKILLSTAGE_SKILL"\necho "deploy-$SKILLSTAGE_VERSION"\n',
    )
    _script(
        tmp_path,
        "reindex.sh",
        'echo "$SKILLSTAGE_EVENT $SKILLSTAGE_SKILL $SKILLSTAGE_TO_STAGE" >> reindexed.log\n',
    )
    project = _project(
        tmp_path, **{DEPLOY: 'deploy = "./deploy.sh"', REINDEX: 'reindex = "./reindex.sh"'}
    )
    write_skill(tmp_path / STAGING, "auth-v2")
    (result,) = api.promote(project, ["auth-v2"], actor="t", deploy=True)
    assert result.success and result.deployment_id == "deploy-1.0.0"
    assert (tmp_path / "reindexed.log").read_text() == "promoted auth-v2 production\n"
    api.rollback(project, "auth-v2", reason="r")
    assert (tmp_path / "reindexed.log").read_text().splitlines()[-1] == "rolled_back auth-v2 staged"


def test_a_failing_hook_never_undoes_the_promotion(tmp_path: Path) -> None:
    _script(tmp_path, "broken.sh", "echo 'cannot reach the index' >&2\nexit 1\n")
    project = _project(
        tmp_path,
        **{
            POST_PROMOTE: 'post_promote = "./broken.sh"',
            "retry_base_seconds = 1": "retry_base_seconds = 0",
        },
    )
    write_skill(tmp_path / STAGING, "auth-v2")
    (result,) = api.promote(project, ["auth-v2"], actor="t")
    assert result.success
    assert (tmp_path / ".claude/skills/auth-v2").is_dir()
    (delivery,) = result.deliveries
    assert not delivery["ok"] and "cannot reach the index" in delivery["error"]
    with Store.open(project.database_url) as store:
        (item,) = list_items(store)
        assert item.kind == "post_promote" and item.status in ("pending", "failed")
        (assignment,) = store.current_assignments(name="auth-v2")
        assert assignment.stage == "production"


def test_notifications_reach_a_real_receiver(
    tmp_path: Path, receiver: tuple[str, list[dict[str, object]]]
) -> None:
    url, received = receiver
    project = _project(tmp_path, **{"urls = []": f'urls = ["{url}"]'})
    write_skill(tmp_path / STAGING, "auth-v2")
    (result,) = api.promote(project, ["auth-v2"], actor="alice", notify=True)
    assert result.success
    api.rollback(project, "auth-v2", reason="fidelity dropped", trigger_metric="fidelity=0.83")
    titles = [str(body.get("title")) for body in received]
    assert titles == ["Skill promoted: auth-v2 1.0.0", "Skill rolled back: auth-v2 to 1.0.0"]
    assert "fidelity=0.83" in str(received[1].get("message"))


def test_side_effects_of_a_crashed_promotion_stay_queued(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    _script(tmp_path, "reindex.sh", "echo reindexed >> reindexed.log\n")
    _project(tmp_path, **{REINDEX: 'reindex = "./reindex.sh"'})
    write_skill(tmp_path / STAGING, "auth-v2")
    killed = subprocess.run(
        [sys.executable, "-m", "skillstage", "promote", "auth-v2", "--yes"],
        cwd=tmp_path,
        env={**os.environ, "SKILLSTAGE_FAULT": "promote:committed"},
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "reindexed.log").exists()
    retried = subprocess.run(
        [sys.executable, "-m", "skillstage", "outbox", "--retry"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert (tmp_path / "reindexed.log").read_text() == "reindexed\n"
