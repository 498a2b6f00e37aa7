"""One skill directory: read its SKILL.md, list and digest its files, check it. Never the store.

The names below are imported from their modules on first use: reading a skill must not pay for
importing the checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from skillstage.lazy import lazy_exports

if TYPE_CHECKING:
    from skillstage.skill.checks import Finding, SkillReport, check_dependencies, check_skill
    from skillstage.skill.files import SkillFile
    from skillstage.skill.frontmatter import FrontmatterError, parse_skill_md
    from skillstage.skill.model import Frontmatter, SkillVersion
    from skillstage.skill.read import find_skill_dirs, read_skill, stage_directories

__all__ = [
    "Finding",
    "Frontmatter",
    "FrontmatterError",
    "SkillFile",
    "SkillReport",
    "SkillVersion",
    "check_dependencies",
    "check_skill",
    "find_skill_dirs",
    "parse_skill_md",
    "read_skill",
    "stage_directories",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "checks": ["Finding", "SkillReport", "check_dependencies", "check_skill"],
        "files": ["SkillFile"],
        "frontmatter": ["FrontmatterError", "parse_skill_md"],
        "model": ["Frontmatter", "SkillVersion"],
        "read": ["find_skill_dirs", "read_skill", "stage_directories"],
    },
)
