"""Benchmark cases: evals/evals.json run through a real execute.sh."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from skillstage.metrics.evals import EvalsError, load_cases, run_evals
from skillstage.metrics.patterns import Pattern
from skillstage.metrics.record import record_execution

# A spam filter in plain bash: "win" anywhere in the input is spam. Some case ids misbehave on
# purpose. Its breadcrumbs say which case and directory it ran in.
CLASSIFIER = r"""#!/bin/bash
input=$(cat)
case "$SKILLSTAGE_EVAL_CASE" in
  slow) sleep 10 ;;
  crash) echo "cannot reach the model" >&2; exit 1 ;;
  garbage) echo "this is not json"; exit 0 ;;
  silent) exit 0 ;;
  muttering) echo "model not found" >&2; exit 0 ;;
  killed) kill -9 $$ ;;
  lingering) sleep 30 & echo '{"decision": "allow"}'; exit 0 ;;
  escaped) setsid sleep 30 & echo '{"decision": "allow"}'; exit 0 ;;
  scratch) echo x > "$TMPDIR/notes"; echo '{"decision": "allow"}'; exit 0 ;;
  busy) setsid bash -c 'i=0; while [ $SECONDS -lt 2 ]; do i=$((i+1));
        mkdir -p "$TMPDIR/d$i/e" && : > "$TMPDIR/d$i/e/f"; done' >/dev/null 2>&1 &
        while [ ! -e "$TMPDIR/d50" ]; do sleep 0.01; done
        echo '{"decision": "allow"}'; exit 0 ;;
  writer) echo x > run.log; echo '{"decision": "allow"}'; exit 0 ;;
  pid) echo $$ > "$PID_FILE"; sleep 30; exit 0 ;;
  no-decision) echo '{"verdict": "spam"}'; exit 0 ;;
  chatty) echo "loading model..."; echo '{"decision": "allow"}'; exit 0 ;;
  bad-crumbs) echo '{"decision": "allow", "breadcrumbs": "fetched"}'; exit 0 ;;
esac
shopt -s nocasematch
if [[ $input == *win* ]]; then decision=spam; else decision=allow; fi
if [[ $input == *skip* ]]; then
  crumbs='"decided"'
else
  crumbs='{"event": "Blocklist_Checked"}, "scored", "decided"'
fi
here=$(basename "$PWD")
printf '{"decision": "%s", "breadcrumbs": [%s, {"case": "%s", "cwd": "%s"}]}\n' \
  "$decision" "$crumbs" "$SKILLSTAGE_EVAL_CASE" "$here"
"""

PATTERNS_YAML = """\
- id: blocklist
  description: Checks the blocklist
  keywords: [blocklist, checked]
  order: 1
- id: score
  description: Scores the message
  regex: ^scored$
  order: 2
