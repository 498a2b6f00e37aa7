"""The outbox on both stores: enqueued with the change, delivered once, never lost."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from skillstage.config import Config, HooksConfig, Project
from skillstage.integrations import outbox as delivery
from skillstage.integrations.outbox import Delivery
from skillstage.store import Store
from skillstage.store import outbox as box

T0 = dt.datetime(2025, 11, 15, 10, 30, tzinfo=dt.UTC)


def script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def hook_payload(hook: str, command: str, skill: str = "auth-v2") -> dict[str, Any]:
    return {
        "hook": hook,
        "command": command,
        "event": "promoted",
        "skill": skill,
        "version": "2.0.0",
        "digest": "d" * 64,
        "from_stage": "staged",
        "to_stage": "production",
        "path": f".claude/skills/{skill}",
    }


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A project whose deploy hook appends the skill's name to deployed.txt and prints an id."""
    script(
        tmp_path / "deploy.sh",
        'echo "$SKILLSTAGE_SKILL" >> deployed.txt\necho "dep-$SKILLSTAGE_SKILL"\n',
    )
    hooks = HooksConfig(deploy="deploy.sh", retries=1, retry_base_seconds=0)
    return Project(root=tmp_path, config=Config(hooks=hooks), source=None)


def deployed(project: Project) -> list[str]:
    path = project.root / "deployed.txt"
    return path.read_text().split() if path.exists() else []


def test_an_item_enqueued_in_a_rolled_back_transaction_does_not_exist(store: Store) -> None:
    with pytest.raises(RuntimeError), store.atomic() as tx:
        box.enqueue(tx, "deploy", hook_payload("deploy", "deploy.sh"))
        raise RuntimeError("the promotion failed after enqueueing")

    assert box.list_items(store) == []
    assert box.claim_due(store) == []


def test_an_item_enqueued_with_the_change_is_delivered_once(store: Store, project: Project) -> None:
    with store.atomic() as tx:
        item_id = box.enqueue(tx, "deploy", hook_payload("deploy", "deploy.sh"), at=T0)
    [pending] = box.list_items(store)
    assert (pending.id, pending.status, pending.attempts) == (item_id, "pending", 0)
    assert (pending.created_at, pending.next_attempt_at) == (T0, T0)
    assert pending.payload == hook_payload("deploy", "deploy.sh")

    [result] = delivery.deliver(project, store)

    assert result == Delivery(
        id=item_id,
        kind="deploy",
        name="deploy.sh",
        ok=True,
        attempts=1,
        error=None,
        deployment_id="dep-auth-v2",
        skill="auth-v2",
        status="delivered",
        output="dep-auth-v2",
    )
    assert delivery.deliver(project, store) == []
    assert delivery.retry(project, store) == []
    assert deployed(project) == ["auth-v2"]
    [done] = box.list_items(store, status="delivered")
    assert (done.status, done.attempts, done.output, done.next_attempt_at) == (
        "delivered",
        1,
        "dep-auth-v2",
        None,
    )
    assert done.payload == pending.payload  # the output is kept beside, not in, the payload


def test_claim_takes_what_is_due_or_asked_for_and_never_what_is_done(store: Store) -> None:
    with store.atomic() as tx:
        due = box.enqueue(tx, "reindex", {"n": 1}, at=T0)
        later = box.enqueue(tx, "reindex", {"n": 2}, at=T0 + dt.timedelta(hours=1))
        failed = box.enqueue(tx, "reindex", {"n": 3}, at=T0)
    [claimed] = box.claim_due(store, now=T0, ids=[failed])
    assert claimed.id == failed
    assert (
        box.mark_failed(store, failed, error="boom", next_attempt_at=T0, max_attempts=1) == "failed"
    )

    [first] = box.claim_due(store, now=T0)

    assert first.id == due and first.status == "delivering"
    assert box.claim_due(store, now=T0) == []  # `later` is not due; `failed` waits for --retry
    assert [item.id for item in box.claim_due(store, now=T0, ids=[later, failed])] == [
        later,
        failed,
    ]
    assert box.mark_delivered(store, due, output=None) is True
    assert box.mark_delivered(store, due, output=None) is False  # not claimed any more
    assert box.claim_due(store, now=T0 + dt.timedelta(days=1), ids=[due]) == []
    assert {item.id: item.status for item in box.list_items(store)} == {
        due: "delivered",
        later: "delivering",
        failed: "delivering",
    }


