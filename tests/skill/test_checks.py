"""Every validation rule, on real skill directories: what it finds, where, and the fix it offers."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from skillstage.config import ValidationPolicy
from skillstage.skill.checks import (
    SkillReport,
    check_dependencies,
    check_skill,
    find_cycles,
    run_skill_tests,
)
from tests.skilltree import write_skill

POLICY = ValidationPolicy()


def check(directory: Path, **kwargs: Any) -> SkillReport:
    return check_skill(directory, kwargs.pop("policy", POLICY), **kwargs)


def ids(report: SkillReport) -> list[str]:
    return sorted(finding.id for finding in report.findings)


def finding(report: SkillReport, id: str):  # type: ignore[no-untyped-def]
    matches = [f for f in report.findings if f.id == id]
    assert matches, f"no {id} in {ids(report)}"
    return matches[0]


def test_a_complete_skill_passes_clean(tmp_path: Path) -> None:
    report = check(write_skill(tmp_path, "auth-v2", files={"README.md": "r"}))
    assert report.findings == []
    assert report.ok
    assert (report.name, report.version) == ("auth-v2", "1.0.0")
    assert report.digest is not None


# -- content (seed 000 §1) -------------------------------------------------------------------------


def test_skill_md_missing(tmp_path: Path) -> None:
    directory = tmp_path / "skill-name"
    directory.mkdir()
    found = finding(check(directory), "SKILL_MD_MISSING")
    assert found.message == "Missing required file: SKILL.md"
    assert found.hint is not None and "name: skill-name" in found.hint


def test_a_directory_named_skill_md_is_not_called_missing(tmp_path: Path) -> None:
    (tmp_path / "skill-name" / "SKILL.md").mkdir(parents=True)
    found = finding(check(tmp_path / "skill-name"), "SKILL_MD_MISSING")
    assert found.message == "SKILL.md is a directory, not a file"
    assert found.hint is not None and found.hint.startswith(
        f"move the directory {tmp_path / 'skill-name' / 'SKILL.md'} away, then: create "
    )


def test_execute_sh_missing(tmp_path: Path) -> None:
    found = finding(check(write_skill(tmp_path, "a", execute=False)), "REQUIRED_FILE_MISSING")
    assert found.message == "Missing required file: execute.sh"
    assert "chmod +x" in (found.hint or "")


def test_execute_not_executable_offers_chmod(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a")
    (skill / "execute.sh").chmod(0o644)
    found = finding(check(skill), "EXECUTE_NOT_EXECUTABLE")
    assert found.message == "execute.sh is not executable"
    assert found.hint == f"chmod +x {skill / 'execute.sh'}"
    assert found.severity == "error"


def test_test_sh_not_executable(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a")
    (skill / "test.sh").chmod(0o644)
    assert finding(check(skill), "TEST_NOT_EXECUTABLE").severity == "error"


def test_missing_test_sh_is_a_warning(tmp_path: Path) -> None:
    report = check(write_skill(tmp_path, "a", test=None))
    found = finding(report, "OPTIONAL_FILE_MISSING")
    assert (found.severity, found.message) == ("warning", "Optional file missing: test.sh")
    assert report.ok


def test_required_files_are_policy(tmp_path: Path) -> None:
    policy = ValidationPolicy(required_files=["SKILL.md"], recommended_files=[])
    assert check(write_skill(tmp_path, "a", execute=False, test=None), policy=policy).findings == []


# -- schema (seed 000 §2) --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1.0.0", "1.0", "1.0.0.0", "01.0.0", "latest"])
def test_version_must_be_strict_semver(tmp_path: Path, version: str) -> None:
    report = check(write_skill(tmp_path, "a", extra={"version": version}))
    found = finding(report, "VERSION_NOT_SEMVER")
    assert found.line == 3
    assert "MAJOR.MINOR.PATCH" in found.message


@pytest.mark.parametrize("version", ["1.0.0", "2.3.1", "10.0.0", "1.0.0-rc.1"])
def test_valid_versions(tmp_path: Path, version: str) -> None:
    assert check(write_skill(tmp_path, "a", extra={"version": version})).version == version


def test_a_version_yaml_reads_as_a_number_is_explained(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a", skill_md="---\nname: a\nversion: 1.0\ndescription: d\n---\n")
    found = finding(check(skill), "VERSION_NOT_SEMVER")
    assert "YAML read it as the number 1.0" in found.message
    assert "version: 1.0.0" in (found.hint or "")


def test_version_may_come_from_metadata(tmp_path: Path) -> None:
    frontmatter = {"name": "a", "description": "d", "metadata": {"version": "2.1.0"}}
    assert check(write_skill(tmp_path, "a", frontmatter=frontmatter)).version == "2.1.0"


def test_version_missing(tmp_path: Path) -> None:
    report = check(write_skill(tmp_path, "a", frontmatter={"name": "a", "description": "d"}))
    assert "VERSION_MISSING" in ids(report)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"author": ["x"]}, "AUTHOR_WRONG_TYPE"),
        ({"tags": "one"}, "TAGS_WRONG_TYPE"),
        ({"dependencies": "b"}, "DEPENDENCIES_WRONG_TYPE"),
        ({"metadata": "hello"}, "METADATA_WRONG_TYPE"),
        ({"metadata": {"k": ["x"]}}, "METADATA_WRONG_TYPE"),
        ({"sla_override": "maybe"}, "SLA_OVERRIDE_WRONG_TYPE"),
    ],
)
def test_field_types(tmp_path: Path, extra: dict[str, Any], expected: str) -> None:
    found = finding(check(write_skill(tmp_path, "a", extra=extra)), expected)
    assert found.severity == "error" and found.line is not None


def test_each_wrong_value_is_one_finding(tmp_path: Path) -> None:
    report = check(write_skill(tmp_path, "a", extra={"tags": ["a", 1, 2], "allowed-tools": 5}))
    messages = sorted(f.message for f in report.findings if f.id.endswith("_WRONG_TYPE"))
    assert messages == [
        "'allowed-tools' must be a string or a list of strings, not the number 5",
        "'tags.1' must be a list of strings, not the number 1",
        "'tags.2' must be a list of strings, not the number 2",
    ]


def test_non_string_metadata_values_warn_and_read_as_strings(tmp_path: Path) -> None:
    skill = write_skill(
        tmp_path,
        "a",
        skill_md="---\nname: a\ndescription: d\nmetadata:\n  version: 1.0.0\n  stable: true\n---\n",
    )
    report = check(skill)
    assert ids(report) == ["METADATA_VALUE_NOT_STRING"]
    warning = finding(report, "METADATA_VALUE_NOT_STRING")
    assert warning.severity == "warning" and 'read as "true"' in warning.message
    assert report.version == "1.0.0" and report.ok


def test_null_name_and_description_are_empty(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a", skill_md="---\nname:\nversion: 1.0.0\ndescription:\n---\n")
    assert {"NAME_EMPTY", "DESCRIPTION_EMPTY"} <= set(ids(check(skill)))


def test_sla_override_needs_a_reason(tmp_path: Path) -> None:
    report = check(write_skill(tmp_path, "a", extra={"sla_override": True}))
    assert {"SLA_OVERRIDE_REASON_MISSING", "SLA_OVERRIDE_NO_EXPIRY"} <= set(ids(report))


def test_complete_sla_override_is_fine(tmp_path: Path) -> None:
    extra = {
        "sla_override": True,
        "sla_override_reason": "Awaiting security review",
        "sla_override_expires": "2025-11-20",
    }
    assert check(write_skill(tmp_path, "a", extra=extra)).findings == []


# -- spec ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("My-Skill", "NAME_NOT_LOWERCASE"),
        ("-skill", "NAME_HYPHEN_EDGE"),
        ("skill-", "NAME_HYPHEN_EDGE"),
        ("my--skill", "NAME_DOUBLE_HYPHEN"),
        ("my_skill", "NAME_INVALID_CHARS"),
        ("café", "NAME_INVALID_CHARS"),
        ("a" * 65, "NAME_TOO_LONG"),
    ],
)
def test_name_rules(tmp_path: Path, name: str, expected: str) -> None:
    report = check(write_skill(tmp_path, name))
    assert expected in ids(report)
    assert "NAME_MISMATCH_DIRECTORY" not in ids(report)


def test_a_name_with_accents_is_suggested_without_them(tmp_path: Path) -> None:
    found = finding(check(write_skill(tmp_path, "ünï-café")), "NAME_INVALID_CHARS")
    assert (found.hint or "").endswith("e.g. uni-cafe")  # not "n-caf"


def test_name_must_match_directory(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "auth-v2", extra={"name": "authentication"})
    found = finding(check(skill), "NAME_MISMATCH_DIRECTORY")
    assert found.line == 2
    assert "rename the directory to 'authentication'" in (found.hint or "")


def test_name_is_compared_after_nfkc(tmp_path: Path) -> None:
    # U+FB01 (ﬁ ligature) normalises to "fi" under NFKC.
    skill = write_skill(tmp_path, "file-tool", extra={"name": "\ufb01le-tool"})
    assert "NAME_MISMATCH_DIRECTORY" not in ids(check(skill))


def test_expected_name_may_come_from_the_stage_template(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "auth_staged", extra={"name": "auth"})
    assert "NAME_MISMATCH_DIRECTORY" not in ids(check(skill, expected_name="auth"))


def test_description_rules(tmp_path: Path) -> None:
    too_long = check(write_skill(tmp_path / "1", "a", extra={"description": "d" * 1025}))
    assert "DESCRIPTION_TOO_LONG" in ids(too_long)
    empty = check(write_skill(tmp_path / "2", "a", extra={"description": "  "}))
    assert "DESCRIPTION_EMPTY" in ids(empty)
    missing = check(write_skill(tmp_path / "3", "a", frontmatter={"name": "a", "version": "1.0.0"}))
    assert "DESCRIPTION_MISSING" in ids(missing)
    assert check(write_skill(tmp_path / "4", "a", extra={"description": "d" * 1024})).ok


def test_compatibility_limit(tmp_path: Path) -> None:
    report = check(write_skill(tmp_path, "a", extra={"compatibility": "c" * 501}))
    assert "COMPATIBILITY_TOO_LONG" in ids(report)


def test_name_of_the_wrong_type(tmp_path: Path) -> None:
    skill = write_skill(
        tmp_path, "a", skill_md="---\nname: true\nversion: 1.0.0\ndescription: d\n---\n"
    )
    found = finding(check(skill), "NAME_WRONG_TYPE")
    assert "not the boolean true" in found.message


def test_platform_extension_keys_warn(tmp_path: Path) -> None:
    report = check(write_skill(tmp_path, "a", extra={"when_to_use": "x", "user-invocable": True}))
    assert ids(report) == ["FIELD_PLATFORM_EXTENSION", "FIELD_PLATFORM_EXTENSION"]
    assert report.ok
    escalated = [f.escalated() for f in report.findings]
    assert {f.severity for f in escalated} == {"error"}  # what --strict does


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path: Path) -> None:
    found = finding(check(write_skill(tmp_path, "a", extra={"descripton": "x"})), "FIELD_UNKNOWN")
    assert found.hint == "did you mean 'description'?"


def test_allowed_extra_fields_are_accepted(tmp_path: Path) -> None:
    policy = ValidationPolicy(allowed_extra_fields=["owner_team"])
    assert check(write_skill(tmp_path, "a", extra={"owner_team": "x"}), policy=policy).ok


def test_body_over_500_lines_warns(tmp_path: Path) -> None:
    report = check(write_skill(tmp_path, "a", body="line\n" * 501))
    assert finding(report, "BODY_TOO_LONG").severity == "warning"
    assert check(write_skill(tmp_path, "b", body="line\n" * 500)).findings == []


def test_links_to_missing_files(tmp_path: Path) -> None:
    body = (
        "See [guide](references/guide.md), [api](references/api.md#top) and [web](https://x.io).\n"
        "```\n[example](not-checked.md)\n```\n"
        "Inline `[code](nope.md)` is not a link.\n"
        "[dir](scripts/)\n"
        "[ref]: references/gone.md\n"
    )
    skill = write_skill(
        tmp_path,
        "a",
        body=body,
        files={"references/guide.md": "g", "scripts/run.py": "print()"},
    )
    found = [f for f in check(skill).findings if f.id == "LINK_TARGET_MISSING"]
    assert [(f.message.split(",")[0], f.line) for f in found] == [
        ("the body links to references/api.md", 6),
        ("the body links to references/gone.md", 12),
    ]


# -- security --------------------------------------------------------------------------------------


def test_world_writable_files(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a")
    os.chmod(skill / "execute.sh", 0o777)
    found = finding(check(skill), "WORLD_WRITABLE")
    assert found.hint == f"chmod o-w {skill / 'execute.sh'}"


def test_private_keys_and_cloud_keys(tmp_path: Path) -> None:
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n"
    skill = write_skill(
        tmp_path,
        "a",
        files={"id_rsa": key, "config.env": "\n\nAWS_ACCESS_KEY_ID=AKIA1234567890ABCDEF\n"},
    )
    report = check(skill)
    cloud = finding(report, "CLOUD_KEY")
    assert (cloud.file, cloud.line) == ("config.env", 3)
    assert "AKIA1234567890ABCDEF" not in cloud.message  # never echo the secret itself
    assert finding(report, "PRIVATE_KEY").file == "id_rsa"


def test_documented_example_keys_are_not_secrets(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a", body="Use AKIAIOSFODNN7EXAMPLE in docs.\n")
    assert check(skill).findings == []


def test_symlink_escape_is_a_security_error(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a")
    (skill / "passwd").symlink_to("/etc/passwd")
    found = finding(check(skill), "SYMLINK_ESCAPE")
    assert found.rule_set == "security"


# -- spec-only and strict --------------------------------------------------------------------------


def test_spec_only_skips_skillstage_rules(tmp_path: Path) -> None:
    skill = write_skill(
        tmp_path, "a", frontmatter={"name": "a", "description": "d"}, execute=False, test=None
    )
    assert check(skill, spec_only=True).findings == []


def test_spec_only_reports_seed_fields_as_not_in_spec(tmp_path: Path) -> None:
    report = check(write_skill(tmp_path, "a"), spec_only=True)
    assert ids(report) == ["FIELD_NOT_IN_SPEC"]
    assert report.ok


# -- dependencies ----------------------------------------------------------------------------------


def test_missing_dependency_and_cycles(tmp_path: Path) -> None:
    a = check(write_skill(tmp_path, "a", extra={"dependencies": ["b"]}))
    b = check(write_skill(tmp_path, "b", extra={"dependencies": ["c"]}))
    c = check(write_skill(tmp_path, "c", extra={"dependencies": ["a", "logging"]}))
    reports = [a, b, c]
    check_dependencies(reports, {r.name or "": r.dependencies for r in reports})
    assert finding(a, "DEPENDENCY_CYCLE").message == "dependency cycle: a → b → c → a"
    assert "DEPENDENCY_CYCLE" in ids(b)
    missing = finding(c, "DEPENDENCY_MISSING")
    assert "'logging'" in missing.message


def test_find_cycles_handles_self_loops_and_dags() -> None:
    assert find_cycles({"a": ["a"], "b": []}) == [["a"]]
    assert find_cycles({"a": ["b"], "b": ["c"], "c": []}) == []
    assert sorted(map(len, find_cycles({"x": ["y"], "y": ["x"], "p": ["q"], "q": ["p"]}))) == [2, 2]


# -- tests (test.sh) -------------------------------------------------------------------------------


def test_run_tests_pass(tmp_path: Path) -> None:
    report = check(write_skill(tmp_path, "a"))
    run_skill_tests(report, POLICY)
    assert report.findings == []


def test_run_tests_failure_shows_output(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a", test="#!/bin/bash\necho 'ERROR: frontmatter'\nexit 3\n")
    report = check(skill)
    run_skill_tests(report, POLICY)
    found = finding(report, "TESTS_FAILED")
    assert found.message == "Tests failed (exit code 3)"
    assert found.detail == "ERROR: frontmatter"


def test_run_tests_timeout_kills_the_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "survived"
    script = f"#!/bin/bash\n(sleep 2; touch {marker}) &\nsleep 30\n"
    report = check(write_skill(tmp_path, "a", test=script))
    started = time.monotonic()
    run_skill_tests(report, ValidationPolicy(test_timeout_seconds=0.5))
    assert time.monotonic() - started < 5
    assert finding(report, "TESTS_TIMEOUT").severity == "error"
    time.sleep(2.5)
    assert not marker.exists(), "a child of test.sh outlived the timeout"
