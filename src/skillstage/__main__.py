from __future__ import annotations

from skillstage.cli import main

main()