def test_a_claim_abandoned_by_a_crashed_deliverer_is_delivered_after_its_lease(
    store: Store, project: Project
) -> None:
    with store.atomic() as tx:
        item_id = box.enqueue(tx, "deploy", hook_payload("deploy", "deploy.sh"), at=T0)
    # A deliverer claims it, then dies before running it or recording anything.
    [claimed] = box.claim_due(store, now=T0)
    assert claimed.next_attempt_at == T0 + box.DEFAULT_LEASE

    assert delivery.deliver(project, store, now=T0 + dt.timedelta(minutes=5)) == []
    assert delivery.retry(project, store, now=T0 + dt.timedelta(minutes=5)) == []
    assert deployed(project) == []

    [result] = delivery.deliver(project, store, now=T0 + dt.timedelta(minutes=11))

    assert (result.id, result.ok, result.status) == (item_id, True, "delivered")
    assert deployed(project) == ["auth-v2"]
    assert delivery.deliver(project, store, now=T0 + dt.timedelta(hours=1)) == []


def test_two_concurrent_deliverers_deliver_each_item_exactly_once(
    store_url: str, project: Project
) -> None:
    script(
        project.root / "deploy.sh",
        'echo "$SKILLSTAGE_SKILL" >> deployed.txt\nsleep 0.05\necho "dep-$SKILLSTAGE_SKILL"\n',
    )
    skills = [f"skill-{n}" for n in range(12)]
    with Store.open(store_url) as store, store.atomic() as tx:
        ids = [box.enqueue(tx, "deploy", hook_payload("deploy", "deploy.sh", s)) for s in skills]
    start = threading.Barrier(2)
    results: dict[str, list[Delivery]] = {}
    errors: list[BaseException] = []

    def deliverer(name: str) -> None:
        try:
            # Two handles on one store, as two processes would have.
            with Store.open(store_url) as own:
                start.wait()
                results[name] = delivery.deliver(project, own)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliverer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    by_a, by_b = ({d.id for d in results[name]} for name in ("a", "b"))
    assert by_a.isdisjoint(by_b)
    assert by_a | by_b == set(ids)
    assert all(d.ok for d in results["a"] + results["b"])
    assert sorted(deployed(project)) == sorted(skills)
    with Store.open(store_url) as store:
        assert {item.status for item in box.list_items(store)} == {"delivered"}


def test_an_unknown_kind_fails_once_and_is_kept(store: Store, project: Project) -> None:
    with store.atomic() as tx:
        item_id = box.enqueue(tx, "carrier_pigeon", {"skill": "auth-v2"})

    [result] = delivery.deliver(project, store)

    assert (result.ok, result.attempts, result.status) == (False, 0, "failed")
    assert result.error is not None and "no handler for outbox items of kind 'carrier_pigeon'" in (
        result.error
    )
    [kept] = box.list_items(store, status="failed")
    assert kept.id == item_id


