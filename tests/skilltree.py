"""Build skill directories on disk for tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def write_skill(
    parent: Path,
    name: str,
    *,
    frontmatter: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    body: str = "# Skill\n\nDoes things.\n",
    execute: bool = True,
    test: str | None = "#!/bin/bash\nexit 0\n",
    files: dict[str, str | bytes] | None = None,
    skill_md: str | bytes | None = None,
) -> Path:
    """A valid skill (by seed 000 and the spec) unless told otherwise.

    `frontmatter` replaces the default frontmatter; `extra` adds keys to it; `skill_md` replaces
    the whole SKILL.md.
    """
    directory = parent / name
    directory.mkdir(parents=True, exist_ok=True)
    if skill_md is None:
        data = (
            frontmatter
            if frontmatter is not None
            else {
                "name": name,
                "version": "1.0.0",
                "description": f"The {name} skill. Use it when testing.",
            }
        )
        data = {**data, **(extra or {})}
        skill_md = "---\n" + yaml.safe_dump(data, sort_keys=False) + "---\n" + body
    target = directory / "SKILL.md"
    if isinstance(skill_md, bytes):
        target.write_bytes(skill_md)
    else:
        target.write_text(skill_md, encoding="utf-8")
    if execute:
        script = directory / "execute.sh"
        script.write_text("#!/bin/bash\necho ok\n")
        script.chmod(0o755)
    if test is not None:
        script = directory / "test.sh"
        script.write_text(test)
        script.chmod(0o755)
    for relative, content in (files or {}).items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        os.chmod(path, 0o644)
    return directory
