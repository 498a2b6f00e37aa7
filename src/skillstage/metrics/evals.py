"""Benchmark cases (seed 002): run a skill's `evals/evals.json` through its execute.sh and score
each case's decision and pattern fidelity.

evals.json follows the Agent Skills evals layout: an object with `evals: [...]` (a top-level list is
accepted too), each case with an `id`, the `input` sent to the skill, the expected decision
(`expected: "<decision>"`, `expected: {"decision": ...}` or `expected_decision: ...`) and an
optional `critical: true`. Other keys the Agent Skills tooling uses (skill_name, prompt,
expected_output, files, assertions) are left alone.

Decisions are compared case-insensitively. A decision in `negative_decisions` is a negative,
anything else a positive, in seed 002's spam-detection sense: a false positive is a positive
decision on a case expecting a negative; a false negative is a negative, missing or errored
decision on a case expecting a positive; a critical false negative is one on a critical case.
"""

from __future__ import annotations

import json
import math
import os
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillstage.errors import EXIT_USAGE, SkillstageError
from skillstage.metrics.patterns import Pattern, load_patterns, score_execution
from skillstage.metrics.record import BENCHMARK_SOURCE
from skillstage.process import Completed, child_environment, run

EVALS_FILE = Path("evals") / "evals.json"
EXECUTE_SCRIPT = "execute.sh"
CASE_ENV = "SKILLSTAGE_EVAL_CASE"
DEFAULT_NEGATIVE_DECISIONS = ("none", "negative", "no", "allow", "ok", "pass", "ignore")

_EXAMPLE = (
    '{"evals": [{"id": "spam-1", "input": {"text": "WIN $$$"}, "expected": "spam", '
    '"critical": true}]}'
)


class EvalsError(SkillstageError):
    """A skill's benchmark cases cannot be read or run."""

    exit_code = EXIT_USAGE
    code = "EVALS"


def _normal(decision: str) -> str:
    return decision.strip().casefold()


@dataclass(frozen=True)
class EvalCase:
    """One benchmark case: what is sent to the skill and the decision expected back."""

    id: str | int
    input: Any
    expected: str
    critical: bool = False


@dataclass(frozen=True)
class EvalSuite:
    """A skill's benchmark cases, and which decisions count as negatives."""

    path: Path
    cases: list[EvalCase]
    negative_decisions: tuple[str, ...] = DEFAULT_NEGATIVE_DECISIONS

    def is_negative(self, decision: str) -> bool:
        """Whether `decision` is a negative one (case-insensitive)."""
        return _normal(decision) in {_normal(item) for item in self.negative_decisions}


@dataclass(frozen=True)
class CaseResult:
    """How one case went."""

    case_id: str | int
    expected: str
    decision: str | None  # None when the case raised an exception
    correct: bool
    critical: bool  # the case is marked critical
    false_positive: bool
    false_negative: bool
    execution_time_ms: float
    fidelity: float | None = None  # None when no patterns were scored
    followed: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    exception: bool = False
    error: str | None = None

    @property
    def critical_false_negative(self) -> bool:
        return self.critical and self.false_negative

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case_id,
            "expected": self.expected,
            "decision": self.decision,
            "correct": self.correct,
            "critical": self.critical,
            "false_positive": self.false_positive,
            "false_negative": self.false_negative,
            "critical_false_negative": self.critical_false_negative,
            "execution_time_ms": round(self.execution_time_ms, 3),
            "fidelity": self.fidelity,
            "followed": self.followed,
            "missed": self.missed,
            "exception": self.exception,
            "error": self.error,
        }

    def to_record_fields(self) -> dict[str, Any]:
        """The ExecutionRecord fields for this case (pass them to `record_execution` with the
        skill, version and digest). Pattern fields are None when no patterns were scored."""
        scored = self.fidelity is not None
        return {
            "pattern_fidelity": self.fidelity,
            "outcome_quality": 1.0 if self.correct else 0.0,
            "execution_time_ms": self.execution_time_ms,
            "patterns_followed": list(self.followed) if scored else None,
            "patterns_missed": list(self.missed) if scored else None,
            "exception": self.exception,
            "false_positive": self.false_positive,
            "false_negative": self.false_negative,
            "critical": self.critical_false_negative,
            "tags": {"source": BENCHMARK_SOURCE, "case": str(self.case_id)},
        }