"""


def make_skill(
    tmp_path: Path,
    evals: Any,
    *,
    script: str = CLASSIFIER,
    patterns: str | None = None,
    executable: bool = True,
) -> Path:
    skill = tmp_path / "spam-filter"
    skill.mkdir()
    (skill / "SKILL.md").write_text("---\nname: spam-filter\n---\n# Spam filter\n")
    execute = skill / "execute.sh"
    execute.write_text(script)
    execute.chmod(0o755 if executable else 0o644)
    (skill / "evals").mkdir()
    text = evals if isinstance(evals, str) else json.dumps(evals, indent=2)
    (skill / "evals" / "evals.json").write_text(text)
    if patterns is not None:
        (skill / "patterns.yaml").write_text(patterns)
    return skill


def case(case_id: str | int, text: str, expected: Any, *, critical: bool = False) -> dict[str, Any]:
    return {"id": case_id, "input": {"text": text}, "expected": expected, "critical": critical}


# --- load_cases ----------------------------------------------------------------------------


def test_load_cases_accepts_the_layout_variants(tmp_path: Path) -> None:
    skill = make_skill(
        tmp_path,
        {
            "skill_name": "spam-filter",
            "negative_decisions": ["ham"],
            "evals": [
                {"id": 1, "prompt": "ignored", "input": "WIN", "expected": "spam"},
                {"id": "b", "input": None, "expected": {"decision": "ham", "why": "x"}},
                {"id": "c", "input": [1, 2], "expected_decision": "spam", "critical": True},
            ],
        },
    )
    suite = load_cases(skill)
    assert [(c.id, c.input, c.expected, c.critical) for c in suite.cases] == [
        (1, "WIN", "spam", False),
        ("b", None, "ham", False),
        ("c", [1, 2], "spam", True),
    ]
    assert suite.negative_decisions == ("ham",)
    assert suite.is_negative("HAM")
    assert not suite.is_negative("allow")


def test_load_cases_accepts_a_top_level_list_with_default_negatives(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, [case("a", "hi", "allow")])
    suite = load_cases(skill)
    assert [c.id for c in suite.cases] == ["a"]
    assert suite.is_negative("Allow") and suite.is_negative("none")
    assert not suite.is_negative("spam")


def test_missing_evals_says_where_and_what_to_create(tmp_path: Path) -> None:
    with pytest.raises(EvalsError) as caught:
        load_cases(tmp_path)
    error = caught.value
    assert error.path == tmp_path / "evals" / "evals.json"
    assert str(tmp_path / "evals" / "evals.json") in str(error)
    assert error.hint is not None and "create evals/evals.json" in error.hint


@pytest.mark.parametrize(
    ("evals", "fragments"),
    [
        ('{"evals": [\n  {"id": 1,}\n]}', ["not valid JSON"]),
        ({"cases": []}, ["no evals: key"]),
        ({"evals": []}, ["no cases"]),
        (
            {"evals": [case("a", "x", "spam"), {"input": 1, "expected": "spam"}]},
            ["case 2", "no id"],
        ),
        ({"evals": [{"id": "a", "expected": "spam"}]}, ["case 1 (id 'a')", "no input"]),
        (
            {"evals": [case("a", "x", "spam"), {"id": "b", "input": 1, "expected_output": "..."}]},
            ["case 2 (id 'b')", "no expected decision"],
        ),
        ({"evals": [case("a", "x", 3)]}, ["(id 'a')", "non-empty string"]),
        ({"evals": [case("a", "x", {"why": "no decision"})]}, ["(id 'a')", "no expected"]),
        ({"evals": [case("a", "x", "spam"), case("a", "y", "allow")]}, ["case 2", "case 1"]),
        ({"evals": [case(1, "x", "spam"), case("1", "y", "allow")]}, ["also the id"]),
        ({"evals": [{"id": "a", "input": 1, "expected": "s", "critical": "yes"}]}, ["critical"]),
        ({"evals": [{"id": True, "input": 1, "expected": "s"}]}, ["id must be"]),
        ({"evals": [case("a", "x", "s")], "negative_decisions": "allow"}, ["negative_decisions"]),
        (
            {"evals": [{"id": "a", "input": 1, "expected": "spam", "expected_decision": "ok"}]},
            ["(id 'a')", "disagree"],
        ),
    ],
)
def test_invalid_evals_name_the_file_and_the_case(
    tmp_path: Path, evals: Any, fragments: list[str]
) -> None:
    skill = make_skill(tmp_path, evals)
    with pytest.raises(EvalsError) as caught:
        load_cases(skill)
    error = caught.value
    assert error.path == skill / "evals" / "evals.json"
    assert str(error).startswith(str(skill / "evals" / "evals.json"))
    assert error.hint
    for fragment in fragments:
        assert fragment in error.message


def test_bad_json_names_the_line(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, '{"evals": [\n  {"id": 1,}\n]}')
    with pytest.raises(EvalsError) as caught:
        load_cases(skill)
    assert caught.value.line == 2


# --- run_evals -----------------------------------------------------------------------------


def test_run_scores_decisions_and_counts_fp_fn_critical(tmp_path: Path) -> None:
    skill = make_skill(
        tmp_path,
        {
            "evals": [
                case("tp", "WIN a prize", "spam", critical=True),  # correct
                case("tn", "lunch at noon?", "allow"),  # correct
                case("fp", "you win at chess", "allow"),  # spam on a negative: FP
                case("fn", "free money", "spam"),  # allow on a positive: FN
                case("cfn", "free crypto", "SPAM", critical=True),  # critical FN
            ]
        },
    )
    result = run_evals(skill, timeout=5, patterns=[])
    by_id = {c.case_id: c for c in result.cases}
    assert [c.case_id for c in result.cases] == ["tp", "tn", "fp", "fn", "cfn"]
    assert by_id["tp"].decision == "spam" and by_id["tp"].correct
    assert by_id["tn"].correct and not by_id["tn"].false_positive
    assert by_id["fp"].false_positive and not by_id["fp"].correct
    assert by_id["fn"].false_negative and not by_id["fn"].critical_false_negative
    assert by_id["cfn"].critical_false_negative
    assert all(c.fidelity is None and not c.exception for c in result.cases)
    assert all(c.execution_time_ms > 0 for c in result.cases)
    summary = result.summary
    assert summary.cases_total == 5
    assert summary.cases_executed == 5
    assert summary.pass_rate == pytest.approx(2 / 5)
    assert summary.outcome_quality == pytest.approx(2 / 5)
    assert summary.false_positive_rate == pytest.approx(1 / 2)  # 1 of 2 expecting "allow"
    assert (summary.false_positives, summary.false_negatives) == (1, 2)
    assert summary.critical_false_negatives == 1
    assert summary.exceptions == 0
    assert summary.pattern_fidelity is None


def test_case_id_input_and_cwd_reach_the_script(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, {"evals": [case(42, "hello", "allow")]})
    pattern = Pattern(
        id="env", description="Sees its case", regex='"case":"42","cwd":"spam-filter"'
    )
    result = run_evals(skill, timeout=5, patterns=[pattern])
    assert result.cases[0].followed == ["env"]


def test_fidelity_from_breadcrumbs_and_patterns_yaml(tmp_path: Path) -> None:
    skill = make_skill(
        tmp_path,
        {
            "evals": [
                case("full", "hello", "allow"),
                case("skip", "skip the checks", "allow"),
                case("crash", "x", "allow"),
            ]
        },
        patterns=PATTERNS_YAML,
    )
    result = run_evals(skill, timeout=5)  # patterns from patterns.yaml
    full, skipped, crashed = result.cases
    assert (full.fidelity, full.followed, full.missed) == (1.0, ["blocklist", "score"], [])
    assert (skipped.fidelity, skipped.missed) == (0.0, ["blocklist", "score"])
    assert crashed.exception and crashed.fidelity is None
    # The crashed case has no fidelity: the mean is over the two that ran.
    assert result.summary.pattern_fidelity == pytest.approx(0.5)
    assert result.summary.cases_executed == 2
    assert result.summary.pass_rate == pytest.approx(2 / 3)
    assert result.summary.outcome_quality == 1.0


def test_empty_patterns_means_no_fidelity_even_with_patterns_yaml(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, [case("a", "hi", "allow")], patterns=PATTERNS_YAML)
    result = run_evals(skill, timeout=5, patterns=[])
    assert result.cases[0].fidelity is None
    assert result.summary.pattern_fidelity is None


def test_a_background_child_holding_the_output_does_not_make_the_case_a_timeout(
    tmp_path: Path,
) -> None:
    # execute.sh answers and exits at once, but leaves `sleep 30` holding its stdout: the answer
    # stands (read once the timeout has passed and the child is killed with the group).
    skill = make_skill(tmp_path, [case("lingering", "hi", "allow")])
    started = time.monotonic()
    (outcome,) = run_evals(skill, timeout=1).cases
    assert time.monotonic() - started < 4
    assert (outcome.decision, outcome.correct, outcome.error) == ("allow", True, None)


def test_a_child_that_left_the_group_keeps_the_answer_and_the_time_is_the_scripts(
    tmp_path: Path,
) -> None:
    # `setsid sleep 30` escapes the group kill and holds stdout: the answer printed before it
    # stands, and the case took what the script took, not the wait for the child.
    skill = make_skill(tmp_path, [case("escaped", "hi", "allow"), case("lingering", "hi", "allow")])
    escaped, lingering = run_evals(skill, timeout=1).cases
    assert (escaped.decision, escaped.correct, escaped.error) == ("allow", True, None)
    assert escaped.execution_time_ms < 900 and lingering.execution_time_ms < 900


def test_output_nested_or_sized_past_reading_is_no_answer_and_scratch_is_tmpdir(
    tmp_path: Path,
) -> None:
    import sys

    from skillstage.metrics.evals import _json_object

    depth = sys.getrecursionlimit() * 2  # (past what json reads, whatever the limit here)
    nested = '{"decision": "allow", "breadcrumbs": ' + "[" * depth + "]" * depth + "}"
    assert _json_object(nested) is None
    assert _json_object('{"decision": "allow", "n": ' + "1" * 5000 + "}") is None
    skill = make_skill(tmp_path, [case("scratch", "hi", "allow"), case("busy", "hi", "allow")])
    scratch, busy = run_evals(skill, timeout=5).cases  # busy: a child still writing in $TMPDIR
    assert scratch.correct and not (skill / "notes").exists()
    assert busy.correct


def test_timeout_is_an_exception_within_roughly_the_timeout(tmp_path: Path) -> None:
    skill = make_skill(
        tmp_path,
        {"evals": [case("slow", "WIN", "spam", critical=True), case("ok", "hi", "allow")]},
    )
    started = time.monotonic()
    result = run_evals(skill, timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 4  # the script sleeps 10 s; its process group was killed
    slow, fine = result.cases
    assert slow.exception and slow.decision is None
    assert slow.error is not None and "did not finish within 1 s" in slow.error
    assert 900 <= slow.execution_time_ms < 3500
    # An errored decision on a positive case is a false negative; this one is critical.
    assert slow.false_negative and slow.critical_false_negative
    assert fine.correct and not fine.exception
    assert result.summary.exceptions == 1
    assert result.summary.critical_false_negatives == 1
    assert result.summary.cases_executed == 1
    assert result.summary.outcome_quality == 1.0
    assert result.summary.pass_rate == 0.5


@pytest.mark.parametrize(
    ("case_id", "error"),
    [
        ("crash", "exited with 1: cannot reach the model"),
        ("garbage", "printed 'this is not json', not a JSON object with a decision"),
        ("silent", "execute.sh printed nothing, not a JSON object with a decision"),
        ("muttering", "a decision (on stderr: 'model not found')"),
        ("killed", "execute.sh was killed by SIGKILL"),
        ("no-decision", "printed no decision"),
        ("bad-crumbs", "breadcrumbs as a JSON string, not a list"),
    ],
)
def test_misbehaving_script_is_an_exception(tmp_path: Path, case_id: str, error: str) -> None:
    skill = make_skill(tmp_path, [case(case_id, "hi", "allow")])
    result = run_evals(skill, timeout=5)
    outcome = result.cases[0]
    assert outcome.exception and outcome.decision is None and not outcome.correct
    assert outcome.error is not None and error in outcome.error
    # An errored decision on a negative case is not a false positive (nor a false negative).
    assert not outcome.false_positive and not outcome.false_negative
    assert result.summary.cases_executed == 0
    assert result.summary.outcome_quality == 0.0
    assert result.summary.false_positive_rate == 0.0


def test_log_lines_before_the_answer_are_tolerated(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, [case("chatty", "hi", "allow")])
    outcome = run_evals(skill, timeout=5).cases[0]
    assert outcome.decision == "allow" and outcome.correct


def test_execute_sh_missing_or_not_executable(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, [case("a", "hi", "allow")], executable=False)
    with pytest.raises(EvalsError) as caught:
        run_evals(skill, timeout=5)
    assert caught.value.path == skill / "execute.sh"
    assert caught.value.hint == f"chmod +x {skill / 'execute.sh'}"
    (skill / "execute.sh").unlink()
    with pytest.raises(EvalsError, match=r"execute\.sh not found"):
        run_evals(skill, timeout=5)


def test_non_positive_timeout_is_refused(tmp_path: Path) -> None:
    skill = make_skill(tmp_path, [case("a", "hi", "allow")])
    with pytest.raises(EvalsError, match="timeout must be a positive"):
        run_evals(skill, timeout=0)


def test_results_serialise_and_become_valid_execution_records(tmp_path: Path) -> None:
    skill = make_skill(
        tmp_path,
        {"evals": [case("cfn", "free money", "spam", critical=True), case("crash", "x", "spam")]},
        patterns=PATTERNS_YAML,
    )
    result = run_evals(skill, timeout=5)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["summary"]["critical_false_negatives"] == 1
    assert data["cases"][1]["error"].startswith("execute.sh exited with 1")

    fields = result.cases[0].to_record_fields()
    assert fields == {
        "pattern_fidelity": 1.0,
        "outcome_quality": 0.0,
        "execution_time_ms": result.cases[0].execution_time_ms,
        "patterns_followed": ["blocklist", "score"],
        "patterns_missed": [],
        "exception": False,
        "false_positive": False,
        "false_negative": True,
        "critical": True,
        "tags": {"source": "eval", "case": "cfn"},
    }
    inbox = tmp_path / "inbox"
    for outcome in result.cases:
        record_execution(inbox, skill="spam-filter", version="1.0.0", **outcome.to_record_fields())
    lines = (inbox / "spam-filter_executions.jsonl").read_text().splitlines()
    crashed = json.loads(lines[1])
    assert crashed["exception"] is True and crashed["false_negative"] is True
    assert "pattern_fidelity" not in crashed  # not scored: left out, not a zero
    assert crashed["tags"] == {"source": "eval", "case": "crash"}
