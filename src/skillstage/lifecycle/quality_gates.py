"""Seed 001's quality gates for Python components, run with the real tools.

`coverage` (coverage.py over pytest, or a report the component carries), `tests` (pytest's exit
code and counts for a Python project; test.sh for a skill, as always), `lint` (ruff), `types`
(pyright, else mypy where configured), `secrets` (detect-secrets against a baseline, else the
built-in scanner) and `integration-tests-exist`. Options are under [quality] in the config.

Every tool runs through `skillstage.process.run` (a timeout, an explicit environment, the
process group killed on timeout). pytest and coverage run in a scratch copy of the component:
what they write (.pytest_cache, .coverage, files a test makes) must not change the content being
promoted, whose digest is checked again before it moves. A tool that is not installed fails its
gate with how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillstage.config import Project, QualityConfig
from skillstage.lifecycle.gates import GateContext, GateResult, GateStatus, TestsGate
from skillstage.process import Completed, child_environment, run

_SHOWN = 5  # findings shown per gate (file:line)
# What the scratch copy leaves out: caches and build litter that tools rebuild.
_NOT_COPIED = shutil.ignore_patterns(
    "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".coverage", ".coverage.*"
)
_PYTHON_PROJECT_FILES = (
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "pytest.ini",
    "tox.ini",
    "conftest.py",
)


class ToolMissing(Exception):
    """A tool a gate needs is not installed; the message says how to install it."""


def _quality(context: GateContext) -> QualityConfig:
    return context.project.config.quality


def python_for(project: Project, component: Path) -> str:
    """The interpreter that runs a component's tests and checks: [quality] python, else the
    component's .venv/bin/python, else the one running skillstage."""
    given = project.config.quality.python
    if given:
        path = Path(given)
        if path.is_absolute() or "/" in given:
            return str(path if path.is_absolute() else project.root / path)
        found = shutil.which(given)
        if found is None:
            raise ToolMissing(f"[quality] python = {given!r} is not on PATH")
        return found
    own = component / ".venv" / "bin" / "python"
    return str(own) if own.exists() else sys.executable


def find_tool(name: str, configured: str | None, python: str, install: str) -> str:
    """A tool's executable: the configured path, else beside the interpreter (a virtualenv's
    tools are not always on PATH), else on PATH."""
    if configured:
        if Path(configured).is_file() and os.access(configured, os.X_OK):
            return configured
        found = shutil.which(configured)
        if found:
            return found
        raise ToolMissing(f"{name} is not at {configured}: {install}, or fix the path")
    beside = Path(python).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name, path=child_environment()["PATH"])
    if found:
        return found
    raise ToolMissing(f"{name} is not installed (not beside {python}, not on PATH): {install}")


def _is_test_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def has_pytest_tests(context: GateContext) -> bool:
    """Whether a component is a Python project with tests for pytest: a project file
    (pyproject.toml, setup.py, ...) or a tests/ directory, and a test_*.py or *_test.py file.
    A skill without them (a tests/ folder of fixtures, a script's pyproject.toml) keeps
    today's `tests` gate."""
    component = context.skill.path
    project = any((component / name).is_file() for name in _PYTHON_PROJECT_FILES)
    project = project or (component / "tests").is_dir()
    return project and any(_is_test_file(f.path) for f in context.skill.files)


def _run(args: Sequence[str], cwd: Path, context: GateContext, **extra: str) -> Completed:
    env = child_environment(
        {
            "PYTHONDONTWRITEBYTECODE": "1",
            "SKILLSTAGE_SKILL": context.skill.name,
            "SKILLSTAGE_FROM_STAGE": context.from_stage,
            "SKILLSTAGE_TO_STAGE": context.to_stage,
            **extra,
        }
    )
    return run(args, cwd=cwd, timeout=_quality(context).timeout_seconds, env=env)


def _timed_out(gate: str, what: str, context: GateContext) -> GateResult:
    return GateResult(
        gate,
        "fail",
        f"{what} did not finish within {_quality(context).timeout_seconds:g} s ([quality] "
        "timeout_seconds); its process group was killed",
    )


