"""The lifecycle modules import one another in layers, never in a circle, and a function-level
import does not count as a way round one: each imports first, alone, in a fresh interpreter.
The journaled move (`move`) and its side effects (`effects`) sit below the gates and the
promoter's orchestration."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import skillstage.lifecycle

PACKAGE = Path(skillstage.lifecycle.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def imports(module: str) -> set[str]:
    """The other lifecycle modules `module` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {n.rsplit(".", 1)[1] for n in names if n.startswith("skillstage.lifecycle.")}
    return (found & set(MODULES)) - {module}


def test_no_lifecycle_module_imports_one_that_imports_it_back() -> None:
    graph = {module: imports(module) for module in MODULES}
    circles = []
    for start in MODULES:
        pending = [[start]]
        while pending:
            path = pending.pop()
            for step in graph[path[-1]]:
                if step == start:
                    circles.append(" → ".join([*path, start]))
                elif step not in path:
                    pending.append([*path, step])
    assert circles == []
    assert "readiness" in graph["transition_gates"] and "gates" in graph["readiness"]
    assert "readiness" not in graph["gates"]
    # The crash-safety core knows nothing of gates or of the orchestration around it.
    assert not {"gates", "readiness", "transition_gates", "promote"} & graph["move"]
    assert not {"gates", "readiness", "transition_gates", "promote", "move"} & graph["effects"]


def test_recovery_loads_neither_gates_nor_checks() -> None:
    """What every command runs first (finishing a move a crash left open) loads no gate, no
    skill check and no subprocess machinery: reading commands stay quick to start."""
    probe = (
        "import sys, skillstage.lifecycle.move; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('skillstage.'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=60
    )
    loaded = set(done.stdout.split())
    assert "skillstage.lifecycle.move" in loaded
    assert not loaded & {
        "skillstage.lifecycle.gates",
        "skillstage.lifecycle.readiness",
        "skillstage.lifecycle.promote",
        "skillstage.skill.checks",
    }


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_first(module: str) -> None:
    subprocess.run(
        [sys.executable, "-c", f"import skillstage.lifecycle.{module}"],
        check=True,
        capture_output=True,
        timeout=60,
    )
