from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.store import Store


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


@pytest.fixture
def opened(project: Project) -> Iterator[Store]:
    with Store.open(project.database_url) as store:
        yield store