def _missing_module(result: Completed, module: str) -> bool:
    return f"No module named {module}" in result.stderr


def _more(count: int, shown: int) -> list[str]:
    return [f"… and {count - shown} more"] if count > shown else []


@contextmanager
def scratch_copy(component: Path) -> Iterator[Path]:
    """A copy of the component to run its tests in, deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="skillstage-quality-") as scratch:
        copy = Path(scratch) / component.name
        shutil.copytree(component, copy, symlinks=True, ignore=_NOT_COPIED)
        yield copy


# -- pytest and coverage -------------------------------------------------------------------


@dataclass(frozen=True)
class PytestRun:
    """What one pytest run said: its exit code and counts (from its JUnit XML report)."""

    returncode: int
    tests: int
    failures: int
    errors: int
    skipped: int
    failed: list[str]  # "test id: message" of the first few failures
    output: str

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.errors - self.skipped

    def counts(self) -> str:
        parts = [f"{self.passed} passed"]
        parts += [f"{n} {what}" for n, what in ((self.failures, "failed"), (self.errors, "errors"))]
        parts += [f"{self.skipped} skipped"] if self.skipped else []
        return ", ".join(p for p in parts if not p.startswith("0 ") or p.endswith("passed"))


_PYTEST_EXITS = {
    2: "was interrupted",
    3: "hit an internal error",
    4: "was given bad arguments",
    5: "collected no tests",
}


def _read_junit(path: Path, returncode: int, output: str) -> PytestRun:
    import xml.etree.ElementTree as ET  # (pytest wrote it in our scratch directory)

    tests = failures = errors = skipped = 0
    failed: list[str] = []
    if path.is_file():
        root = ET.parse(path).getroot()
        for suite in root.iter("testsuite"):
            tests += int(suite.get("tests", 0))
            failures += int(suite.get("failures", 0))
            errors += int(suite.get("errors", 0))
            skipped += int(suite.get("skipped", 0))
            for case in suite.iter("testcase"):
                problem = case.find("failure")
                if problem is None:
                    problem = case.find("error")
                if problem is not None and len(failed) < _SHOWN:
                    where = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
                    message = (problem.get("message") or "").splitlines()
                    failed.append(f"{where}: {message[0] if message else problem.tag}")
    return PytestRun(returncode, tests, failures, errors, skipped, failed, output)


def run_pytest(
    context: GateContext, copy: Path, python: str, *, under_coverage: list[str] | None = None
) -> PytestRun:
    """pytest in `copy` (under `coverage run` when `under_coverage` gives its arguments)."""
    quality = _quality(context)
    report = copy.parent / "junit.xml"
    pytest = ["-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
    pytest += quality.tests.pytest_args
    if under_coverage is not None:
        args = [python, "-m", "coverage", "run", *under_coverage, *pytest]
    else:
        args = [python, *pytest]
    result = _run(args, copy, context, COVERAGE_FILE=str(copy.parent / "coverage.data"))
    if result.timed_out:
        raise TimeoutError
    if under_coverage is not None and _missing_module(result, "coverage"):
        raise ToolMissing(
            f"coverage.py is not installed for {python}: `{python} -m pip install coverage`, "
            "or set [quality] python to an interpreter that has it"
        )
    if _missing_module(result, "pytest"):
        raise ToolMissing(
            f"pytest is not installed for {python}: `{python} -m pip install pytest`, or set "
            "[quality] python to an interpreter that has it"
        )
    return _read_junit(report, result.returncode, result.output_tail(15))


class PytestGate:
    """`tests`: pytest's exit code and counts for a Python project; test.sh for a skill exactly
    as the `tests` gate always ran it ([quality.tests] runner)."""

    name = "tests"

    def check(self, context: GateContext) -> GateResult:
        runner = _quality(context).tests.runner
        component = context.skill.path
        if runner == "test.sh" or (
            runner == "auto"
            and ((component / "test.sh").is_file() or not has_pytest_tests(context))
        ):
            return TestsGate().check(context)
        try:
            python = python_for(context.project, component)
            with scratch_copy(component) as copy:
                outcome = run_pytest(context, copy, python)
        except ToolMissing as exc:
            return GateResult(self.name, "fail", str(exc))
        except TimeoutError:
            return _timed_out(self.name, "pytest", context)
        if outcome.returncode in _PYTEST_EXITS:
            return GateResult(
                self.name,
                "fail",
                f"pytest {_PYTEST_EXITS[outcome.returncode]} (exit {outcome.returncode})",
                [outcome.output] if outcome.output else [],
            )
        if outcome.returncode != 0 or outcome.failures or outcome.errors:
            return GateResult(
                self.name,
                "fail",
                f"pytest: {outcome.counts()} (exit {outcome.returncode})",
                outcome.failed or ([outcome.output] if outcome.output else []),
            )
        return GateResult(self.name, "pass", f"pytest: {outcome.counts()}")


@dataclass(frozen=True)
class Coverage:
    """A coverage measurement: the total percentage and each file's missing lines."""

    percent: float
    missing: dict[str, list[int]]  # file → its missing line numbers


