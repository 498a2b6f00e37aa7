"""Expected patterns: patterns.yaml, breadcrumb logs and fidelity scoring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skillstage.metrics.patterns import (
    BreadcrumbLogError,
    Pattern,
    PatternsError,
    load_patterns,
    read_breadcrumbs,
    score_execution,
)

# Six levels of nine aliases each: 9**6 (531,441) values once expanded, from 300 bytes.
ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{name}: &{name} [{', '.join([f'*{below}'] * 9)}]\n"
        for below, name in zip("abcde", "bcdef", strict=True)
    )
    + "patterns: [{id: *f}]\n"
)


def skill_with_patterns(tmp_path: Path, text: str) -> Path:
    skill = tmp_path / "spam-filter"
    skill.mkdir()
    (skill / "SKILL.md").write_text("---\nname: spam-filter\n---\n# Spam filter\n")
    (skill / "patterns.yaml").write_text(text, encoding="utf-8")
    return skill


def write_log(path: Path, events: list[Any]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    return path


# --- load_patterns -------------------------------------------------------------------------


def test_load_list_form(tmp_path: Path) -> None:
    skill = skill_with_patterns(
        tmp_path,
        """\
- id: blocklist
  description: Checks the sender against the blocklist
  keywords: [Blocklist, checked]
  order: 1
- id: score
  description: Scores the message
  regex: '"event":"scored"'
  order: 2
- id: explain
  description: Says why
  regex: reason
