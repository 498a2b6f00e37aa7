"""api.validate across many skills: worker processes give the same report as one process."""

from __future__ import annotations

from pathlib import Path

from skillstage import api
from tests.skilltree import write_skill


def test_workers_give_the_same_report_as_one_process(tmp_path: Path) -> None:
    count = api.PARALLEL_FROM + 50
    for index in range(count):
        extra = {"version": "1.0"} if index % 7 == 0 else {}
        if index % 11 == 0:
            extra["dependencies"] = [f"skill-{index + 1:04d}", "missing-one"]
        write_skill(tmp_path / f"group-{index % 5}", f"skill-{index:04d}", extra=extra)
    one = api.validate([tmp_path], jobs=1)
    two = api.validate([tmp_path], jobs=2)
    assert len(one.skills) == count
    assert [r.to_dict() for r in one.skills] == [r.to_dict() for r in two.skills]
    assert one.errors == two.errors > 0
    found = {f.id for r in two.skills for f in r.findings}
    assert {"VERSION_NOT_SEMVER", "DEPENDENCY_MISSING"} <= found


def test_a_skill_given_twice_is_checked_once(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a")
    assert len(api.validate([skill, tmp_path, skill]).skills) == 1


def test_a_new_project_with_no_skills_yet_validates_clean(tmp_path: Path) -> None:
    """CI on a new repository: --all, the stage folders and the project root find no skill, and
    none of them is taken for a skill missing its SKILL.md."""
    api.init(tmp_path)
    from skillstage.config import load_config_file

    project = load_config_file(tmp_path / "skillstage.toml")
    for paths in ([], [tmp_path / ".claude" / "skills"], [tmp_path]):
        report = api.validate(paths, project=project, all_stages=not paths)
        assert (report.skills, report.ok) == ([], True)
    # A directory in a stage folder is a skill, with its SKILL.md or not.
    (tmp_path / ".claude" / "skills" / "prototype" / "foo").mkdir()
    for paths in ([tmp_path / ".claude" / "skills" / "prototype"], [tmp_path]):
        (broken,) = api.validate(paths, project=project).skills
        assert broken.name is None or broken.path.name == "foo"
        assert not broken.ok and "SKILL_MD_MISSING" in {f.id for f in broken.findings}
    # Outside the stage folders, an empty directory is still a skill missing its SKILL.md.
    (tmp_path / "f1").mkdir()
    (lonely,) = api.validate([tmp_path / "f1"], project=project).skills
    assert "SKILL_MD_MISSING" in {f.id for f in lonely.findings}


def test_findings_come_file_by_file_in_line_order(tmp_path: Path) -> None:
    skill = tmp_path / "bad"
    skill.mkdir()
    (skill / "SKILL.md").write_text(
        "---\nname: Bad_Name\ndescription: x\nversion: 1.0\nfoo: bar\n---\n# T\n"
    )
    (report,) = api.validate([skill]).skills
    where = [(f.file, f.line) for f in report.findings]
    in_skill_md = [line for file, line in where if file == "SKILL.md"]
    assert in_skill_md == sorted(in_skill_md, key=lambda line: line or 0)
    assert in_skill_md[0] == 2 and in_skill_md[-1] == 5  # the name first, `foo:` last
    files = [file for file, _ in where]
    assert files == sorted(files, key=files.index)  # each file's findings together
    strict = api.validate([skill], strict=True).skills[0]
    assert [(f.file, f.line) for f in strict.findings] == where
    assert {f.severity for f in strict.findings} == {"error"}