def _ranges(lines: Sequence[int], limit: int = 4) -> str:
    spans: list[list[int]] = []
    for line in sorted(lines):
        if spans and line == spans[-1][1] + 1:
            spans[-1][1] = line
        else:
            spans.append([line, line])
    shown = [f"{a}-{b}" if a != b else str(a) for a, b in spans[:limit]]
    return ", ".join(shown) + (", …" if len(spans) > limit else "")


def _from_json(path: Path) -> Coverage:
    data = json.loads(path.read_text(encoding="utf-8"))
    files = {name: list(info.get("missing_lines", [])) for name, info in data["files"].items()}
    return Coverage(float(data["totals"]["percent_covered"]), files)


def _from_xml(path: Path) -> Coverage:
    import xml.etree.ElementTree as ET  # (expat refuses entity expansion bombs)

    root = ET.parse(path).getroot()
    lines = [int(root.get(k, 0)) for k in ("lines-covered", "lines-valid")]
    branches = [int(root.get(k, 0)) for k in ("branches-covered", "branches-valid")]
    valid = lines[1] + branches[1]
    # coverage.py's total counts lines and branches together; 100% of nothing is 100%.
    percent = 100.0 * (lines[0] + branches[0]) / valid if valid else 100.0
    missing: dict[str, list[int]] = {}
    for cls in root.iter("class"):
        gaps = [int(n.get("number", 0)) for n in cls.iter("line") if n.get("hits") == "0"]
        if gaps:
            missing.setdefault(cls.get("filename", "?"), []).extend(gaps)
    return Coverage(percent, missing)


def _json_report(context: GateContext, python: str, cwd: Path, data: Path) -> Coverage:
    out = data.parent / "coverage-report.json"
    result = _run(
        [python, "-m", "coverage", "json", "-i", f"--data-file={data}", "-o", str(out)],
        cwd,
        context,
    )
    if result.timed_out:
        raise TimeoutError
    if _missing_module(result, "coverage"):
        raise ToolMissing(
            f"coverage.py is not installed for {python}: `{python} -m pip install coverage`"
        )
    # (exit 2 is the component's own fail_under; this gate judges the minimum itself)
    if not out.is_file():
        text = result.output_tail(5)
        raise ValueError(text or f"coverage json exited {result.returncode}")
    return _from_json(out)


def _percent(value: float, minimum: float) -> str:
    shown = f"{value:.1f}"
    if value < minimum and shown == f"{minimum:.1f}":
        shown = f"{value:.3f}"  # 59.96% must not read "60.0%" below a 60% minimum
    return f"{shown}%"


