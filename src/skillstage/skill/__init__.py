"""One skill directory: read its SKILL.md, list and digest its files, check it. Never the store."""

from __future__ import annotations

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
