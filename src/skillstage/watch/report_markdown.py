"""The failure analysis report in Markdown, for people: the document `report.build_document` makes,
rendered section by section (the JSON file holds the same facts)."""

from __future__ import annotations

import datetime as dt
from typing import Any


def _cell(value: Any) -> str:
    """A value as one Markdown table cell or inline text: one line, no table breaks."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    text = " ".join(str(value).split())
    return text.replace("|", "\\|")


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _code(value: Any) -> str:
    return f"`{_cell(value).replace('`', chr(39))}`"


def _time(value: str | None) -> str:
    if value is None:
        return "-"
    return dt.datetime.fromisoformat(value).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _delay(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    if abs(seconds) < 60:
        return f"{seconds:.1f} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _version(side: dict[str, Any] | None) -> str:
    if side is None:
        return "-"
    return f"{side['version']} ({side['digest'][:12]})"


def render_markdown(document: dict[str, Any]) -> str:
    """The report for people: the same facts as the JSON document."""
    lines: list[str] = []
    add = lines.append
    name, stage = document["skill"], document["stage"]
    failed, restored = document["failed"], document["restored"]
    rolled = "rolled back" if document["kind"] == "rollback" else "rollout aborted"
    add(f"# Failure analysis: {name} {failed['version']} {rolled} in {stage}")
    add("")
    add(f"- **Skill**: {_cell(name)}, stage {_cell(stage)}")
    if document["kind"] == "rollback":
        happened = f"automated rollback: {_version(failed)} was taken out of {_cell(stage)}"
        happened += (
            f" and {_version(restored)} put back"
            if restored
            else f"; with no earlier version it went back to {_cell(document['moved_to'])}"
        )
    else:
        rollout = document["rollout"] or {}
        share = f" at {rollout['share']}%" if rollout.get("share") is not None else ""
        happened = (
            f"automated rollout abort: the rollout #{_cell(rollout.get('id'))} of "
            f"{_version(failed)}{share} was ended and every request sent back to "
            f"{_version(restored)}"
        )
    add(f"- **What happened**: {happened}")
    add(f"- **When**: {_time(document['at'])} (event #{document['event_id']})")
    add(f"- **By**: {_cell(document['actor'])}")
    trigger = document["trigger"]
    add(f"- **Trigger**: {_code(trigger['reason'])}, metric {_code(trigger['metric'])}")
    rollout = document["rollout"]
    if rollout and rollout.get("verdict_reasons"):
        add(
            "- **The rollout's verdict**: "
            + "; ".join(_cell(r) for r in rollout["verdict_reasons"])
        )
    hold = document["hold"]
    if hold:
        state = (
            f"cleared {_time(hold['cleared_at'])} by {_cell(hold['cleared_by'])}: "
            f"{_cell(hold['clear_reason'])}"
            if hold["cleared_at"]
            else "still set: automation and promotions leave it alone until a person clears it"
        )
        add(f"- **Hold** in {_cell(hold['stage'])}: {state}")
    add(f"- **Report written**: {_time(document['written_at'])}")
    add("")

    window = document["window"]
    add("## The executions that tripped it")
    add("")
    short = "" if window["count"] >= window["size"] else f" (only {window['count']} on record)"
    add(
        f"The newest {window['size']} executions of {_version(failed)} in {_cell(stage)} before "
        f"the event, as its triggers read them (fidelity and quality over the newest "
        f"{window['score_window']}, rates over the newest {window['rate_window']}){short}, "
        f"from {_time(window['first'])} to {_time(window['last'])}:"
    )
    add("")
    add(f"| | all {window['count']} | newest {min(window['count'], window['score_window'])} |")
    add("|---|---:|---:|")
    add(
        f"| mean pattern fidelity | {_cell(window['mean_fidelity'])} | "
        f"{_cell(window['score_window_mean_fidelity'])} |"
    )
    add(
        f"| mean outcome quality | {_cell(window['mean_quality'])} | "
        f"{_cell(window['score_window_mean_quality'])} |"
    )
    add(f"| mean execution time (ms) | {_cell(window['mean_execution_time_ms'])} | |")
    add(f"| exceptions | {window['exceptions']} | |")
    add(f"| false positives | {window['false_positives']} | |")
    add(f"| false negatives | {window['false_negatives']} | |")
    add(f"| critical false negatives | {window['critical_false_negatives']} | |")
    add("")
    if window["execution_ids"]:
        shown = len(window["execution_ids"])
        add(
            f"Execution ids (the newest {shown}, newest first): "
            + ", ".join(_code(i) for i in window["execution_ids"])
        )
    else:
        add("No execution of it is on record before the event.")
    add("")

    add(f"## Failed against restored (executions up to {_time(document['at'])})")
    add("")
    comparison = document["comparison"]
    if "error" in comparison:
        add(f"Not compared: {_cell(comparison['error'])}")
    else:
        add(
            f"| metric | failed {_cell(failed['version'])} (n={comparison['count_b']}) | "
            f"restored {_cell(restored['version'] if restored else None)} "
            f"(n={comparison['count_a']}) | difference | p-value | verdict |"
        )
        add("|---|---:|---:|---:|---:|---|")
        for metric in comparison["metrics"]:
            verdict = (
                "insufficient data"
                if metric["insufficient_data"]
                else "worse"
                if metric["worse"]
                else "not worse"
            )
            add(
                f"| {metric['metric']} | {_cell(metric['b'])} | {_cell(metric['a'])} | "
                f"{_cell(metric['difference'])} | {_p(metric['p_value'])} | {verdict} |"
            )
        if comparison["insufficient"]:
            add("")
            add(
                f"Fewer than {comparison['min_sample']} executions on a side (or of a metric): "
                "the tests say little yet."
            )
    add("")

    patterns = document["patterns_missed"]
    add("## Patterns most often missed")
    add("")
    if patterns["executions_counted"]:
        add(
            f"{patterns['executions_with_a_miss']} of the {patterns['executions_counted']} "
            f"executions with a pattern count missed at least one expected pattern "
            f"({patterns['missed_total']} misses in all)."
        )
    else:
        add("No execution in the window recorded its pattern counts.")
    add("")
    if patterns["most_missed"]:
        add("| pattern | missed | description |")
        add("|---|---:|---|")
        for entry in patterns["most_missed"]:
            add(
                f"| {_code(entry['id'])} | {entry['missed']} of {entry['of']} | "
                f"{_cell(entry['description'])} |"
            )
    else:
        add(
            "Which patterns: no record in the window names them (the store keeps counts; a "
            "record's tags name them with `patterns_missed` ids or `breadcrumbs`)."
        )
    if patterns["patterns_problem"]:
        add("")
        add(
            "The failed version's patterns.yaml could not be read: "
            + _cell(patterns["patterns_problem"])
        )
    add("")

    exceptions = document["exceptions"]
    add("## Exceptions")
    add("")
    add(
        f"{exceptions['count']} exception(s) of {_version(failed)} in {_cell(stage)} before the "
        f"event ({exceptions['in_window']} in the window)."
    )
    if exceptions["newest"]:
        add("")
        add("| execution | at | subject | text |")
        add("|---|---|---|---|")
        for entry in exceptions["newest"]:
            add(
                f"| {_code(entry['execution_id'])} | {_time(entry['timestamp'])} | "
                f"{_cell(entry['subject'])} | {_cell(entry['text'])} |"
            )
    add("")

    add("## Timeline")
    add("")
    add("| step | at | after the event | target | status | detail |")
    add("|---|---|---:|---|---|---|")
    for entry in document["timeline"]:
        add(
            f"| {entry['step']} | {_time(entry['at'])} | {_delay(entry['delay_seconds'])} | "
            f"{_cell(entry['target'])} | {entry['status']} | {_cell(entry['detail'])} |"
        )
    add("")

    add("## Next")
    add("")
    for entry in document["commands"]:
        add(f"- `{entry['command']}`: {entry['why']}")
    add("")
    return "\n".join(lines)