class CoverageGate:
    """`coverage`: the component's tests under coverage.py (or its report) reach the minimum."""

    name = "coverage"

    def minimum(self, context: GateContext) -> float:
        transition = next(
            (
                t
                for t in context.project.config.transitions
                if t.from_stage == context.from_stage and t.to_stage == context.to_stage
            ),
            None,
        )
        given = transition.thresholds.min_coverage if transition is not None else None
        return given if given is not None else _quality(context).coverage.minimum

    def measure(self, context: GateContext) -> tuple[Coverage, list[str]]:
        settings = _quality(context).coverage
        component = context.skill.path
        notes: list[str] = []
        if settings.report is not None:
            report = Path(settings.report)
            report = report if report.is_absolute() else component / report
            if not report.is_file():
                raise ValueError(
                    f"no coverage report at {report} ([quality.coverage] report): produce it "
                    "with `coverage xml` (or leave `report` out to run the tests)"
                )
            if report.suffix == ".xml":
                return _from_xml(report), notes
            python = python_for(context.project, component)
            with tempfile.TemporaryDirectory(prefix="skillstage-quality-") as scratch:
                data = Path(scratch) / "coverage.data"
                shutil.copyfile(report, data)
                return _json_report(context, python, component, data), notes
        python = python_for(context.project, component)
        source = [f"--source={','.join(settings.source)}"] if settings.source else []
        with scratch_copy(component) as copy:
            outcome = run_pytest(context, copy, python, under_coverage=source)
            if outcome.returncode in _PYTEST_EXITS:
                raise ValueError(
                    f"pytest {_PYTEST_EXITS[outcome.returncode]} (exit {outcome.returncode}) "
                    f"under coverage: nothing to measure\n{outcome.output}"
                )
            if outcome.returncode != 0:
                notes.append(f"(pytest: {outcome.counts()}; the `tests` gate judges the tests)")
            measured = _json_report(context, python, copy, copy.parent / "coverage.data")
        return measured, notes

    def check(self, context: GateContext) -> GateResult:
        minimum = self.minimum(context)
        try:
            measured, notes = self.measure(context)
        except ToolMissing as exc:
            return GateResult(self.name, "fail", str(exc))
        except TimeoutError:
            return _timed_out(self.name, "coverage run -m pytest", context)
        except (ValueError, KeyError, OSError) as exc:
            message, *rest = str(exc).splitlines() or ["cannot measure coverage"]
            return GateResult(self.name, "fail", message, [line for line in rest if line])
        worst = sorted(measured.missing.items(), key=lambda item: (-len(item[1]), item[0]))
        worst = [(name, gaps) for name, gaps in worst if gaps]
        limit = _quality(context).coverage.show_files
        files = [
            f"{name}: {len(gaps)} missing line(s) ({_ranges(gaps)})" for name, gaps in worst[:limit]
        ] + _more(len(worst), limit)
        passed = measured.percent >= minimum
        shown = _percent(measured.percent, minimum)
        short = f"{minimum - measured.percent:.2f} points short" if not passed else None
        criterion = {
            "name": "coverage",
            "actual": round(measured.percent, 2),
            "required": f">= {minimum:g}%",
            "passed": passed,
            "missing": "; ".join([short, *files]) if short else None,
        }
        if passed:
            return GateResult(
                self.name,
                "pass",
                f"coverage {shown} (minimum {minimum:g}%)",
                [*notes, *files],
                criteria=[criterion],
            )
        return GateResult(
            self.name,
            "fail",
            f"coverage {shown} is below the minimum {minimum:g}% ({short}); most missing lines:"
            if files
            else f"coverage {shown} is below the minimum {minimum:g}% ({short})",
            [*files, *notes],
            criteria=[criterion],
        )


# -- ruff, pyright, mypy -------------------------------------------------------------------


def _component_paths(paths: Sequence[str]) -> list[str]:
    return list(paths) or ["."]


