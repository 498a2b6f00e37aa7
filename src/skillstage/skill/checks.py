"""The checks `skillstage validate` runs on one skill directory.

Rule sets: `parse` (SKILL.md readable), `content` (seed 000 §1: required files and executable bits),
`schema` (seed 000 §2: name, version, description and the optional fields' types), `spec` (the Agent
Skills specification), `security` (unsafe files and secrets), `tests` (test.sh), `dependencies`
(across skills, see `check_dependencies`). Each finding has an id, a severity, a place and a hint
in the spirit of seed 000's troubleshooting section.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import unicodedata
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from skillstage.config import ValidationPolicy
from skillstage.skill.files import FileScan, SkillFile, scan_skill_files
from skillstage.skill.frontmatter import FrontmatterError, SkillDocument, parse_skill_md
from skillstage.skill.model import (
    PLATFORM_EXTENSION_FIELDS,
    SEED_FIELDS,
    SPEC_FIELDS,
    Frontmatter,
    FrontmatterTypeError,
    is_semantic_version,
    suggest_version,
)
from skillstage.skill.secrets import find_secrets
from skillstage.skill.upgrade import OLD_KEYS, is_v1_text

Severity = Literal["error", "warning", "info"]

MAX_NAME_LENGTH = 64
MAX_DESCRIPTION_LENGTH = 1024
MAX_COMPATIBILITY_LENGTH = 500
_NAME_CHARS = re.compile(r"[a-z0-9-]+\Z")


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a check found about a skill."""

    id: str
    severity: Severity
    message: str
    rule_set: str
    file: str | None = None  # relative to the skill directory
    line: int | None = None
    hint: str | None = None
    detail: str | None = None  # e.g. the output of a failed test.sh

    def escalated(self) -> Finding:
        """The same finding as an error (for --strict)."""
        if self.severity != "warning":
            return self
        return Finding(
            self.id,
            "error",
            self.message,
            self.rule_set,
            self.file,
            self.line,
            self.hint,
            self.detail,
        )


@dataclass
class SkillReport:
    """Everything validation found about one skill directory."""

    path: Path
    name: str | None = None
    version: str | None = None
    digest: str | None = None
    dependencies: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(finding.severity == "error" for finding in self.findings)

    def count(self, severity: Severity) -> int:
        return sum(1 for finding in self.findings if finding.severity == severity)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "ok": self.ok,
            "errors": self.count("error"),
            "warnings": self.count("warning"),
            "findings": [asdict(finding) for finding in self.findings],
        }