""",
    )
    patterns = load_patterns(skill)
    assert [p.id for p in patterns] == ["blocklist", "score", "explain"]
    assert patterns[0].keywords == ("Blocklist", "checked")
    assert patterns[0].regex is None
    assert patterns[1].regex == '"event":"scored"'
    assert [p.order for p in patterns] == [1, 2, None]


def test_load_mapping_form(tmp_path: Path) -> None:
    skill = skill_with_patterns(
        tmp_path,
        "patterns:\n  - id: a\n    description: A\n    regex: x\n",
    )
    assert [p.id for p in load_patterns(skill)] == ["a"]


def test_no_patterns_file_is_no_patterns(tmp_path: Path) -> None:
    assert load_patterns(tmp_path) == []


def test_empty_patterns_file_is_no_patterns(tmp_path: Path) -> None:
    assert load_patterns(skill_with_patterns(tmp_path, "# nothing yet\n")) == []


@pytest.mark.parametrize(
    ("text", "line", "fragments"),
    [
        ("- id: a\n  description: [unclosed\n", 3, ["not valid YAML"]),
        (
            "- id: a\n  description: A\n  regex: x\n- description: B\n  regex: y\n",
            4,
            ["entry 2", "has no id"],
        ),
        (
            "- id: a\n  description: A\n  regex: x\n- id: a\n  description: B\n  regex: y\n",
            4,
            ["entry 2", "'a'", "also the id of entry 1"],
        ),
        (
            "- id: bad-re\n  description: A\n  regex: 'checked(blocklist'\n",
            1,
            ["entry 1 (id 'bad-re')", "invalid regex", "missing )"],
        ),
        ("- id: none\n  description: A\n", 1, ["(id 'none')", "has no match rule"]),
        (
            "- id: both\n  description: A\n  regex: x\n  keywords: [y]\n",
            1,
            ["(id 'both')", "both regex and keywords"],
        ),
        (
            "- id: o\n  description: A\n  regex: x\n  order: first\n",
            1,
            ["(id 'o')", "order must be an integer"],
        ),
        (
            "- id: typo\n  description: A\n  regex: x\n  oder: 2\n",
            1,
            ["(id 'typo')", "unknown key(s): oder"],
        ),
        ("- id: k\n  description: A\n  keywords: []\n", 1, ["(id 'k')", "non-empty list"]),
        (
            "- id: s\n  description: A\n  keywords: [' ']\n",
            1,
            ["(id 's')", "every keyword must be a string with more than spaces"],
        ),
        ("- id: d\n  regex: x\n", 1, ["(id 'd')", "has no description"]),
        ("- id: 7\n  description: A\n  regex: x\n", 1, ["entry 1", "non-empty string"]),
        ("skill: spam-filter\n", 1, ["without a patterns: key"]),
        (
            "- id: a\n  id: b\n  description: A\n  regex: x\n",
            2,
            ["key 'id' appears twice (first on line 1)"],
        ),
        (ALIAS_BOMB, 6, ["patterns.yaml expands to more than 100,000 values through YAML aliases"]),
        ("patterns: {id: a}\n", 1, ["not a list"]),
    ],
)
def test_invalid_patterns_name_file_line_and_entry(
    tmp_path: Path, text: str, line: int, fragments: list[str]
) -> None:
    skill = skill_with_patterns(tmp_path, text)
    with pytest.raises(PatternsError) as caught:
        load_patterns(skill)
    error = caught.value
    assert error.path == skill / "patterns.yaml"
    assert error.line == line
    assert str(error).startswith(f"{skill / 'patterns.yaml'}:{line}: ")
    assert error.hint
    for fragment in fragments:
        assert fragment in error.message


# --- score_execution -----------------------------------------------------------------------


def test_regex_matches_any_field_of_an_object_event() -> None:
    pattern = Pattern(id="sender", description="Looks at the sender", regex=r"sender.*@spam\.biz")
    events = [{"event": "checked", "detail": {"sender": "x@spam.biz"}}]
    assert score_execution(events, [pattern]).followed == ["sender"]
    assert score_execution([{"event": "checked"}], [pattern]).missed == ["sender"]


def test_regex_sees_compact_json() -> None:
    pattern = Pattern(id="scored", description="Scores", regex='"event":"scored"')
    assert score_execution([{"event": "scored"}], [pattern]).fidelity == 1.0


def test_keywords_are_case_insensitive_and_all_required_in_one_event() -> None:
    pattern = Pattern(id="blocklist", description="Blocklist", keywords=("BLOCKLIST", "Checked"))
    assert score_execution(["checked the blocklist"], [pattern]).followed == ["blocklist"]
    assert score_execution([{"Event": "ChEcKeD_BlockList"}], [pattern]).fidelity == 1.0
    # Both words appear, but not in one event: the step was not taken as described.
    split = score_execution(["checked the sender", "blocklist loaded"], [pattern])
    assert split.missed == ["blocklist"]
    assert split.fidelity == 0.0


def test_fidelity_is_followed_over_expected_in_declared_order() -> None:
    patterns = [
        Pattern(id="c", description="C", regex="gamma"),
        Pattern(id="a", description="A", regex="alpha"),
        Pattern(id="b", description="B", regex="beta"),
        Pattern(id="d", description="D", keywords=("delta",)),
    ]
    score = score_execution(["beta", "nothing", "gamma"], patterns)
    assert score.followed == ["c", "b"]
    assert score.missed == ["a", "d"]
    assert score.fidelity == 0.5


def test_no_expected_patterns_is_full_fidelity() -> None:
    score = score_execution(["anything"], [])
    assert (score.fidelity, score.followed, score.missed) == (1.0, [], [])


def ordered() -> list[Pattern]:
    return [
        Pattern(id="fetch", description="Fetch", regex="fetch", order=1),
        Pattern(id="check", description="Check", regex="check", order=2),
        Pattern(id="decide", description="Decide", regex="decide", order=3),
    ]


def test_patterns_in_order_are_followed() -> None:
    score = score_execution(["fetch", "noise", "check", "decide"], ordered())
    assert score.followed == ["fetch", "check", "decide"]
    assert score.fidelity == 1.0


def test_pattern_out_of_order_counts_as_missed() -> None:
    score = score_execution(["check", "fetch", "decide"], ordered())
    assert score.followed == ["fetch", "decide"]
    assert score.missed == ["check"]
    assert score.fidelity == pytest.approx(2 / 3)


def test_order_uses_first_matching_event() -> None:
    # check's first match comes before fetch: a later "check" does not repair it.
    score = score_execution(["check", "fetch", "check", "decide"], ordered())
    assert score.missed == ["check"]


def test_later_pattern_must_follow_every_lower_order() -> None:
    # decide follows check but precedes fetch.
    score = score_execution(["check", "decide", "fetch"], ordered())
    assert score.followed == ["fetch"]
    assert score.missed == ["check", "decide"]


def test_a_missing_step_does_not_put_the_next_out_of_order() -> None:
    score = score_execution(["fetch", "decide"], ordered())
    assert score.followed == ["fetch", "decide"]
    assert score.missed == ["check"]


def test_one_event_matching_two_ordered_patterns_follows_only_the_lower() -> None:
    score = score_execution(["fetch and check", "decide"], ordered())
    assert score.missed == ["check"]


def test_unordered_patterns_ignore_order() -> None:
    patterns = [*ordered(), Pattern(id="log", description="Log", regex="log")]
    score = score_execution(["log", "fetch", "check", "decide"], patterns)
    assert score.fidelity == 1.0


def test_a_regex_that_backtracks_catastrophically_is_an_error_not_a_hang() -> None:
    import time

    pattern = Pattern(id="redos", description="d", regex=r"^(a|aa)+$")
    started = time.monotonic()
    with pytest.raises(PatternsError, match="'redos': its regex took over 1 s on one event"):
        score_execution(["a" * 60 + "!"], [pattern])
    assert time.monotonic() - started < 10
    # The classic (a+)+ is matched without backtracking by the regex engine.
    nested = Pattern(id="nested", description="d", regex=r"^(a+)+$")
    assert score_execution(["a" * 40 + "!"], [nested]).missed == ["nested"]


def test_breadcrumbs_nested_or_sized_past_reading_are_a_clear_error(tmp_path: Path) -> None:
    import sys

    depth = sys.getrecursionlimit() * 2  # (past what json reads, whatever the limit here)
    for line in ("[" * depth + "]" * depth, "1" * 5000):
        log = tmp_path / "run.jsonl"
        log.write_text(line + "\n")
        with pytest.raises(BreadcrumbLogError, match="not a JSON line that can be read"):
            read_breadcrumbs(log)


def test_pattern_needs_exactly_one_rule() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Pattern(id="x", description="X")
    with pytest.raises(ValueError, match="exactly one"):
        Pattern(id="x", description="X", regex="a", keywords=("b",))


# --- read_breadcrumbs ----------------------------------------------------------------------


def test_read_breadcrumbs_skips_blank_lines(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    log.write_text('{"event": "fetch"}\n\n   \n"check"\n{"event": "decide", "n": 2}\n')
    assert read_breadcrumbs(log) == [{"event": "fetch"}, "check", {"event": "decide", "n": 2}]


def test_read_breadcrumbs_bad_line_names_file_and_line(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    log.write_text('{"event": "fetch"}\n\n{"event": oops}\n')
    with pytest.raises(BreadcrumbLogError) as caught:
        read_breadcrumbs(log)
    assert caught.value.path == log
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{log}:3: not a JSON line")


def test_read_breadcrumbs_rejects_events_that_are_neither_objects_nor_strings(
    tmp_path: Path,
) -> None:
    log = tmp_path / "run.jsonl"
    log.write_text('"fetch"\n42\n')
    with pytest.raises(BreadcrumbLogError, match="number, not an object or a string") as caught:
        read_breadcrumbs(log)
    assert caught.value.line == 2


def test_read_breadcrumbs_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(BreadcrumbLogError) as caught:
        read_breadcrumbs(tmp_path / "absent.jsonl")
    assert str(tmp_path / "absent.jsonl") in str(caught.value)


def test_log_scored_against_declared_patterns(tmp_path: Path) -> None:
    skill = skill_with_patterns(
        tmp_path,
        """\
patterns:
  - id: blocklist
    description: Checks the blocklist first
    keywords: [blocklist]
    order: 1
  - id: score
    description: Then scores
    regex: '"event":"scored"'
    order: 2
  - id: reason
    description: Gives a reason
    regex: '"reason":"[^"]+"'
""",
    )
    log = write_log(
        tmp_path / "run.jsonl",
        [{"event": "scored", "value": 0.9}, {"event": "BLOCKLIST_checked"}, {"reason": ""}],
    )
    score = score_execution(read_breadcrumbs(log), load_patterns(skill))
    assert score.followed == ["blocklist"]
    assert score.missed == ["score", "reason"]
    assert score.fidelity == pytest.approx(1 / 3)
    assert json.loads(json.dumps(score.to_dict()))["missed"] == ["score", "reason"]