class LintGate:
    """`lint`: ruff check finds nothing."""

    name = "lint"

    def check(self, context: GateContext) -> GateResult:
        settings = _quality(context).lint
        component = context.skill.path
        try:
            python = python_for(context.project, component)
            ruff = find_tool("ruff", settings.ruff, python, "install it with `pip install ruff`")
        except ToolMissing as exc:
            return GateResult(self.name, "fail", str(exc))
        args = [ruff, "check", "--no-cache", "--output-format=json", "--quiet"]
        result = _run([*args, *_component_paths(settings.paths)], component, context)
        if result.timed_out:
            return _timed_out(self.name, "ruff", context)
        try:
            findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
        except json.JSONDecodeError:
            return GateResult(
                self.name,
                "fail",
                f"ruff exited {result.returncode}",
                [result.output_tail(10)] if result.output_tail(10) else [],
            )
        if result.returncode not in (0, 1):
            return GateResult(self.name, "fail", f"ruff exited {result.returncode}", [])
        if not findings:
            return GateResult(self.name, "pass", "ruff: clean")
        lines = []
        for item in findings[:_SHOWN]:
            where = os.path.relpath(str(item.get("filename", "?")), component)
            row = (item.get("location") or {}).get("row", "?")
            lines.append(f"{where}:{row}: {item.get('code') or 'error'} {item.get('message', '')}")
        rules = sorted({str(item.get("code") or "syntax") for item in findings})
        return GateResult(
            self.name,
            "fail",
            f"ruff: {len(findings)} finding(s) ({', '.join(rules[:8])})",
            lines + _more(len(findings), _SHOWN),
        )


_MYPY_CONFIGS = ("mypy.ini", ".mypy.ini")


def mypy_configured(component: Path) -> bool:
    """Whether the component configures mypy (mypy.ini, [mypy] in setup.cfg, [tool.mypy])."""
    if any((component / name).is_file() for name in _MYPY_CONFIGS):
        return True
    for name, marker in (("pyproject.toml", "[tool.mypy"), ("setup.cfg", "[mypy")):
        path = component / name
        if path.is_file() and marker in path.read_text(encoding="utf-8", errors="replace"):
            return True
    return False


class TypesGate:
    """`types`: pyright when installed (seed 001), else mypy where the component configures it;
    the result says which ran."""

    name = "types"

    def check(self, context: GateContext) -> GateResult:
        settings = _quality(context).types
        component = context.skill.path
        try:
            python = python_for(context.project, component)
            checker, tool = self._checker(context, python)
        except ToolMissing as exc:
            return GateResult(self.name, "fail", str(exc))
        paths = _component_paths(settings.paths)
        if checker == "pyright":
            args = [tool, "--outputjson", "--pythonpath", python, *paths]
        else:
            with tempfile.TemporaryDirectory(prefix="skillstage-mypy-") as cache:
                args = [tool, f"--python-executable={python}", f"--cache-dir={cache}"]
                args += ["--no-color-output", "--no-error-summary", "--show-absolute-path"]
                result = _run([*args, *paths], component, context)
            return self._mypy(result, component, context)
        return self._pyright(_run(args, component, context), component, context)

    def _checker(self, context: GateContext, python: str) -> tuple[str, str]:
        settings = _quality(context).types
        pyright_install = "install it with `pip install pyright` (or `npm install -g pyright`)"
        mypy_install = "install it with `pip install mypy`"
        if settings.checker == "pyright":
            return "pyright", find_tool("pyright", settings.pyright, python, pyright_install)
        if settings.checker == "mypy":
            return "mypy", find_tool("mypy", settings.mypy, python, mypy_install)
        try:
            return "pyright", find_tool("pyright", settings.pyright, python, pyright_install)
        except ToolMissing as missing:
            if not mypy_configured(context.skill.path):
                raise ToolMissing(
                    f"{missing}; mypy is not configured for this component either (add "
                    '[tool.mypy] to its pyproject.toml, or set [quality.types] checker = "mypy")'
                ) from None
            return "mypy", find_tool("mypy", settings.mypy, python, mypy_install)

    def _mypy(self, result: Completed, component: Path, context: GateContext) -> GateResult:
        if result.timed_out:
            return _timed_out(self.name, "mypy", context)
        errors = [line for line in result.stdout.splitlines() if ": error:" in line]
        why = " (pyright is not installed)" if _quality(context).types.checker == "auto" else ""
        if result.returncode == 0:
            return GateResult(self.name, "pass", f"mypy: clean{why}")
        if not errors:
            return GateResult(
                self.name,
                "fail",
                f"mypy exited {result.returncode}",
                [result.output_tail(10)] if result.output_tail(10) else [],
            )
        shown = [_relative_line(line, component) for line in errors[:_SHOWN]]
        return GateResult(
            self.name,
            "fail",
            f"mypy: {len(errors)} error(s){why}",
            shown + _more(len(errors), _SHOWN),
        )

    def _pyright(self, result: Completed, component: Path, context: GateContext) -> GateResult:
        if result.timed_out:
            return _timed_out(self.name, "pyright", context)
        try:
            data = json.loads(result.stdout)
        except json.JSONDecodeError:
            return GateResult(
                self.name,
                "fail",
                f"pyright exited {result.returncode}",
                [result.output_tail(10)] if result.output_tail(10) else [],
            )
        errors = [d for d in data.get("generalDiagnostics", []) if d.get("severity") == "error"]
        if not errors and result.returncode == 0:
            return GateResult(self.name, "pass", "pyright: clean")
        shown = []
        for item in errors[:_SHOWN]:
            line = ((item.get("range") or {}).get("start") or {}).get("line", -1) + 1
            where = os.path.relpath(str(item.get("file", "?")), component)
            shown.append(f"{where}:{line}: {item.get('message', '').splitlines()[0]}")
        return GateResult(
            self.name,
            "fail",
            f"pyright: {len(errors)} error(s)" if errors else f"pyright exited {result.returncode}",
            shown + _more(len(errors), _SHOWN),
        )


