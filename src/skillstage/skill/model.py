"""What a skill is once read: its frontmatter schema and the `SkillVersion` value."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

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


class Frontmatter(BaseModel):
    """The frontmatter fields skillstage reads. Unknown keys are kept (and reported by checks)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    name: StrictStr | None = None
    description: StrictStr | None = None
    license: StrictStr | None = None
    compatibility: StrictStr | None = None
    metadata: dict[StrictStr, StrictStr] | None = None
    allowed_tools: StrictStr | list[StrictStr] | None = Field(default=None, alias="allowed-tools")
    version: StrictStr | None = None
    author: StrictStr | None = None
    tags: list[StrictStr] | None = None
    dependencies: list[StrictStr] | None = None
    sla_override: StrictBool | None = None
    sla_override_reason: StrictStr | None = None
    sla_override_expires: dt.date | None = None

    @property
    def effective_version(self) -> str | None:
        """`version`, else `metadata.version` (the Agent Skills spec has no top-level version)."""
        if self.version is not None:
            return self.version
        return (self.metadata or {}).get("version")


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
        return self.frontmatter.model_dump(mode="json", by_alias=True, exclude_none=True)
