"""What a skill is once read: its frontmatter schema and the `SkillVersion` value."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from skillstage.skill.files import SkillFile

# The Agent Skills specification's frontmatter fields.
SPEC_FIELDS = frozenset(
    {"name", "description", "license", "compatibility", "metadata", "allowed-tools"}
)
# Fields the seeds add (seed 000's schema and SLA override).
SEED_FIELDS = frozenset(
    {
        "version",
        "author",
        "tags",
        "dependencies",
        "sla_override",
        "sla_override_reason",
        "sla_override_expires",
    }
)
# Keys agent platforms add to the spec (Claude Code's skill frontmatter and its neighbours): read by
# one platform, ignored by the rest. Reported as warnings, never silently accepted.
PLATFORM_EXTENSION_FIELDS = frozenset(
    {
        "when_to_use",
        "argument-hint",
        "disable-model-invocation",
        "user-invocable",
        "model",
        "context",
        "agent",
        "hooks",
        "paths",
        "effort",
        "shell",
    }
)


class Frontmatter(msgspec.Struct, frozen=True, kw_only=True):
    """The frontmatter fields skillstage reads. Unknown keys are kept in `extra` (and reported by
    checks). Build one from decoded YAML with `Frontmatter.from_mapping`."""

    name: str | None = None
    description: str | None = None
    license: str | None = None
    compatibility: str | None = None
    metadata: dict[str, str] | None = None
    allowed_tools: str | list[str] | None = msgspec.field(default=None, name="allowed-tools")
    version: str | None = None
    author: str | None = None
    tags: list[str] | None = None
    dependencies: list[str] | None = None
    sla_override: bool | None = None
    sla_override_reason: str | None = None
    sla_override_expires: dt.date | None = None  # a YAML date or a "YYYY-MM-DD" string
    extra: dict[str, Any] = msgspec.field(default_factory=dict)  # the other keys, as read

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Frontmatter:
        """Validate decoded frontmatter, strictly: a YAML number or boolean is not a string, a
        string is not a boolean. Raises `FrontmatterTypeError` listing every value of the wrong
        type."""
        known: Mapping[str, Any]
        if _FIELD_NAMES.issuperset(raw):  # the usual case, and twice as fast: no unknown keys
            known = data = raw
        else:
            known = {key: value for key, value in raw.items() if key in _FIELD_NAMES}
            extra = {key: value for key, value in raw.items() if key not in _FIELD_NAMES}
            data = {**known, "extra": extra}
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError:
            raise FrontmatterTypeError(_wrong_types(known)) from None

    @property
    def effective_version(self) -> str | None:
        """`version`, else `metadata.version` (the Agent Skills spec has no top-level version)."""
        if self.version is not None:
            return self.version
        return (self.metadata or {}).get("version")


# The fields `Frontmatter` reads, as (attribute, YAML key): `allowed-tools` under its YAML name;
# every other key is `extra`. Computed once: `msgspec.structs.fields` evaluates the annotations
# on every call.
_FIELDS = tuple(
    (field.name, field.encode_name)
    for field in msgspec.structs.fields(Frontmatter)
    if field.name != "extra"
)
_FIELD_NAMES = frozenset(key for _, key in _FIELDS)


@dataclass(frozen=True)
class WrongType:
    """One frontmatter value of the wrong type."""

    loc: tuple[str | int, ...]  # the field, then the list index or mapping key: ("tags", 1)
    value: Any  # the value found there (for a mapping key that is not a string, the key)

    @property
    def field(self) -> str:
        return str(self.loc[0])


class FrontmatterTypeError(ValueError):
    """Frontmatter fields of the wrong type."""

    def __init__(self, problems: list[WrongType]) -> None:
        self.problems = problems
        self.fields = sorted({problem.field for problem in problems})
        super().__init__(f"frontmatter fields of the wrong type: {', '.join(self.fields)}")


def _wrong_types(known: Mapping[str, Any]) -> list[WrongType]:
    # msgspec stops at the first error; check each field on its own to report them all.
    problems: list[WrongType] = []
    for key, value in known.items():
        try:
            msgspec.convert({key: value}, Frontmatter)
        except msgspec.ValidationError as exc:
            # The path of msgspec's error, "`$.tags[1]`", "`$.metadata[...]`" or "`key` in
            # `$.metadata`", says whether an item of a list or mapping is wrong. Every list and
            # mapping here holds strings: report each item that is not one.
            inside = str(exc).endswith("]`") or str(exc).endswith(f"` in `$.{key}`")
            if inside and isinstance(value, list):
                problems += [
                    WrongType((key, i), item)
                    for i, item in enumerate(value)
                    if not isinstance(item, str)
                ]
            elif inside and isinstance(value, dict):
                problems += [
                    WrongType((key, str(k)), v if isinstance(k, str) else k)
                    for k, v in value.items()
                    if not (isinstance(k, str) and isinstance(v, str))
                ]
            else:
                problems.append(WrongType((key,), value))
    return problems


def _jsonable(value: Any) -> Any:
    """A YAML value as JSON data: dates as ISO text, mapping keys as text, sets as lists, a NaN or
    infinity as null (JSON has none)."""
    if isinstance(value, dict):
        return {
            key if isinstance(key, str) else str(_jsonable(key)): _jsonable(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item) for item in value]
    if isinstance(value, dt.date):  # and datetime
        return value.isoformat()
    if isinstance(value, bytes):  # !!binary
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class SkillVersion:
    """One version of one skill, as read from a directory on disk."""

    name: str
    version: str
    digest: str
    path: Path
    frontmatter: Frontmatter
    body: str
    files: tuple[SkillFile, ...]

    @property
    def short_digest(self) -> str:
        return self.digest[:12]

    def frontmatter_dict(self) -> dict[str, Any]:
        """The frontmatter as plain JSON-able data (for the store)."""
        frontmatter = self.frontmatter
        data = {key: getattr(frontmatter, name) for name, key in _FIELDS}
        data.update(frontmatter.extra)
        return {key: _jsonable(value) for key, value in data.items() if value is not None}


# Semantic Versioning 2.0.0's own regular expression (semver.org, "Is there a suggested regular
# expression"), at most 255 characters as the semver package allows: the package itself costs a
# short command a few milliseconds of start-up (it imports argparse), for one match.
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)
_SEMVER_MAX_LENGTH = 255


def is_semantic_version(text: str) -> bool:
    """Whether `text` is a semantic version MAJOR.MINOR.PATCH[-pre][+build]."""
    return len(text) <= _SEMVER_MAX_LENGTH and _SEMVER.fullmatch(text) is not None


def suggest_version(value: Any) -> str:
    """A semantic version close to what was written: `v3.1` → `3.1.0`."""
    text = str(value).strip().lstrip("vV")
    parts = [p for p in re.split(r"[.\-+]", text) if p.isdigit()][:3]
    while len(parts) < 3:
        parts.append("0")
    return ".".join(str(int(p)) for p in parts)
