"""The gates a transition runs: the built-in ones by name, and the commands configured under
[gates.<name>].

The built-in gates come from two modules, in layers: `gates` (the framework and the checks of a
skill's files and place) and `readiness` (seed 002's `metrics` and `approval`, which rest on the
store's evidence and need the framework), `quality_gates` (seed 001's tools) and `fact_gates`
(seed 001's facts: a rollback drill, uptime, monitoring). This module
names them all and imports them; none imports it.
"""

from __future__ import annotations

from collections.abc import Callable

from skillstage.config import Project, TransitionConfig
from skillstage.errors import ConfigError
from skillstage.lifecycle.gates import (
    CommandGate,
    ConflictsGate,
    DependenciesGate,
    FindingsGate,
    Gate,
)


def _metrics_gate() -> Gate:
    # readiness (and the metrics behind it) is imported by a transition that has these gates:
    # most promotions have neither, and it is a large part of a promotion's start-up.
    from skillstage.lifecycle.readiness import MetricsGate

    return MetricsGate()


def _approval_gate() -> Gate:
    from skillstage.lifecycle.readiness import ApprovalGate

    return ApprovalGate()


def _quality_gate(name: str) -> Callable[[], Gate]:
    """Seed 001's quality gates (quality_gates.py), imported by a transition that names one."""

    def build() -> Gate:
        from skillstage.lifecycle import quality_gates

        kinds: dict[str, Callable[[], Gate]] = {
            "tests": quality_gates.PytestGate,
            "coverage": quality_gates.CoverageGate,
            "lint": quality_gates.LintGate,
            "types": quality_gates.TypesGate,
            "secrets": quality_gates.SecretsGate,
            "integration-tests-exist": quality_gates.IntegrationTestsGate,
        }
        return kinds[name]()

    return build


def _fact_gate(name: str) -> Callable[[], Gate]:
    """Seed 001's staging → production facts (fact_gates.py), imported by a transition that
    names one."""

    def build() -> Gate:
        from skillstage.lifecycle import fact_gates

        kinds: dict[str, Callable[[], Gate]] = {
            "rollback-drill": fact_gates.RollbackDrillGate,
            "uptime": fact_gates.UptimeGate,
            "monitoring": fact_gates.MonitoringGate,
        }
        return kinds[name]()

    return build


def _tests_gate() -> Gate:
    # A skill keeps test.sh exactly as before (`gates.TestsGate`); a Python project without
    # test.sh gets pytest.
    return _quality_gate("tests")()


BUILTIN_GATES: dict[str, Callable[[], Gate]] = {
    "structure": lambda: FindingsGate("structure", frozenset({"content"}), "required files"),
    "schema": lambda: FindingsGate("schema", frozenset({"schema"}), "frontmatter schema"),
    "spec": lambda: FindingsGate("spec", frozenset({"parse", "spec"}), "Agent Skills spec"),
    "security": lambda: FindingsGate("security", frozenset({"security"}), "security checks"),
    "tests": _tests_gate,
    "conflicts": ConflictsGate,
    "dependencies": DependenciesGate,
    "metrics": _metrics_gate,
    "approval": _approval_gate,
    **{
        name: _quality_gate(name)
        for name in ("coverage", "lint", "types", "secrets", "integration-tests-exist")
    },
    **{name: _fact_gate(name) for name in ("rollback-drill", "uptime", "monitoring")},
}


def gates_for(project: Project, transition: TransitionConfig) -> list[Gate]:
    """The gates a transition names, built in or configured commands, in order."""
    gates: list[Gate] = []
    for name in transition.gates:
        # A command gate first: one named like a quality gate (a [gates.lint] written before
        # `lint` was built in) keeps running its command; the others cannot take a built-in name.
        if name in project.config.gates:
            gates.append(CommandGate(name, project.config.gates[name]))
        elif name in BUILTIN_GATES:
            gates.append(BUILTIN_GATES[name]())
        else:  # config validation prevents this; kept for configs built in code
            raise ConfigError(f"unknown gate {name!r}", path=project.source)
    return gates
