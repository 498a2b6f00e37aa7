from __future__ import annotations

from skillstage.cli.main import main

__all__ = ["main"]