def _relative_line(line: str, component: Path) -> str:
    prefix = str(component.resolve()) + os.sep
    return line[len(prefix) :] if line.startswith(prefix) else line


# -- secrets, integration tests --------------------------------------------------------------


class SecretsGate:
    """`secrets`: detect-secrets finds nothing its baseline does not record; without a baseline,
    the built-in scanner finds nothing (the fast path)."""

    name = "secrets"

    def check(self, context: GateContext) -> GateResult:
        settings = _quality(context).secrets
        use = settings.scanner
        if use == "auto":
            use = "detect-secrets" if settings.baseline else "builtin"
        if use == "builtin":
            return self._builtin(context)
        try:
            python = python_for(context.project, context.skill.path)
            tool = find_tool(
                "detect-secrets",
                settings.detect_secrets,
                python,
                "install it with `pip install detect-secrets`",
            )
            return self._detect_secrets(context, tool)
        except ToolMissing as exc:
            return GateResult(self.name, "fail", str(exc))

    def _files(self, context: GateContext, skip: Path | None) -> list[str]:
        files = [f.path for f in context.skill.files if not f.is_symlink]
        if skip is not None:
            component = context.skill.path.resolve()
            files = [f for f in files if (component / f).resolve() != skip.resolve()]
        return files

    def _builtin(self, context: GateContext) -> GateResult:
        from skillstage.skill.secrets import find_secrets

        hits = []
        for name in self._files(context, None):
            try:
                data = (context.skill.path / name).read_bytes()
            except OSError:
                continue
            hits += [f"{name}:{hit.line}: {hit.kind} ({hit.preview})" for hit in find_secrets(data)]
        if not hits:
            return GateResult(self.name, "pass", "built-in secret scanner: clean (no baseline)")
        return GateResult(
            self.name,
            "fail",
            f"built-in secret scanner: {len(hits)} secret(s)",
            hits[:_SHOWN] + _more(len(hits), _SHOWN),
        )

    def _detect_secrets(self, context: GateContext, tool: str) -> GateResult:
        component = context.skill.path
        given = _quality(context).secrets.baseline
        baseline = None
        if given:
            baseline = Path(given) if Path(given).is_absolute() else component / given
            if not baseline.is_file():
                return GateResult(
                    self.name,
                    "fail",
                    f"no detect-secrets baseline at {baseline} ([quality.secrets] baseline)",
                    [f"create it: `cd {component} && detect-secrets scan > {given}`"],
                )
        files = self._files(context, baseline)
        with tempfile.TemporaryDirectory(prefix="skillstage-secrets-") as scratch:
            args = [tool, "scan"]
            known: set[tuple[str, str]] = set()
            if baseline is not None:
                # `scan --baseline` rewrites the file it is given: a copy, with the baseline's
                # plugins and filters; what it adds to the recorded results is new.
                copy = Path(scratch) / "baseline.json"
                shutil.copyfile(baseline, copy)
                try:
                    recorded = json.loads(baseline.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    return GateResult(
                        self.name, "fail", f"the baseline {baseline} is not valid JSON: {exc}"
                    )
                known = {
                    (name, str(item.get("hashed_secret")))
                    for name, items in (recorded.get("results") or {}).items()
                    for item in items
                }
                args += ["--baseline", str(copy)]
            result = _run([*args, *files], component, context)
            if result.timed_out:
                return _timed_out(self.name, "detect-secrets", context)
            try:
                found = json.loads(
                    (Path(scratch) / "baseline.json").read_text(encoding="utf-8")
                    if baseline is not None
                    else result.stdout
                )
            except (OSError, json.JSONDecodeError):
                return GateResult(
                    self.name,
                    "fail",
                    f"detect-secrets exited {result.returncode}",
                    [result.output_tail(10)] if result.output_tail(10) else [],
                )
        new = [
            f"{name}:{item.get('line_number', '?')}: {item.get('type', 'secret')}"
            for name, items in sorted((found.get("results") or {}).items())
            for item in items
            if (name, str(item.get("hashed_secret"))) not in known
        ]
        against = f"against {given}" if given else "(no baseline)"
        if not new:
            return GateResult(
                self.name,
                "pass",
                f"detect-secrets: clean {against} ({len(known)} recorded secret(s) allowed)"
                if given
                else f"detect-secrets: clean {against}",
            )
        hint = (
            [
                "if one is a false positive: `detect-secrets scan --baseline "
                f"{given}` and `detect-secrets audit {given}` in the component"
            ]
            if given
            else []
        )
        return GateResult(
            self.name,
            "fail",
            f"detect-secrets: {len(new)} new secret(s) {against}",
            new[:_SHOWN] + _more(len(new), _SHOWN) + hint,
        )


class IntegrationTestsGate:
    """`integration-tests-exist`: a test file under a configured path, or one that uses the
    configured pytest marker."""

    name = "integration-tests-exist"

    def check(self, context: GateContext) -> GateResult:
        settings = _quality(context).integration
        component = context.skill.path
        tests = [f.path for f in context.skill.files if _is_test_file(f.path)]
        for where in settings.paths:
            prefix = where.strip("/") + "/"
            under = [t for t in tests if t.startswith(prefix)]
            if under:
                return GateResult(
                    self.name,
                    "pass",
                    f"{len(under)} integration test file(s) under {where}",
                    under[:_SHOWN] + _more(len(under), _SHOWN),
                )
        if settings.marker:
            needle = f"mark.{settings.marker}"
            marked = []
            for name in tests:
                try:
                    text = (component / name).read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                if needle in text:
                    marked.append(name)
            if marked:
                return GateResult(
                    self.name,
                    "pass",
                    f"{len(marked)} test file(s) marked {settings.marker}",
                    marked[:_SHOWN] + _more(len(marked), _SHOWN),
                )
        looked = [f"a test file under {', '.join(settings.paths) or '(no paths)'}"]
        if settings.marker:
            looked.append(f"a test marked @pytest.mark.{settings.marker}")
        status: GateStatus = "fail"
        return GateResult(
            self.name,
            status,
            f"no integration tests: looked for {' or '.join(looked)}",
            ["write them there, or set [quality.integration] paths / marker"],
        )