def test_the_report_lists_items_with_target_status_and_age(store: Store, project: Project) -> None:
    with store.atomic() as tx:
        box.enqueue(tx, "deploy", hook_payload("deploy", "deploy.sh"), at=T0)
        box.enqueue(
            tx,
            "notify",
            {"url": "slack://T0K3N/B0K3N/C0K3N", "target": "slack://***/***", "skill": "auth-v2"},
            at=T0,
        )

    report = delivery.outbox_report(project, store, now=T0 + dt.timedelta(hours=2))

    assert report.counts == {"pending": 2, "delivering": 0, "failed": 0, "delivered": 0}
    rows = [(r.kind, r.target, r.status, r.attempts, r.age_seconds) for r in report.items]
    assert rows == [
        ("deploy", "deploy.sh", "pending", 0, 7200.0),
        ("notify", "slack://***/***", "pending", 0, 7200.0),
    ]
    assert "T0K3N" not in json.dumps(report.to_dict())


# -- the CLI, in a real subprocess -----------------------------------------------------------------

_REGISTERING_MAIN = (
    "from skillstage.cli.main import cli, main; from skillstage.cli.outbox import outbox; "
    "cli.commands.setdefault('outbox', outbox); main()"
)


def _cli_prefix() -> list[str]:
    # `python -m skillstage` once main.py registers the command; until then the same entry point
    # with the command added.
    from skillstage.cli.main import cli

    if "outbox" in cli.commands:
        return [sys.executable, "-m", "skillstage"]
    return [sys.executable, "-c", _REGISTERING_MAIN]


def test_outbox_retry_through_the_cli(tmp_path: Path, store_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    if store_url.startswith("postgresql"):
        env["SKILLSTAGE_DATABASE_URL"] = store_url
    root = tmp_path / "proj"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_cli_prefix(), *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    root.mkdir()
    created = cli("init", "--json")
    assert created.returncode == 0, created.stderr
    config = root / "skillstage.toml"
    text = config.read_text()
    text = text.replace("retries = 3", "retries = 1").replace(
        "retry_base_seconds = 1", "retry_base_seconds = 0"
    )
    config.write_text(text)
    script(root / "deploy.sh", 'echo "$SKILLSTAGE_SKILL" >> deployed.txt\necho dep-1\n')
    script(root / "reindex.sh", 'echo "index server down" >&2\nexit 2\n')
    database_url = (
        store_url if store_url.startswith("postgresql") else json.loads(created.stdout)["database"]
    )
    with Store.open(database_url) as store, store.atomic() as tx:
        deploy_id = box.enqueue(tx, "deploy", hook_payload("deploy", "deploy.sh"))
        reindex_id = box.enqueue(tx, "reindex", hook_payload("reindex", "./reindex.sh"))

    if not store_url.startswith("postgresql"):  # the listing does not depend on the store
        listed = cli("outbox")
        assert listed.returncode == 0, listed.stderr
        assert "OUTBOX (2 items: 2 pending)" in listed.stdout
        assert "target: ./reindex.sh" in listed.stdout
        assert "Run `skillstage outbox --retry`" in listed.stdout

    retried = cli("outbox", "--retry", "--json")

    assert retried.returncode == 1, retried.stderr
    report = json.loads(retried.stdout)
    outcomes = {d["id"]: d for d in report["deliveries"]}
    assert outcomes[deploy_id]["ok"] and outcomes[deploy_id]["deployment_id"] == "dep-1"
    assert not outcomes[reindex_id]["ok"]
    assert outcomes[reindex_id]["attempts"] == 2
    assert outcomes[reindex_id]["error"] == "exited with status 2: index server down"
    assert report["counts"] == {"pending": 1, "delivering": 0, "failed": 0, "delivered": 1}
    assert (root / "deployed.txt").read_text() == "auth-v2\n"

    script(root / "reindex.sh", "echo reindexed\n")
    fixed = cli("outbox", "--retry")
    assert fixed.returncode == 0, fixed.stderr
    assert f"✓ #{reindex_id} reindex auth-v2 (./reindex.sh): delivered after 1 attempt" in (
        fixed.stdout
    )
    assert "OUTBOX (2 items: 2 delivered)" in fixed.stdout
    assert (root / "deployed.txt").read_text() == "auth-v2\n"  # not deployed twice
