"""What every command can ask of the invocation: the project, and how to print."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from skillstage.config import Project, find_config_file, load_config_file, load_project


@dataclass
class CliContext:
    config_path: Path | None = None
    _project: Project | None = field(default=None, repr=False)

    def project(self) -> Project:
        """The project; a `ConfigError` (exit 2) when there is none."""
        if self._project is None:
            self._project = load_project(self.config_path)
        return self._project

    def optional_project(self) -> Project | None:
        """The project if there is one; None outside a project. A broken config is still an
        error."""
        if self.config_path is not None:
            return self.project()
        found = find_config_file(Path.cwd())
        return load_config_file(found) if found is not None else None


def is_terminal() -> bool:
    return sys.stdout.isatty()


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def rule(width: int = 52) -> str:
    return "━" * width
