"""Old-format skills (seed 003 Test Suite 2, "version detection"): FORMAT_V1 in validate, and
`skillstage upgrade` converting v1 to v2 — real files in temporary directories, the CLI as a real
process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from skillstage.api import upgrade, validate
from skillstage.skill.frontmatter import MAX_SKILL_MD_BYTES, parse_skill_md
from skillstage.skill.upgrade import convert, has_frontmatter, name_from_title

V1_BODY = (
    "# PDF Tools\n"
    "\n"
    "Extract text and tables from **PDF** files. Use it when the user hands over a `.pdf`.\n"
    "\n"
    "## Usage\n"
    "\n"
    "```\n"
    "pdftotext in.pdf -\n"
    "```\n"
)


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    return subprocess.run(
        [sys.executable, "-m", "skillstage", *args],
        cwd=cwd,
        env={**environment, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def skill_dir(parent: Path, name: str, file_name: str, content: str | bytes) -> Path:
    """A skill directory with the files seed 000 requires, and `file_name` holding `content`."""
    directory = parent / name
    directory.mkdir(parents=True)
    target = directory / file_name
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content, encoding="utf-8", newline="")
    for script in ("execute.sh", "test.sh"):
        (directory / script).write_text("#!/bin/bash\nexit 0\n")
        (directory / script).chmod(0o755)
    return directory


def body_of(skill_md: bytes) -> bytes:
    """What follows the closing `---` line, as bytes."""
    text = skill_md.decode("utf-8")
    document = parse_skill_md(skill_md, Path("SKILL.md"))
    start = 0
    for _ in range(document.body_first_line - 1):
        start = text.index("\n", start) + 1
    return text[start:].encode("utf-8")


def findings(path: Path, **kwargs: Any) -> list[str]:
    return [f.id for skill in validate([path], **kwargs).skills for f in skill.findings]


# -- v1 shapes upgrade to skills that validate -----------------------------------------------------


@pytest.mark.parametrize("file_name", ["SKILL.md", "skill.md", "prompt.md"])
def test_v1_file_without_frontmatter_upgrades_to_a_valid_skill(
    tmp_path: Path, file_name: str
) -> None:
    directory = skill_dir(tmp_path, "pdf-tools", file_name, V1_BODY)
    (directory / file_name).chmod(0o640)
    assert "FORMAT_V1" in findings(directory)

    report = upgrade([directory], write=True)

    assert report.ok and report.skills[0].status == "upgraded"
    assert sorted(p.name for p in directory.iterdir()) == ["SKILL.md", "execute.sh", "test.sh"]
    new = (directory / "SKILL.md").read_bytes()
    assert body_of(new) == V1_BODY.encode()
    meta = parse_skill_md(new, directory / "SKILL.md").frontmatter
    assert meta == {
        "name": "pdf-tools",
        "version": "1.0.0",
        "description": "Extract text and tables from PDF files. Use it when the user hands "
        "over a .pdf.",
    }
    assert (directory / "SKILL.md").stat().st_mode & 0o777 == 0o640
    assert validate([directory]).ok
    assert upgrade([directory]).skills[0].status == "already-v2"


def test_old_keys_become_todays_with_triggers_in_the_description(tmp_path: Path) -> None:
    old = (
        "---\n"
        "title: Release Notes\n"
        "desc: Writes release notes from merged pull requests.\n"
        "triggers:\n"
        "  - changelog\n"
        "  - release notes\n"
        "# who to ask\n"
        "author: Ana\n"
        "---\n"
        "# Release notes\n\nBody kept.\n"
    )
    directory = skill_dir(tmp_path, "release-notes", "SKILL.md", old)
    assert findings(directory).count("FORMAT_V1") == 1

    result = upgrade([directory], write=True).skills[0]

    assert (result.status, result.name_from, result.description_from) == (
        "upgraded",
        "title",
        "desc",
    )
    new = (directory / "SKILL.md").read_text()
    assert new == (
        "---\n"
        "name: release-notes\n"
        "version: 1.0.0\n"
        "description: Writes release notes from merged pull requests. Use it when the request "
        "mentions changelog or release notes.\n"
        "# who to ask\n"
        "author: Ana\n"
        "---\n"
        "# Release notes\n\nBody kept.\n"
    )
    assert validate([directory]).ok


def test_crlf_and_byte_order_mark_body_kept_byte_for_byte(tmp_path: Path) -> None:
    raw = b"\xef\xbb\xbf" + V1_BODY.replace("\n", "\r\n").encode()
    directory = skill_dir(tmp_path, "pdf-tools", "SKILL.md", raw)
    upgrade([directory], write=True)
    new = (directory / "SKILL.md").read_bytes()
    assert new.startswith(b"---\r\nname: pdf-tools\r\n")
    assert new.endswith(raw[3:]) and body_of(new) == raw[3:]
    assert validate([directory]).ok


def test_name_from_directory_when_the_title_is_not_its_name(tmp_path: Path) -> None:
    directory = skill_dir(tmp_path, "pdf", "SKILL.md", V1_BODY)
    result = run(tmp_path, "upgrade", "pdf", "--write")
    assert result.returncode == 0, result.stderr
    assert "name: pdf (from the directory name)" in result.stdout
    assert "the heading 'PDF Tools' gives 'pdf-tools', not the directory's name" in result.stdout
    assert validate([directory]).ok


# -- the CLI: dry run, diff, write, JSON -----------------------------------------------------------


def test_dry_run_shows_a_diff_and_changes_nothing(tmp_path: Path) -> None:
    directory = skill_dir(tmp_path, "pdf-tools", "prompt.md", V1_BODY)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}
    for args in ([], ["--dry-run"]):
        result = run(tmp_path, "upgrade", "pdf-tools", *args)
        assert result.returncode == 0, result.stderr
        assert "--- a/pdf-tools/prompt.md\n+++ b/pdf-tools/SKILL.md\n" in result.stdout
        assert "+name: pdf-tools\n+version: 1.0.0\n" in result.stdout
        assert " # PDF Tools\n" in result.stdout  # the body: context, not changed
        assert "dry run: nothing was written" in result.stdout
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}
    assert after == before


def test_write_is_atomic_and_json_reports_it(tmp_path: Path) -> None:
    directory = skill_dir(tmp_path, "pdf-tools", "SKILL.md", V1_BODY)
    inode = (directory / "SKILL.md").stat().st_ino
    result = run(tmp_path, "upgrade", "pdf-tools", "--write", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"] == {
        "upgraded": 1,
        "would-upgrade": 0,
        "already-v2": 0,
        "refused": 0,
    }
    (skill,) = report["skills"]
    assert (skill["source"], skill["target"], skill["name"]) == (
        "SKILL.md",
        "SKILL.md",
        "pdf-tools",
    )
    # A new file renamed over the old one (no temporary file left), not the old one rewritten.
    assert (directory / "SKILL.md").stat().st_ino != inode
    assert sorted(p.name for p in directory.iterdir()) == ["SKILL.md", "execute.sh", "test.sh"]


def test_v2_skill_is_left_alone(tmp_path: Path) -> None:
    text = "---\nname: fine\nversion: 1.0.0\ndescription: Fine. Use it when testing.\n---\n# x\n"
    directory = skill_dir(tmp_path, "fine", "SKILL.md", text)
    result = run(tmp_path, "upgrade", "fine", "--write")
    assert result.returncode == 0
    assert "fine: already v2 (today's format); nothing to do" in result.stdout
    assert (directory / "SKILL.md").read_text() == text
    assert "FORMAT_V1" not in findings(directory)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    skill_dir(tmp_path, "pdf-tools", "SKILL.md", V1_BODY)
    both = run(tmp_path, "upgrade", "pdf-tools", "--dry-run", "--write")
    assert both.returncode == 2 and "contradict" in both.stderr
    missing = run(tmp_path, "upgrade", "nowhere")
    assert missing.returncode == 2 and "nowhere does not exist" in missing.stderr


# -- refusals --------------------------------------------------------------------------------------


def test_refused_when_neither_title_nor_directory_gives_a_name(tmp_path: Path) -> None:
    directory = skill_dir(tmp_path, "My Skill!", "SKILL.md", "# !!!\n\nDoes things.\n")
    result = run(tmp_path, "upgrade", "My Skill!", "--write")
    assert result.returncode == 1
    assert "refused: My Skill!: no valid skill name: the heading '!!!' gives no valid name" in (
        result.stdout
    )
    assert "rename the directory, e.g. to 'my-skill'" in result.stdout
    assert (directory / "SKILL.md").read_text() == "# !!!\n\nDoes things.\n"


def test_refused_when_the_result_would_not_validate(tmp_path: Path) -> None:
    # The title makes a good name, but not the directory's: the spec wants them equal.
    directory = skill_dir(tmp_path, "PDF_Tools", "SKILL.md", V1_BODY)
    result = run(tmp_path, "upgrade", "PDF_Tools", "--write", "--json")
    assert result.returncode == 1
    (skill,) = json.loads(result.stdout)["skills"]
    assert skill["status"] == "refused"
    assert skill["error"]["code"] == "UPGRADE_RESULT_INVALID"
    (finding,) = skill["findings"]
    assert finding["id"] == "NAME_MISMATCH_DIRECTORY"
    assert finding["hint"] == "rename the directory to 'pdf-tools' or set 'name: PDF_Tools'"
    assert (directory / "SKILL.md").read_text() == V1_BODY


def test_refused_when_desc_and_description_differ(tmp_path: Path) -> None:
    text = "---\nname: two\ndesc: One thing.\ndescription: Another.\n---\n"
    directory = skill_dir(tmp_path, "two", "SKILL.md", text)
    (result,) = upgrade([directory], write=True).skills
    assert (result.status, result.code, result.line) == ("refused", "DESCRIPTION_CONFLICT", 3)
    assert (directory / "SKILL.md").read_text() == text


@pytest.mark.parametrize(
    ("content", "code", "words"),
    [
        (b"# Title\n\nCaf\xe9 au lait.\n", "SKILL_MD_NOT_UTF8", "not valid UTF-8 (byte 0xe9"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "SKILL_MD_BINARY", "holds a NUL byte"),
        (b"", "SKILL_MD_EMPTY", "is empty"),
        (b" \n\n\t\n", "SKILL_MD_EMPTY", "is empty"),
        (b"# Only a title\n", "DESCRIPTION_UNDERIVABLE", "no paragraph"),
        (b"# Huge\n\n" + b"x" * MAX_SKILL_MD_BYTES, "SKILL_MD_TOO_LARGE", "limit of a skill file"),
    ],
)
def test_malformed_empty_and_huge_files_are_refused_clearly(
    tmp_path: Path, content: bytes, code: str, words: str
) -> None:
    directory = skill_dir(tmp_path, "odd", "SKILL.md", content)
    (result,) = upgrade([directory], write=True).skills
    assert (result.status, result.code) == ("refused", code)
    assert words in (result.reason or "") and result.hint
    assert (directory / "SKILL.md").read_bytes() == content
    # validate reports these as what they are, not as an old format (a title alone is one)
    assert ("FORMAT_V1" in findings(directory)) == (code == "DESCRIPTION_UNDERIVABLE")


def test_a_file_near_the_limit_upgrades_until_the_frontmatter_pushes_it_over(
    tmp_path: Path,
) -> None:
    filler = "Long reference line.\n" * ((MAX_SKILL_MD_BYTES - 200) // 21)
    directory = skill_dir(tmp_path, "big", "SKILL.md", "# Big\n\nBig skill.\n\n" + filler)
    (result,) = upgrade([directory]).skills
    assert result.status == "would-upgrade"
    directory = skill_dir(
        tmp_path, "bigger", "SKILL.md", "# Bigger\n\nBig.\n\n" + filler + "x" * 150
    )
    (result,) = upgrade([directory]).skills
    assert result.status == "refused"
    assert [f.id for f in result.findings] == ["SKILL_MD_TOO_LARGE"]


# -- validate reports the old format ---------------------------------------------------------------


def test_validate_json_reports_format_v1_with_the_upgrade_hint(tmp_path: Path) -> None:
    skill_dir(tmp_path, "pdf-tools", "SKILL.md", V1_BODY)
    result = subprocess.run(
        [sys.executable, "-m", "skillstage", "validate", "pdf-tools", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    (skill,) = json.loads(result.stdout)["skills"]
    (finding,) = [f for f in skill["findings"] if f["severity"] == "error"]
    assert finding["id"] == "FORMAT_V1" and finding["rule_set"] == "parse"
    assert finding["hint"].startswith("skillstage upgrade pdf-tools")
    # the spec-only rules say the same (a skill outside skillstage is no less old)
    assert "FORMAT_V1" in findings(tmp_path / "pdf-tools", spec_only=True)


# -- the pure parts --------------------------------------------------------------------------------


def test_detection_and_names() -> None:
    assert has_frontmatter(b"---\nname: x\n") and has_frontmatter(b"\xef\xbb\xbf---\r\n")
    assert not has_frontmatter(b"# Title\n") and not has_frontmatter(b"----\n")
    assert name_from_title("Ünïcode PDF Tools!") == "unicode-pdf-tools"
    assert name_from_title("***") == ""
    assert len(name_from_title("word " * 40)) <= 64


def test_long_first_paragraph_keeps_whole_sentences() -> None:
    paragraph = " ".join(f"Sentence number {i} says a little more." for i in range(60))
    conversion = convert(
        f"# Wordy\n\n{paragraph}\n".encode(), source="SKILL.md", expected_name="wordy"
    )
    assert conversion is not None
    description = parse_skill_md(conversion.new, Path("SKILL.md")).frontmatter["description"]
    assert len(description) <= 1024 and description.endswith("more.")
    assert paragraph.startswith(description)
    assert any("first sentences" in note for note in conversion.notes)


def test_setext_title_and_paragraph_after_html_and_lists() -> None:
    text = "<!-- generated -->\nRelease Notes\n=============\n\n- a list\n\n> Writes notes.\n"
    conversion = convert(text.encode(), source="prompt.md", expected_name="release-notes")
    assert conversion is not None
    meta = parse_skill_md(conversion.new, Path("SKILL.md")).frontmatter
    assert (meta["name"], meta["description"]) == ("release-notes", "Writes notes.")
    assert conversion.name_from == "heading"


def test_a_tree_is_searched(tmp_path: Path) -> None:
    skill_dir(tmp_path / "tree", "one", "SKILL.md", "# One\n\nFirst.\n")
    skill_dir(tmp_path / "tree", "two", "skill.md", "# Two\n\nSecond.\n")
    report = upgrade([tmp_path / "tree"], write=True)
    assert [(s.path.name, s.status) for s in report.skills] == [
        ("one", "upgraded"),
        ("two", "upgraded"),
    ]
    assert validate([tmp_path / "tree"]).ok


def test_title_and_triggers_without_a_description_take_the_first_paragraph(
    tmp_path: Path,
) -> None:
    text = "---\ntitle: Notes\ntriggers: changelog, notes\nlicense: MIT\n---\n# Notes\n\nWrites.\n"
    directory = skill_dir(tmp_path, "notes", "SKILL.md", text)
    upgrade([directory], write=True)
    assert (directory / "SKILL.md").read_text() == (
        "---\nname: notes\nversion: 1.0.0\n"
        "description: Writes. Use it when the request mentions changelog or notes.\n"
        "license: MIT\n---\n# Notes\n\nWrites.\n"
    )
    assert validate([directory]).ok


def test_upgrade_hint_quotes_a_path_with_spaces(tmp_path: Path) -> None:
    skill_dir(tmp_path, "my notes", "SKILL.md", "# Notes\n\nWrites.\n")
    (skill,) = validate([tmp_path / "my notes"]).skills
    (finding,) = [f for f in skill.findings if f.id == "FORMAT_V1"]
    assert finding.hint is not None and "skillstage upgrade '" in finding.hint
    assert finding.hint.split("'")[1].endswith("my notes")


def test_a_fifo_in_the_skill_is_reported_not_waited_on(tmp_path: Path) -> None:
    directory = skill_dir(tmp_path, "pdf-tools", "SKILL.md", V1_BODY)
    os.mkfifo(directory / "pipe")
    (result,) = upgrade([directory], write=True).skills
    assert result.status == "refused"
    assert result.findings and all(f.file == "pipe" for f in result.findings)
    assert (directory / "SKILL.md").read_text() == V1_BODY


def test_a_file_changed_after_the_check_is_not_overwritten(tmp_path: Path) -> None:
    from skillstage.skill.upgrade import UpgradeRefused, _write_atomically

    directory = skill_dir(tmp_path, "pdf-tools", "SKILL.md", V1_BODY)
    conversion = convert(V1_BODY.encode(), source="SKILL.md", expected_name="pdf-tools")
    assert conversion is not None
    (directory / "SKILL.md").write_text(V1_BODY + "edited\n")
    with pytest.raises(UpgradeRefused, match="changed while it was being upgraded"):
        _write_atomically(directory, conversion, directory / "SKILL.md")
    assert (directory / "SKILL.md").read_text() == V1_BODY + "edited\n"
    assert sorted(p.name for p in directory.iterdir()) == ["SKILL.md", "execute.sh", "test.sh"]


def test_prompt_md_with_frontmatter_is_renamed_unchanged(tmp_path: Path) -> None:
    text = "---\nname: fine\nversion: 1.0.0\ndescription: Fine. Use it when testing.\n---\n# x\n"
    directory = skill_dir(tmp_path, "fine", "prompt.md", text)
    (result,) = upgrade([directory], write=True).skills
    assert result.status == "upgraded" and result.notes == ["prompt.md becomes SKILL.md, unchanged"]
    assert (directory / "SKILL.md").read_text() == text
    assert not (directory / "prompt.md").exists()
