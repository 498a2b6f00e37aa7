"""Seed 001 Step 5's maturity metadata: `[maturity] enabled` rewrites `__maturity__`,
`Maturity Stage:` and the README's `**Status:**` in the promoted copy, inside the promotion's git
commit; the digest leaves those values out, so doctor sees no drift and the next promotion's
conflicts gate passes. Real git repositories, real stores."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import ConfigError, Project, load_config_file
from skillstage.lifecycle.doctor import run_doctor
from skillstage.skill.files import scan_skill_files
from skillstage.skill.maturity import digest_view, rewrite_maturity
from tests.skilltree import write_skill

INIT = '''"""Orchestration

Maturity Stage: {stage}
Coverage: 75%
"""

__version__ = "1.0.0"
__maturity__ = "{stage}"
'''
README = "# Component: orchestration\n\n**Status:** {stage}\n**Coverage:** 75%\n"


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    ).stdout


def digest(path: Path) -> str | None:
    return scan_skill_files(path, max_files=1000, max_total_bytes=10_000_000).digest


def labelled(parent: Path, stage: str) -> Path:
    """A skill with seed 001's maturity lines saying `stage`."""
    return write_skill(
        parent,
        "orchestration",
        files={
            "pkg/__init__.py": INIT.format(stage=stage),
            "README.md": README.format(stage=stage),
        },
    )


def test_the_digest_leaves_out_maturity_values_and_nothing_else(tmp_path: Path) -> None:
    one = labelled(tmp_path / "a", "development")
    two = labelled(tmp_path / "b", "production")
    assert digest(one) == digest(two)
    # Any other change still counts, in the same files and lines around them.
    (two / "README.md").write_text(README.format(stage="production").replace("75%", "76%"))
    assert digest(one) != digest(two)
    (two / "README.md").write_text(README.format(stage="development"))
    (two / "pkg/__init__.py").write_text(INIT.format(stage="development") + "x = 1\n")
    assert digest(one) != digest(two)
    # The same lines in another file are content.
    assert digest_view("notes.md", b"**Status:** a") == b"**Status:** a"
    assert digest_view("pkg/__init__.py", b'__maturity__ = "a"\n') == b'__maturity__ = ""\n'
    assert digest_view("README.md", b"**Status:** draft\r\n") == b"**Status:**\r\n"


def test_rewrite_changes_only_maturity_lines_of_the_chosen_files(tmp_path: Path) -> None:
    skill = write_skill(
        tmp_path,
        "orchestration",
        files={
            "pkg/__init__.py": INIT.format(stage="development"),
            "pkg/other.py": '__maturity__ = "development"\n',
            "README.md": README.format(stage="development"),
        },
    )
    (skill / "pkg/__init__.py").chmod(0o640)
    changed = rewrite_maturity(skill, "staging", ["__init__.py"])
    assert changed == ["pkg/__init__.py"]
    assert (skill / "pkg/__init__.py").read_text() == INIT.format(stage="staging")
    assert (skill / "pkg/__init__.py").stat().st_mode & 0o777 == 0o640
    assert (skill / "pkg/other.py").read_text() == '__maturity__ = "development"\n'
    assert (skill / "README.md").read_text() == README.format(stage="development")
    assert rewrite_maturity(skill, "staging") == ["README.md"]
    assert (skill / "README.md").read_text() == README.format(stage="staging")
    assert rewrite_maturity(skill, "staging") == []  # already says so: nothing written


def _project(
    root: Path, monkeypatch: pytest.MonkeyPatch, store_url: str, more: str, *, enabled: bool = False
) -> Project:
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    git(root, "init", "-q")
    git(root, "config", "user.name", "Test")
    git(root, "config", "user.email", "test@example.com")
    api.init(root)
    config = root / "skillstage.toml"
    text = config.read_text()
    assert "[maturity]\nenabled = false\n" in text  # init writes the section, off
    if enabled:
        text = text.replace("[maturity]\nenabled = false\n", "[maturity]\nenabled = true\n")
    config.write_text(text + more)
    (root / ".gitignore").write_text(".skillstage/\n")
    labelled(root / ".claude/skills/prototype", "prototype")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    return load_config_file(config)


def test_promotions_rewrite_the_labels_in_their_commits_without_drift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str
) -> None:
    project = _project(
        tmp_path,
        monkeypatch,
        store_url,
        '\n[maturity.labels]\nproduction = "production (GA)"\n',
        enabled=True,
    )
    (staged,) = api.promote(project, ["orchestration"], actor="tester", git_commit=True)
    assert staged.success and staged.commit_hash
    live = project.stage_path("staged", "orchestration")
    # the stage's label ("staging"), not its name ("staged")
    assert (live / "pkg/__init__.py").read_text() == INIT.format(stage="staging")
    assert (live / "README.md").read_text() == README.format(stage="staging")
    committed = git(
        tmp_path, "show", f"{staged.commit_hash}:.claude/skills/staging/orchestration/README.md"
    )
    assert committed == README.format(stage="staging")
    assert git(tmp_path, "status", "--porcelain", ".claude") == ""
    assert digest(live) == staged.digest  # the store's record is what is live
    doctor = run_doctor(project)
    assert doctor.ok, [f.message for f in doctor.findings]

    (done,) = api.promote(project, ["orchestration"], actor="tester", git_commit=True)
    gates = {g.gate: g.status for g in done.gates}
    assert done.success and gates["conflicts"] == "pass"
    assert done.digest == staged.digest  # one version, one digest in every stage
    live = project.stage_path("production", "orchestration")
    assert '__maturity__ = "production (GA)"' in (live / "pkg/__init__.py").read_text()
    assert "Maturity Stage: production (GA)\n" in (live / "pkg/__init__.py").read_text()
    shown = git(tmp_path, "show", "--name-only", "--format=", "HEAD").split()
    assert ".claude/skills/orchestration/pkg/__init__.py" in shown
    assert run_doctor(project).ok
    events = api.history(project, "orchestration")
    promoted = next(e for e in events if e.kind == "promote")
    assert promoted.details["maturity_files"] == ["README.md", "pkg/__init__.py"]


def test_without_a_git_commit_or_when_not_enabled_nothing_is_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str
) -> None:
    project = _project(tmp_path, monkeypatch, store_url, "", enabled=True)
    (result,) = api.promote(project, ["orchestration"], actor="tester")
    assert result.success
    live = project.stage_path("staged", "orchestration")
    assert (live / "README.md").read_text() == README.format(stage="prototype")


def test_off_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> None:
    project = _project(tmp_path, monkeypatch, store_url, "")
    (result,) = api.promote(project, ["orchestration"], actor="tester", git_commit=True)
    assert result.success
    live = project.stage_path("staged", "orchestration")
    assert (live / "pkg/__init__.py").read_text() == INIT.format(stage="prototype")


def test_a_label_for_an_unknown_stage_or_file_is_refused(tmp_path: Path) -> None:
    api.init(tmp_path)
    config = tmp_path / "skillstage.toml"
    base = config.read_text()
    config.write_text(base + '\n[maturity.labels]\nstaging = "x"\n')
    with pytest.raises(ConfigError, match="'maturity': labels names stage 'staging'"):
        load_config_file(config)
    config.write_text(base.replace('files = ["__init__.py", "README.md"]', 'files = ["setup.py"]'))
    with pytest.raises(ConfigError, match="maturity"):
        load_config_file(config)
    config.write_text(base + '\n[maturity.labels]\nstaged = "say \\"so\\""\n')
    with pytest.raises(ConfigError, match="maturity"):
        load_config_file(config)