class _Checker:
    """Collects the findings of one skill; the methods below are the rules."""

    def __init__(self, directory: Path, policy: ValidationPolicy, spec_only: bool) -> None:
        self.directory = directory
        self.policy = policy
        self.spec_only = spec_only
        self.report = SkillReport(directory)
        self.skill_md_bytes: bytes | None = None
        self.secret_findings: list[Finding] = []
        self.files_by_path: dict[str, SkillFile] = {}
        self.working_directory = os.getcwd()

    def add(
        self,
        id: str,
        severity: Severity,
        message: str,
        rule_set: str,
        *,
        file: str | None = None,
        line: int | None = None,
        hint: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.report.findings.append(
            Finding(id, severity, message, rule_set, file, line, hint, detail)
        )

    def display(self, relative: str) -> str:
        """A path for a hint: relative to the working directory when under it, as the seed's
        troubleshooting commands are."""
        path = os.path.join(self.directory, relative)
        here = self.working_directory
        return path[len(here) + 1 :] if path.startswith(here + os.sep) else path

    def upgrade_hint(self) -> str:
        import shlex  # only for an old-format skill

        return f"skillstage upgrade {shlex.quote(self.display('').rstrip(os.sep) or '.')}"

    def old_format(self, document: SkillDocument) -> None:
        """FORMAT_V1: the frontmatter uses the keys of the old format (title, desc, triggers)."""
        keys = [key for key in document.frontmatter if key in OLD_KEYS]
        self.add(
            "FORMAT_V1",
            "error",
            f"SKILL.md is in the old format (v1): it uses {', '.join(keys)} where today's "
            "format has name and description",
            "spec",
            file="SKILL.md",
            line=document.key_lines.get(keys[0]),
            hint=f"{self.upgrade_hint()}  # shows the change; add --write to make it",
        )

    # -- files -------------------------------------------------------------------------------

    def inspect(self, skill_file: SkillFile, data: bytes) -> None:
        if skill_file.path in ("SKILL.md", "skill.md") and self.skill_md_bytes is None:
            self.skill_md_bytes = data
        if self.spec_only:
            return
        for hit in find_secrets(data):
            self.secret_findings.append(
                Finding(
                    hit.code,
                    "error",
                    f"{skill_file.path} contains what looks like {hit.kind} ({hit.preview})",
                    "security",
                    skill_file.path,
                    hit.line,
                    "remove it from the skill and rotate the credential; read secrets from the "
                    "environment at run time instead",
                )
            )

    def scan(self) -> FileScan:
        return scan_skill_files(
            self.directory,
            max_files=self.policy.max_files,
            max_total_bytes=self.policy.max_total_bytes,
            inspect=self.inspect,
            read_content=not self.spec_only,
        )

    def file_problems(self, scan: FileScan) -> None:
        for problem in scan.problems:
            rule_set = (
                "content"
                if problem.code in ("FILE_COUNT_LIMIT", "SKILL_TOO_LARGE")
                else ("security")
            )
            if self.spec_only and rule_set == "security":
                continue
            self.add(
                problem.code,
                "error",
                problem.message,
                rule_set,
                file=problem.path or None,
                hint=problem.hint,
            )
        if self.spec_only:
            return
        self.report.findings.extend(self.secret_findings)
        writable = [f.path for f in scan.files if f.world_writable and not f.is_symlink]
        writable += scan.world_writable_dirs
        if os.stat(self.directory).st_mode & 0o002:
            writable.insert(0, ".")
        for relative in writable:
            self.add(
                "WORLD_WRITABLE",
                "error",
                f"{relative} is writable by every user on this machine",
                "security",
                file=relative,
                hint=f"chmod o-w {self.display(relative)}",
            )

    def content(self, names: set[str]) -> None:
        """Seed 000 §1: required files present, scripts executable, recommended files present."""
        for required in self.policy.required_files:
            if required == "SKILL.md" or required in names:
                continue
            self.add(
                "REQUIRED_FILE_MISSING",
                "error",
                f"Missing required file: {required}",
                "content",
                file=required,
                hint=_create_script_hint(self.display(required)),
            )
        for script in self.policy.executable_files:
            if script in names and not self.files_by_path[script].executable:
                stem = {"execute.sh": "EXECUTE", "test.sh": "TEST"}.get(script, "FILE")
                self.add(
                    f"{stem}_NOT_EXECUTABLE",
                    "error",
                    f"{script} is not executable",
                    "content",
                    file=script,
                    hint=f"chmod +x {self.display(script)}",
                )
        for recommended in self.policy.recommended_files:
            if recommended not in names and recommended not in self.policy.required_files:
                self.add(
                    "OPTIONAL_FILE_MISSING",
                    "warning",
                    f"Optional file missing: {recommended}",
                    "content",
                    file=recommended,
                    hint=_create_script_hint(self.display(recommended), test=True),
                )

    # -- frontmatter ---------------------------------------------------------------------------

    def fields(self, document: SkillDocument) -> None:
        """Every key is a spec field, a seed field, or reported."""
        allowed_extra = set(self.policy.allowed_extra_fields)
        for key in document.frontmatter:
            line = document.key_lines.get(key)
            if key in SPEC_FIELDS or key in allowed_extra:
                continue
            if key in SEED_FIELDS:
                if self.spec_only:
                    self.add(
                        "FIELD_NOT_IN_SPEC",
                        "warning",
                        f"'{key}' is a skillstage field, not an Agent Skills spec field",
                        "spec",
                        file="SKILL.md",
                        line=line,
                        hint=f"other tools may reject it; the spec's place for it is "
                        f"metadata.{key}",
                    )
                continue
            if key in PLATFORM_EXTENSION_FIELDS:
                self.add(
                    "FIELD_PLATFORM_EXTENSION",
                    "warning",
                    f"'{key}' is a platform extension (Claude Code), not an Agent Skills spec "
                    "field; other agents ignore it",
                    "spec",
                    file="SKILL.md",
                    line=line,
                    hint="keep it if you target that platform; list it in "
                    "validation.allowed_extra_fields to accept it silently",
                )
                continue
            close = _close_field_names(key)
            self.add(
                "FIELD_UNKNOWN",
                "error",
                f"unknown frontmatter field '{key}'",
                "spec",
                file="SKILL.md",
                line=line,
                hint=f"'{key}' is an old-format key: {self.upgrade_hint()} converts it"
                if key in OLD_KEYS
                else f"did you mean '{close[0]}'?"
                if close
                else "remove it, or move it under metadata",
            )

    def typed(self, document: SkillDocument) -> Frontmatter:
        """The frontmatter as a `Frontmatter`, reporting each field of the wrong type."""
        raw = self.metadata_as_strings(document)
        try:
            return Frontmatter.from_mapping(raw)
        except FrontmatterTypeError as exc:
            for problem in exc.problems:
                key = problem.field
                if key == "version" or (self.spec_only and key not in SPEC_FIELDS):
                    continue  # version has its own rule; spec-only ignores the seeds' fields
                where = ".".join(str(part) for part in problem.loc)
                self.add(
                    f"{key.upper().replace('-', '_')}_WRONG_TYPE",
                    "error",
                    f"'{where}' must be {_EXPECTED.get(key, 'of another type')}, "
                    f"not {_describe(problem.value)}",
                    "schema" if key in SEED_FIELDS else "spec",
                    file="SKILL.md",
                    line=document.key_lines.get(key),
                    hint=_type_hint(key),
                )
            bad = set(exc.fields)
            return Frontmatter.from_mapping({k: v for k, v in raw.items() if k not in bad})

    def metadata_as_strings(self, document: SkillDocument) -> dict[str, Any]:
        """The spec says metadata maps strings to strings, but `version: 1.0` under metadata is
        common in real skills and other tools read it as the string "1.0". Warn, and read it so."""
        raw = document.frontmatter
        metadata = raw.get("metadata")
        if not isinstance(metadata, dict):
            return raw
        converted = {}
        for key, value in metadata.items():
            if isinstance(value, bool | int | float | dt.date) and isinstance(key, str):
                self.add(
                    "METADATA_VALUE_NOT_STRING",
                    "warning",
                    f"metadata.{key} is {_describe(value)}, not a string; it is read as "
                    f'"{_yaml_text(value)}"',
                    "spec",
                    file="SKILL.md",
                    line=document.key_lines.get("metadata"),
                    hint=f'quote it: {key}: "{_yaml_text(value)}"',
                )
                converted[key] = _yaml_text(value)
            else:
                converted[key] = value
        return {**raw, "metadata": converted}

    def name(self, document: SkillDocument, meta: Frontmatter, expected: str) -> None:
        line = document.key_lines.get("name")
        if "name" not in document.frontmatter:
            self.add(
                "NAME_MISSING",
                "error",
                "Missing required field in frontmatter: name",
                "spec",
                file="SKILL.md",
                line=1,
                hint=f"add 'name: {expected}' to the frontmatter",
            )
            return
        if meta.name is None and document.frontmatter["name"] is not None:
            return  # wrong type, already reported
        name = unicodedata.normalize("NFKC", (meta.name or "").strip())
        self.report.name = name or None
        if not name:
            self.add(
                "NAME_EMPTY",
                "error",
                "Field 'name' must not be empty",
                "spec",
                file="SKILL.md",
                line=line,
                hint=f"name: {expected}",
            )
            return
        if len(name) > MAX_NAME_LENGTH:
            self.add(
                "NAME_TOO_LONG",
                "error",
                f"Skill name '{name}' has {len(name)} characters; the limit is {MAX_NAME_LENGTH}",
                "spec",
                file="SKILL.md",
                line=line,
                hint="shorten the name (and rename the directory to match)",
            )
        if name != name.lower():
            self.add(
                "NAME_NOT_LOWERCASE",
                "error",
                f"Skill name '{name}' must be lowercase",
                "spec",
                file="SKILL.md",
                line=line,
                hint=f"name: {name.lower()}",
            )
        if name.startswith("-") or name.endswith("-"):
            self.add(
                "NAME_HYPHEN_EDGE",
                "error",
                f"Skill name '{name}' must not start or end with a hyphen",
                "spec",
                file="SKILL.md",
                line=line,
                hint=f"name: {name.strip('-')}",
            )
        if "--" in name:
            self.add(
                "NAME_DOUBLE_HYPHEN",
                "error",
                f"Skill name '{name}' must not contain consecutive hyphens",
                "spec",
                file="SKILL.md",
                line=line,
                hint=f"name: {re.sub('-{2,}', '-', name)}",
            )
        if not _NAME_CHARS.match(name.lower()):
            bad = sorted({c for c in name.lower() if not _NAME_CHARS.match(c)})
            self.add(
                "NAME_INVALID_CHARS",
                "error",
                f"Skill name '{name}' contains {', '.join(repr(c) for c in bad)}; only a-z, 0-9 "
                "and '-' are allowed",
                "spec",
                file="SKILL.md",
                line=line,
                hint="use lowercase ASCII letters, digits and hyphens, e.g. "
                + (re.sub(r"[^a-z0-9]+", "-", _ascii(name).lower()).strip("-") or "my-skill"),
            )
        if name != expected:
            self.add(
                "NAME_MISMATCH_DIRECTORY",
                "error",
                f"Skill name '{name}' does not match its directory name '{expected}'",
                "spec",
                file="SKILL.md",
                line=line,
                hint=f"rename the directory to '{name}' or set 'name: {expected}'",
            )

    def description(self, document: SkillDocument, meta: Frontmatter) -> None:
        line = document.key_lines.get("description")
        if "description" not in document.frontmatter:
            self.add(
                "DESCRIPTION_MISSING",
                "error",
                "Missing required field in frontmatter: description",
                "spec",
                file="SKILL.md",
                line=1,
                hint="add 'description: <what the skill does and when to use it>'",
            )
            return
        if meta.description is None and document.frontmatter["description"] is not None:
            return  # wrong type, already reported
        if not (meta.description or "").strip():
            self.add(
                "DESCRIPTION_EMPTY",
                "error",
                "Field 'description' must not be empty",
                "spec",
                file="SKILL.md",
                line=line,
                hint="say what the skill does and when an agent should use it",
            )
        elif meta.description is not None and len(meta.description) > MAX_DESCRIPTION_LENGTH:
            self.add(
                "DESCRIPTION_TOO_LONG",
                "error",
                f"Description has {len(meta.description)} characters; the limit is "
                f"{MAX_DESCRIPTION_LENGTH}",
                "spec",
                file="SKILL.md",
                line=line,
                hint="keep the description to what and when; move details into the body",
            )
        if meta.compatibility is not None and len(meta.compatibility) > MAX_COMPATIBILITY_LENGTH:
            self.add(
                "COMPATIBILITY_TOO_LONG",
                "error",
                f"Compatibility has {len(meta.compatibility)} characters; the limit is "
                f"{MAX_COMPATIBILITY_LENGTH}",
                "spec",
                file="SKILL.md",
                line=document.key_lines.get("compatibility"),
                hint="state only the environment requirements",
            )

    def version(self, document: SkillDocument, meta: Frontmatter) -> None:
        """Seed 000 §2: a strict MAJOR.MINOR.PATCH version, from `version` or metadata.version."""
        raw = document.frontmatter
        line = document.key_lines.get("version", document.key_lines.get("metadata"))
        value: Any = raw.get("version")
        if value is None:
            value = meta.effective_version
        if value is None:
            self.add(
                "VERSION_MISSING",
                "error",
                "Missing required field in frontmatter: version",
                "schema",
                file="SKILL.md",
                line=1,
                hint="add 'version: 1.0.0' (semantic versioning MAJOR.MINOR.PATCH)",
            )
            return
        if isinstance(value, str) and is_semantic_version(value):
            self.report.version = value
            return
        shown = value if isinstance(value, str) else repr(value)
        read_as = "" if isinstance(value, str) else f" (YAML read it as {_describe(value)})"
        self.add(
            "VERSION_NOT_SEMVER",
            "error",
            f"version {shown!s}{read_as} is not semantic versioning MAJOR.MINOR.PATCH",
            "schema",
            file="SKILL.md",
            line=line,
            hint=f"write e.g. 'version: {suggest_version(value)}' "
            "(1.0.0, 2.3.1, 10.0.0 are valid; v1.0.0, 1.0 and 1.0.0.0 are not)",
        )

    def sla_override(self, document: SkillDocument, meta: Frontmatter) -> None:
        """Seed 000 §"Manual Override": an override needs a reason and should expire."""
        line = document.key_lines.get("sla_override")
        if meta.sla_override:
            if not (meta.sla_override_reason or "").strip():
                self.add(
                    "SLA_OVERRIDE_REASON_MISSING",
                    "error",
                    "sla_override is true but sla_override_reason is missing",
                    "schema",
                    file="SKILL.md",
                    line=line,
                    hint='add sla_override_reason: "why the skill stays in staging"',
                )
            if meta.sla_override_expires is None and "sla_override_expires" not in (
                document.frontmatter
            ):
                self.add(
                    "SLA_OVERRIDE_NO_EXPIRY",
                    "warning",
                    "sla_override has no sla_override_expires date, so it never ends",
                    "schema",
                    file="SKILL.md",
                    line=line,
                    hint='add sla_override_expires: "YYYY-MM-DD"',
                )
        elif meta.sla_override_reason or meta.sla_override_expires:
            self.add(
                "SLA_OVERRIDE_INCOMPLETE",
                "warning",
                "sla_override_reason/sla_override_expires are set but sla_override is not true",
                "schema",
                file="SKILL.md",
                line=document.key_lines.get(
                    "sla_override_reason", document.key_lines.get("sla_override_expires")
                ),
                hint="add 'sla_override: true', or remove the override fields",
            )

    # -- body ----------------------------------------------------------------------------------

    def body(self, document: SkillDocument, scan: FileScan) -> None:
        lines = document.body.count("\n") + (0 if document.body.endswith("\n") else 1)
        if document.body and lines > self.policy.max_body_lines:
            self.add(
                "BODY_TOO_LONG",
                "warning",
                f"the SKILL.md body has {lines} lines; keep it under {self.policy.max_body_lines}",
                "spec",
                file="SKILL.md",
                line=document.body_first_line,
                hint="move detail into reference files (references/*.md) and link them from "
                "the body, so agents load it only when needed",
            )
        known = {f.path for f in scan.files}
        directories = {p.rsplit("/", 1)[0] for p in known if "/" in p}
        directories |= {
            d.rsplit("/", i)[0] for d in list(directories) for i in range(1, d.count("/") + 1)
        }
        for target, line in _relative_links(document.body, document.body_first_line):
            resolved = os.path.normpath(target)
            if resolved.startswith(".."):
                if not os.path.exists(self.directory / resolved):
                    self.add(
                        "LINK_TARGET_MISSING",
                        "error",
                        f"the body links to {target}, which does not exist",
                        "spec",
                        file="SKILL.md",
                        line=line,
                        hint="fix the link, or add the file",
                    )
                continue
            if resolved in known or resolved.rstrip("/") in directories or resolved == ".":
                continue
            self.add(
                "LINK_TARGET_MISSING",
                "error",
                f"the body links to {target}, which is not in the skill",
                "spec",
                file="SKILL.md",
                line=line,
                hint=f"add {self.display(resolved)} or fix the link",
            )


@functools.lru_cache(maxsize=1024)
def _close_field_names(key: str) -> list[str]:
    # The same unknown keys recur across a team's skills; difflib is slow enough to cache.
    known = sorted(SPEC_FIELDS | SEED_FIELDS | PLATFORM_EXTENSION_FIELDS)
    import difflib  # only when a key is unknown: most skills never need it

    return difflib.get_close_matches(key, known, n=1)


def _relative_links(body: str, first_line: int) -> Iterable[tuple[str, int]]:
    """Relative link targets in Markdown, outside code blocks and code spans, with file lines.

    Only the lines that matter (fences, and lines with `](` or `]:`) are visited: a long body is
    mostly prose, and looping over every line in Python would cost more than every regex here.
    """
    if "](" not in body and "]:" not in body:
        return
    fence: str | None = None
    line = first_line
    position = 0
    for match in _INTERESTING_LINE.finditer(body):
        line += body.count("\n", position, match.start())
        position = match.start()
        text = match.group(0)
        stripped = text.lstrip()
        if stripped.startswith(("```", "~~~")):
            marker = stripped[:3]
            if fence is None:
                fence = marker
            elif marker == fence:
                fence = None
            continue
        if fence is not None:
            continue
        text = _CODE_SPAN.sub("", text)
        for link in _INLINE_LINK.finditer(text):
            target = _link_target(link.group(1))
            if target:
                yield target, line
        reference = _REFERENCE_LINK.match(text)
        if reference:
            target = _link_target(reference.group(1))
            if target:
                yield target, line


_INTERESTING_LINE = re.compile(r"^[ \t]*(?:```|~~~).*$|^.*\][(:].*$", re.MULTILINE)
_CODE_SPAN = re.compile(r"`+[^`]*`+")
_INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
_REFERENCE_LINK = re.compile(r"\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|\Z)")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def _link_target(raw: str) -> str | None:
    if raw.startswith(("#", "/", "{", "$")) or _SCHEME.match(raw):
        return None
    target = unquote(raw.split("#", 1)[0].split("?", 1)[0])
    return target or None


_EXPECTED = {
    "name": "a string",
    "description": "a string",
    "license": "a string",
    "compatibility": "a string",
    "metadata": "a mapping of strings to strings",
    "allowed-tools": "a string or a list of strings",
    "author": "a string",
    "tags": "a list of strings",
    "dependencies": "a list of skill names",
    "sla_override": "true or false",
    "sla_override_reason": "a string",
    "sla_override_expires": "a date (YYYY-MM-DD)",
}


def _type_hint(key: str) -> str:
    if key in ("tags", "dependencies"):
        return f"write {key}: [first, second]"
    if key == "metadata":
        return 'quote every value, e.g. metadata: {version: "1.0"}'
    if key == "sla_override_expires":
        return 'sla_override_expires: "2025-11-20"'
    if key == "sla_override":
        return "sla_override: true"
    return f'quote the value: {key}: "..."'


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"a {type(value).__name__}"


def _yaml_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _create_script_hint(path: str, test: bool = False) -> str:
    body = 'echo "No tests defined yet"\\nexit 0' if test else 'echo "TODO: run the skill"'
    return f"printf '#!/bin/bash\\n{body}\\n' > {path} && chmod +x {path}"


def _skill_md_hint(directory: Path) -> str:
    name = directory.name
    return (
        f"create {directory / 'SKILL.md'} beginning with:\n---\nname: {name}\nversion: 1.0.0\n"
        "description: Skill description\n---"
    )


def check_skill(
    directory: Path,
    policy: ValidationPolicy,
    *,
    spec_only: bool = False,
    expected_name: str | None = None,
) -> SkillReport:
    """Run every per-skill rule on one directory and return its report.

    `expected_name` is the skill name its location implies (the directory name unless a stage
    path template says otherwise).
    """
    checker = _Checker(directory, policy, spec_only)
    report = checker.report
    if not directory.is_dir():
        checker.add(
            "SKILL_DIR_MISSING",
            "error",
            f"{directory} is not a directory"
            if directory.exists()
            else f"{directory} does not exist",
            "content",
            hint="pass the path of a skill directory (the one holding SKILL.md)",
        )
        return report
    expected = unicodedata.normalize("NFKC", expected_name or directory.name)
    scan = checker.scan()
    report.digest = scan.digest
    checker.files_by_path = {f.path: f for f in scan.files}
    names = set(checker.files_by_path)
    checker.file_problems(scan)
    if not spec_only:
        checker.content(names)

    skill_md = "SKILL.md" if "SKILL.md" in names else "skill.md" if "skill.md" in names else None
    if skill_md is None:
        not_a_file = (directory / "SKILL.md").is_dir()
        checker.add(
            "SKILL_MD_MISSING",
            "error",
            "SKILL.md is a directory, not a file"
            if not_a_file
            else "Missing required file: SKILL.md",
            "content",
            file="SKILL.md",
            hint=f"move the directory {directory / 'SKILL.md'} away, then: "
            + _skill_md_hint(directory)
            if not_a_file
            else _skill_md_hint(directory),
        )
        if "prompt.md" in names:
            checker.add(
                "FORMAT_V1",
                "error",
                "prompt.md is a skill in the old format (v1); agents load SKILL.md",
                "content",
                file="prompt.md",
                hint=f"{checker.upgrade_hint()}  # shows the change; add --write to make it",
            )
        return report
    if skill_md == "skill.md":
        checker.add(
            "SKILL_MD_LOWERCASE",
            "warning",
            "the skill file is named skill.md; agents look for SKILL.md",
            "spec",
            file="skill.md",
            hint=f"mv {directory / 'skill.md'} {directory / 'SKILL.md'}",
        )
    raw = checker.skill_md_bytes
    try:
        if raw is None:
            raw = _read_bounded(directory / skill_md)
        document = parse_skill_md(raw, directory / skill_md)
    except FrontmatterError as exc:
        if exc.code == "FRONTMATTER_MISSING" and raw is not None and is_v1_text(raw):
            # Only a file that does not open with `---` gets here: v2 skills pay nothing.
            checker.add(
                "FORMAT_V1",
                "error",
                f"{skill_md} has no frontmatter: it is in the old format (v1), its name and "
                "description only in its Markdown",
                "parse",
                file=skill_md,
                line=1,
                hint=f"{checker.upgrade_hint()}  # shows the change; add --write to make it",
            )
            return report
        checker.add(
            exc.code, "error", exc.message, "parse", file=skill_md, line=exc.line, hint=exc.hint
        )
        return report

    checker.fields(document)
    if not OLD_KEYS.isdisjoint(document.frontmatter):
        checker.old_format(document)
    meta = checker.typed(document)
    checker.name(document, meta, expected)
    checker.description(document, meta)
    if not spec_only:
        checker.version(document, meta)
        checker.sla_override(document, meta)
        report.dependencies = list(meta.dependencies or [])
    checker.body(document, scan)
    return report


def _read_bounded(path: Path) -> bytes:
    from skillstage.skill.frontmatter import MAX_SKILL_MD_BYTES

    with path.open("rb") as handle:
        return handle.read(MAX_SKILL_MD_BYTES + 1)


def _ascii(text: str) -> str:
    """`text` with its accents taken off (ünï → uni), for a suggested name."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def check_dependencies(reports: Sequence[SkillReport], known: Mapping[str, Sequence[str]]) -> None:
    """Declared dependencies exist, and no chain of them comes back to where it started.

    `known` maps every skill name in the tree (the ones validated and the project's others) to its
    declared dependencies. Findings are added to the reports of the skills validated.
    """
    for report in reports:
        for dependency in report.dependencies:
            if dependency not in known:
                import difflib

                close = difflib.get_close_matches(dependency, list(known), n=1)
                report.findings.append(
                    Finding(
                        "DEPENDENCY_MISSING",
                        "error",
                        f"dependency '{dependency}' is not a skill in this tree",
                        "dependencies",
                        "SKILL.md",
                        None,
                        f"did you mean '{close[0]}'?"
                        if close
                        else f"add the skill '{dependency}', or remove it from dependencies",
                    )
                )
    cycles = find_cycles(known)
    by_name = {report.name: report for report in reports if report.name}
    for cycle in cycles:
        text = " → ".join([*cycle, cycle[0]])
        for member in cycle:
            member_report = by_name.get(member)
            if member_report is not None:
                member_report.findings.append(
                    Finding(
                        "DEPENDENCY_CYCLE",
                        "error",
                        f"dependency cycle: {text}",
                        "dependencies",
                        "SKILL.md",
                        None,
                        "break the cycle: a skill cannot depend on itself through others",
                    )
                )


def find_cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, child_index = work.pop()
            if child_index == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = [c for c in graph.get(node, ()) if c in graph]
            if child_index < len(children):
                work.append((node, child_index + 1))
                child = children[child_index]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return [_cycle_path(graph, set(component)) for component in components]


def _cycle_path(graph: Mapping[str, Sequence[str]], members: set[str]) -> list[str]:
    """The shortest cycle through the component's smallest name (breadth-first)."""
    start = min(members)
    if start in graph.get(start, ()):
        return [start]
    parents: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(c for c in graph.get(node, ()) if c in members):
            if child == start:
                path: list[str] = []
                current: str | None = node
                while current is not None:
                    path.append(current)
                    current = parents[current]
                return path[::-1]
            if child not in parents:
                parents[child] = node
                queue.append(child)
    return sorted(members)  # not reached: every member of a component reaches every other


def run_skill_tests(report: SkillReport, policy: ValidationPolicy) -> None:
    """Run test.sh in the skill directory with the configured timeout; record failures."""
    script = report.path / "test.sh"
    if not script.is_file() or not os.access(script, os.X_OK):
        return  # absence and a missing executable bit are reported by the content rules
    from skillstage.process import run  # subprocess only when tests run

    result = run(["./test.sh"], cwd=report.path, timeout=policy.test_timeout_seconds)
    if result.timed_out:
        report.findings.append(
            Finding(
                "TESTS_TIMEOUT",
                "error",
                f"test.sh did not finish within {policy.test_timeout_seconds:g} s; its process "
                "group was killed",
                "tests",
                "test.sh",
                None,
                f"cd {report.path} && ./test.sh  # run it by hand to see where it hangs",
                result.output_tail() or None,
            )
        )
    elif result.returncode != 0:
        report.findings.append(
            Finding(
                "TESTS_FAILED",
                policy.test_failure,
                f"Tests failed (exit code {result.returncode})",
                "tests",
                "test.sh",
                None,
                f"cd {report.path} && ./test.sh  # run it by hand to see the errors",
                result.output_tail() or None,
            )
        )