@dataclass(frozen=True)
class EvalSummary:
    """The numbers of one run of a suite."""

    cases_total: int
    cases_executed: int  # ran and produced a decision
    pass_rate: float  # correct / total
    outcome_quality: float  # correct / executed; 0.0 when none executed
    pattern_fidelity: float | None  # mean over executed cases with a fidelity
    false_positive_rate: float  # false positives / cases expecting a negative
    false_positives: int
    false_negatives: int
    critical_false_negatives: int
    exceptions: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "cases_total": self.cases_total,
            "cases_executed": self.cases_executed,
            "pass_rate": self.pass_rate,
            "outcome_quality": self.outcome_quality,
            "pattern_fidelity": self.pattern_fidelity,
            "false_positive_rate": self.false_positive_rate,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
            "critical_false_negatives": self.critical_false_negatives,
            "exceptions": self.exceptions,
        }


@dataclass(frozen=True)
class EvalRun:
    """Every case's result and the summary of a run of a skill's benchmark cases."""

    skill_dir: Path
    cases: list[CaseResult]
    summary: EvalSummary

    def to_dict(self) -> dict[str, Any]:
        return {
            "skill_dir": str(self.skill_dir),
            "summary": self.summary.to_dict(),
            "cases": [case.to_dict() for case in self.cases],
        }


