"""Seed 002 §6's registry file: rewritten after every move and rollout change, in seed 002's
shape, from the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.store import Store
from skillstage.store.rollouts import generation
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


def _registry(project: Project) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(project.registry_file.read_text())
    return document


def test_a_promotion_writes_the_registry_in_seed_002s_shape(project: Project) -> None:
    write_skill(project.root / STAGING, "auth-v2", extra={"metadata": {"primary_agent": "gemma"}})
    assert not project.registry_file.exists()
    api.promote(project, ["auth-v2"], to="production")
    registry = _registry(project)
    assert registry["version"] == "1.0"
    entry = registry["skills"]["auth-v2"]
    assert entry["promotion_state"] == "production"
    assert entry["location"] == ".claude/skills/auth-v2/"
    assert entry["primary_agent"] == "gemma"
    assert entry["metrics_path"] == ".skillstage/metrics/auth-v2_executions.jsonl"
    assert entry["last_promotion"].endswith("Z")
    assert entry["last_rollback"] is None
    assert entry["version"] == "1.0.0" and len(entry["digest"]) == 64
    assert entry["rollout"] is None
    assert set(entry["stages"]) == {"production"}


def test_rollout_changes_and_rollbacks_rewrite_it(project: Project) -> None:
    staging = project.root / STAGING
    write_skill(staging, "auth-v2")
    api.promote(project, ["auth-v2"], to="production")
    write_skill(staging, "auth-v2", extra={"version": "1.1.0"})
    api.rollout_start(project, "auth-v2", step_min_duration="0s", step_min_executions=5)
    entry = _registry(project)["skills"]["auth-v2"]
    assert entry["rollout"]["candidate_version"] == "1.1.0"
    assert entry["rollout"]["weight"] == 10 and entry["rollout"]["state"] == "active"
    api.rollout_change(project, "pause", "auth-v2")
    assert _registry(project)["skills"]["auth-v2"]["rollout"]["weight"] == 0
    api.rollout_change(project, "abort", "auth-v2", reason="test")
    assert _registry(project)["skills"]["auth-v2"]["rollout"] is None
    api.promote(project, ["auth-v2"], to="production", overwrite=True)
    assert _registry(project)["skills"]["auth-v2"]["version"] == "1.1.0"
    api.rollback(project, "auth-v2", reason="fidelity dropped")
    entry = _registry(project)["skills"]["auth-v2"]
    assert entry["version"] == "1.0.0"
    assert entry["last_rollback"] is not None


def test_the_registry_path_is_configurable(project: Project) -> None:
    config = project.root / "skillstage.toml"
    config.write_text(
        config.read_text().replace(
            '# registry_path = ".skillstage/skills_registry.json"',
            'registry_path = "exports/registry.json"',
        )
    )
    project = load_config_file(config)
    assert project.registry_file == project.root / "exports" / "registry.json"
    write_skill(project.root / STAGING, "auth-v2")
    api.promote(project, ["auth-v2"], to="production")
    assert "auth-v2" in _registry(project)["skills"]


def test_a_promotion_of_several_skills_ends_with_the_registry_of_all(project: Project) -> None:
    # Exported once at the end of the call: the file names every skill, at the store's
    # generation after the last move.
    staging = project.root / STAGING
    names = [f"skill-{n}" for n in range(4)]
    for name in names:
        write_skill(staging, name)
    results = api.promote(project, names, to="production")
    assert all(r.success for r in results)
    registry = _registry(project)
    assert set(registry["skills"]) == set(names)
    with Store.open(project.database_url) as store, store.reading() as tx:
        assert registry["generation"] == generation(tx)
    assert not list(project.registry_file.parent.glob(".skillstage-writing-*"))