def load_cases(skill_dir: Path | str) -> EvalSuite:
    """Read `<skill_dir>/evals/evals.json`. Raises `EvalsError` when it is missing (saying what to
    create) or invalid (naming the file and the case)."""
    path = Path(skill_dir) / EVALS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalsError(
            f"no benchmark cases: {EVALS_FILE} not found in {skill_dir}",
            path=path,
            hint=f"create {EVALS_FILE} in the skill, e.g. {_EXAMPLE}",
        ) from None
    except UnicodeDecodeError as exc:
        raise EvalsError(
            f"evals.json is not UTF-8 text (byte {exc.start})", path=path, hint="save it as UTF-8"
        ) from None
    except OSError as exc:
        raise EvalsError(
            f"cannot read evals.json: {exc.strerror}",
            path=path,
            hint="check that it is a readable file",
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvalsError(
            f"evals.json is not valid JSON: {exc.msg} (column {exc.colno})",
            path=path,
            line=exc.lineno,
            hint="fix the JSON syntax",
        ) from None
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, 1,000 nested arrays
        raise EvalsError(
            f"evals.json cannot be read: {_unreadable_json(exc)}",
            path=path,
            hint="keep numbers under 4,300 digits and nesting shallow",
        ) from None
    negatives: Any = DEFAULT_NEGATIVE_DECISIONS
    if isinstance(data, dict):
        if "evals" not in data:
            raise EvalsError(
                "evals.json has no evals: key", path=path, hint=f"list the cases, e.g. {_EXAMPLE}"
            )
        entries = data["evals"]
        negatives = data.get("negative_decisions", DEFAULT_NEGATIVE_DECISIONS)
    else:
        entries = data
    if not isinstance(entries, list):
        raise EvalsError(
            f"evals is a JSON {_kind(entries)}, not a list of cases",
            path=path,
            hint=f"write evals as a list, e.g. {_EXAMPLE}",
        )
    if not entries:
        raise EvalsError("evals.json has no cases", path=path, hint="add at least one case")
    if not isinstance(negatives, list | tuple) or not all(
        isinstance(item, str) for item in negatives
    ):
        raise EvalsError(
            "negative_decisions must be a list of strings",
            path=path,
            hint='e.g. "negative_decisions": ["allow", "ham"]',
        )
    cases: list[EvalCase] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        case = _case(entry, index + 1, path)
        key = str(case.id)
        if key in seen:
            raise EvalsError(
                f"case {index + 1}: id {case.id!r} is also the id of case {seen[key]}",
                path=path,
                hint="give every case a unique id",
            )
        seen[key] = index + 1
        cases.append(case)
    return EvalSuite(path=path, cases=cases, negative_decisions=tuple(negatives))


def _case(entry: Any, number: int, path: Path) -> EvalCase:
    where = f"case {number}"

    def fail(message: str, hint: str) -> EvalsError:
        return EvalsError(f"{where}: {message}", path=path, hint=hint)

    if not isinstance(entry, dict):
        raise fail(f"is a JSON {_kind(entry)}, not an object", f"write each case as {_EXAMPLE}")
    identifier = entry.get("id")
    if identifier is None:
        raise fail("has no id", 'add "id": "<a unique name or number>"')
    if isinstance(identifier, bool) or not isinstance(identifier, str | int) or identifier == "":
        raise fail(
            f"id must be a non-empty string or an integer, not {identifier!r}", 'e.g. "id": 1'
        )
    where = f"case {number} (id {identifier!r})"
    if "input" not in entry:
        raise fail("has no input", 'add "input": <the JSON sent to execute.sh on stdin>')
    expected = _expected(entry)
    if expected is None:
        raise fail(
            "has no expected decision",
            'add "expected": "<decision>" (expected_output, if any, is prose and not compared)',
        )
    if not isinstance(expected, str) or not expected.strip():
        raise fail(
            f"the expected decision must be a non-empty string, not {expected!r}",
            'write "expected": "<decision>" or "expected": {"decision": "<decision>"}',
        )
    critical = entry.get("critical", False)
    if not isinstance(critical, bool):
        raise fail(f"critical must be true or false, not {critical!r}", 'write "critical": true')
    if "expected" in entry and "expected_decision" in entry:
        other = entry["expected_decision"]
        if not isinstance(other, str) or _normal(other) != _normal(expected):
            raise fail(
                "expected and expected_decision disagree", "keep one of expected/expected_decision"
            )
    return EvalCase(id=identifier, input=entry["input"], expected=expected, critical=critical)


def _expected(entry: dict[str, Any]) -> Any:
    if "expected" in entry:
        expected = entry["expected"]
        if isinstance(expected, dict):
            return expected.get("decision")
        return expected
    return entry.get("expected_decision")


@dataclass(frozen=True)
class Benchmark:
    """A skill's benchmark, checked and ready to run: its cases, execute.sh and patterns."""

    skill_dir: Path
    suite: EvalSuite
    script: Path
    patterns: list[Pattern]
    timeout: float

    def run(self) -> EvalRun:
        """Run every case through execute.sh, one process per case, and score it (see
        `run_evals`)."""
        results = [
            _run_case(self.script, self.suite, case, self.timeout, self.patterns)
            for case in self.suite.cases
        ]
        return EvalRun(
            skill_dir=self.skill_dir, cases=results, summary=_summary(self.suite, results)
        )


def prepare_evals(
    skill_dir: Path | str, *, timeout: float, patterns: list[Pattern] | None = None
) -> Benchmark:
    """Everything a run needs, checked before any case runs: evals.json, an executable
    execute.sh, the patterns (default: the skill's patterns.yaml; none when it has none)."""
    skill_dir = Path(skill_dir)
    if not timeout > 0:
        raise EvalsError(
            f"timeout must be a positive number of seconds, not {timeout!r}",
            hint="pass a per-case timeout such as 30",
        )
    suite = load_cases(skill_dir)
    script = skill_dir / EXECUTE_SCRIPT
    if not script.is_file():
        raise EvalsError(
            f"{EXECUTE_SCRIPT} not found: it runs each benchmark case",
            path=script,
            hint="create execute.sh: read the case's JSON on stdin, print "
            '{"decision": ..., "breadcrumbs": [...]}',
        )
    if not os.access(script, os.X_OK):
        raise EvalsError(
            f"{EXECUTE_SCRIPT} is not executable", path=script, hint=f"chmod +x {script}"
        )
    if patterns is None:
        patterns = load_patterns(skill_dir)
    return Benchmark(skill_dir, suite, script, patterns, timeout)


def run_evals(
    skill_dir: Path | str, *, timeout: float, patterns: list[Pattern] | None = None
) -> EvalRun:
    """Run every benchmark case of a skill through its execute.sh, one process per case, and
    score it.

    Each case's input goes to execute.sh as JSON on stdin, with SKILLSTAGE_EVAL_CASE=<id> and a
    fresh TMPDIR in its environment and the skill directory as its working directory; it must
    finish within `timeout` seconds and print a JSON object with `decision` and optionally
    `breadcrumbs` (a list of events). `patterns` defaults to the skill's patterns.yaml (none when
    it has none); with no patterns, fidelity is None. A case whose script exits non-zero, times
    out or prints no such object is an exception, not an error of the run.
    """
    return prepare_evals(skill_dir, timeout=timeout, patterns=patterns).run()


def _run_case(
    script: Path, suite: EvalSuite, case: EvalCase, timeout: float, patterns: Sequence[Pattern]
) -> CaseResult:
    # Scratch space of its own, so that a script writing files has somewhere to put them other
    # than the skill directory (whose content is the version being measured).
    # (a child it left running may still be writing there: what cannot be deleted is left)
    with tempfile.TemporaryDirectory(
        prefix="skillstage-eval-", ignore_cleanup_errors=True
    ) as scratch:
        completed = run(
            [str(script)],
            cwd=script.parent,
            timeout=timeout,
            env=child_environment({CASE_ENV: str(case.id), "TMPDIR": scratch}),
            stdin=json.dumps(case.input, ensure_ascii=False),
        )
    elapsed_ms = completed.seconds * 1000
    expects_negative = suite.is_negative(case.expected)
    output, error = _output(completed, timeout)
    if output is None:
        return CaseResult(
            case_id=case.id,
            expected=case.expected,
            decision=None,
            correct=False,
            critical=case.critical,
            false_positive=False,
            false_negative=not expects_negative,  # an errored decision is a negative
            execution_time_ms=elapsed_ms,
            exception=True,
            error=error,
        )
    decision, breadcrumbs = output
    negative = suite.is_negative(decision)
    score = score_execution(breadcrumbs, patterns) if patterns else None
    return CaseResult(
        case_id=case.id,
        expected=case.expected,
        decision=decision,
        correct=_normal(decision) == _normal(case.expected),
        critical=case.critical,
        false_positive=expects_negative and not negative,
        false_negative=not expects_negative and negative,
        execution_time_ms=elapsed_ms,
        fidelity=score.fidelity if score else None,
        followed=score.followed if score else [],
        missed=score.missed if score else [],
    )


def _output(
    completed: Completed, timeout: float
) -> tuple[tuple[str, list[Any]] | None, str | None]:
    """The decision and breadcrumbs execute.sh printed, or None and why not."""
    if completed.timed_out:
        return None, f"{EXECUTE_SCRIPT} did not finish within {timeout:g} s and was killed"
    if completed.returncode != 0:
        tail = completed.output_tail(5)
        code = completed.returncode
        ended = (
            f"was killed by {signal.Signals(-code).name}"
            if code < 0 and -code in signal.valid_signals()
            else f"exited with {code}"
        )
        return None, f"{EXECUTE_SCRIPT} {ended}" + (f": {tail}" if tail else "")
    data = _json_object(completed.stdout)
    if data is None:
        shown = completed.stdout.strip()[:200]
        printed = f"printed {shown!r}" if shown else "printed nothing"
        said = completed.stderr.strip()[-200:]
        return None, f"{EXECUTE_SCRIPT} {printed}, not a JSON object with a decision" + (
            f" (on stderr: {said!r})" if said and not shown else ""
        )
    decision = data.get("decision")
    if not isinstance(decision, str) or not decision.strip():
        what = "no decision" if decision is None else f"decision {decision!r}, not a string"
        return None, f'{EXECUTE_SCRIPT} printed {what}: print {{"decision": "<decision>"}}'
    breadcrumbs = data.get("breadcrumbs", [])
    if breadcrumbs is None:
        breadcrumbs = []
    if not isinstance(breadcrumbs, list):
        return (
            None,
            f"{EXECUTE_SCRIPT} printed breadcrumbs as a JSON {_kind(breadcrumbs)}, not a list",
        )
    return (decision, breadcrumbs), None


def _json_object(stdout: str) -> dict[str, Any] | None:
    # The whole output, else its last non-blank line: scripts often log before their answer.
    candidates = [stdout]
    lines = [line for line in stdout.splitlines() if line.strip()]
    if len(lines) > 1:
        candidates.append(lines[-1])
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except (ValueError, RecursionError):  # not JSON, or JSON nested or sized past reading
            continue
        if isinstance(data, dict):
            return data
    return None


def _unreadable_json(exc: ValueError | RecursionError) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _summary(suite: EvalSuite, results: list[CaseResult]) -> EvalSummary:
    total = len(results)
    executed = [result for result in results if result.decision is not None]
    correct = sum(result.correct for result in results)
    fidelities = [result.fidelity for result in executed if result.fidelity is not None]
    expecting_negative = sum(suite.is_negative(result.expected) for result in results)
    false_positives = sum(result.false_positive for result in results)
    return EvalSummary(
        cases_total=total,
        cases_executed=len(executed),
        pass_rate=correct / total if total else 0.0,
        outcome_quality=correct / len(executed) if executed else 0.0,
        pattern_fidelity=math.fsum(fidelities) / len(fidelities) if fidelities else None,
        false_positive_rate=false_positives / expecting_negative if expecting_negative else 0.0,
        false_positives=false_positives,
        false_negatives=sum(result.false_negative for result in results),
        critical_false_negatives=sum(result.critical_false_negative for result in results),
        exceptions=sum(result.exception for result in results),
    )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"
