"""Pattern fidelity (seed 002): did a run of a skill follow the steps its author expected?

A skill declares its expected patterns in `patterns.yaml` beside SKILL.md, as a list (or a mapping
whose `patterns:` key holds the list) of entries::

    - id: check-blocklist
      description: Looks the sender up in the blocklist before scoring
      keywords: [blocklist, checked]      # every keyword, case-insensitive, in one event
      order: 1
    - id: score
      description: Scores the message
      regex: '"event":"scored"'           # Python regex, searched in the event's text
      order: 2

A run leaves breadcrumbs: events that are JSON objects or plain strings. A rule matches an event's
text: the string itself, or the compact JSON of an object (so a rule can hit any field). Patterns
with an `order` must be followed in ascending order; one whose first matching event does not come
after the first matching event of every pattern with a lower order counts as missed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex as regex_module
import yaml

from skillstage.errors import EXIT_USAGE, SkillReadError, SkillstageError
from skillstage.skill.frontmatter import load_yaml_document

PATTERNS_FILE = "patterns.yaml"
# A regex is Python's syntax, run by the `regex` module, which can stop a match: one that backtracks
# catastrophically on an event ((a|aa)+ against 60 letters) is an error, not a hang.
MATCH_SECONDS = 1.0

_ENTRY_KEYS = ("id", "description", "regex", "keywords", "order")


class PatternsError(SkillstageError):
    """A skill's patterns.yaml cannot be read into patterns."""

    exit_code = EXIT_USAGE
    code = "PATTERNS"


class BreadcrumbLogError(SkillstageError):
    """A breadcrumb log (JSONL) cannot be read."""

    exit_code = EXIT_USAGE
    code = "BREADCRUMBS"


@dataclass(frozen=True)
class Pattern:
    """One expected pattern: an id, what it means, one match rule (`regex` or `keywords`) and an
    optional position in the expected order."""

    id: str
    description: str
    regex: str | None = None
    keywords: tuple[str, ...] | None = None
    order: int | None = None
    _compiled: regex_module.Pattern[str] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _folded: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.regex is None) == (self.keywords is None):
            raise ValueError(f"pattern {self.id!r}: give exactly one of regex and keywords")
        if self.regex is not None:
            object.__setattr__(self, "_compiled", regex_module.compile(self.regex))
        else:
            assert self.keywords is not None
            keywords = tuple(self.keywords)
            if not keywords:
                raise ValueError(f"pattern {self.id!r}: keywords is empty")
            object.__setattr__(self, "keywords", keywords)
            object.__setattr__(self, "_folded", tuple(word.casefold() for word in keywords))

    def matches(self, text: str) -> bool:
        """Whether an event's text satisfies this pattern's rule."""
        if self._compiled is not None:
            try:
                return self._compiled.search(text, timeout=MATCH_SECONDS) is not None
            except TimeoutError:
                raise PatternsError(
                    f"pattern {self.id!r}: its regex took over {MATCH_SECONDS:g} s on one event "
                    f"of {len(text):,} characters: it backtracks catastrophically",
                    path=PATTERNS_FILE,
                    hint="simplify the regex: no quantified group that can match the same text "
                    "two ways, e.g. (a|aa)+ or (a+)+",
                ) from None
        folded = text.casefold()
        return all(word in folded for word in self._folded)

    def to_dict(self) -> dict[str, Any]:
        """The pattern as it would be written in patterns.yaml."""
        data: dict[str, Any] = {"id": self.id, "description": self.description}
        if self.regex is not None:
            data["regex"] = self.regex
        else:
            data["keywords"] = list(self.keywords or ())
        if self.order is not None:
            data["order"] = self.order
        return data


@dataclass(frozen=True)
class FidelityScore:
    """How faithfully one run followed the expected patterns: followed / expected (1.0 when none
    are expected), and the ids followed and missed, in declared order."""

    fidelity: float
    followed: list[str]
    missed: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"fidelity": self.fidelity, "followed": self.followed, "missed": self.missed}


def event_text(event: Any) -> str:
    """The text a rule matches against: a string as is, anything else as compact JSON."""
    if isinstance(event, str):
        return event
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str)


def score_execution(
    breadcrumbs: Iterable[Any], expected_patterns: Sequence[Pattern]
) -> FidelityScore:
    """Score one run's breadcrumbs against the expected patterns.

    A pattern is followed when some event matches it and, if it has an `order`, its first matching
    event comes strictly after the first matching event of every matched pattern with a lower
    order. (One event matching two ordered patterns therefore follows only the lower one: the
    order says one step after the other.)
    """
    texts = [event_text(event) for event in breadcrumbs]
    first: dict[str, int] = {}
    for pattern in expected_patterns:
        index = next((i for i, text in enumerate(texts) if pattern.matches(text)), None)
        if index is not None:
            first[pattern.id] = index
    ordered = [p for p in expected_patterns if p.order is not None and p.id in first]
    followed: list[str] = []
    missed: list[str] = []
    for pattern in expected_patterns:
        index = first.get(pattern.id)
        in_order = index is not None and (
            pattern.order is None
            or all(
                index > first[other.id]
                for other in ordered
                if other.order is not None and other.order < pattern.order
            )
        )
        (followed if in_order else missed).append(pattern.id)
    fidelity = len(followed) / len(expected_patterns) if expected_patterns else 1.0
    return FidelityScore(fidelity=fidelity, followed=followed, missed=missed)


def read_breadcrumbs(path: Path | str) -> list[Any]:
    """Read a breadcrumb log: JSONL, one event (a JSON object or string) a line; blank lines are
    skipped. Raises `BreadcrumbLogError` naming the file and line of a bad one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BreadcrumbLogError(
            "breadcrumb log not found", path=path, hint="check the path of the log"
        ) from None
    except UnicodeDecodeError as exc:
        raise BreadcrumbLogError(
            f"breadcrumb log is not UTF-8 text (byte {exc.start})",
            path=path,
            hint="write the log as UTF-8 JSON lines",
        ) from None
    except OSError as exc:
        raise BreadcrumbLogError(
            f"cannot read breadcrumb log: {exc.strerror}",
            path=path,
            hint="check that it is a readable file",
        ) from None
    events: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BreadcrumbLogError(
                f"not a JSON line: {exc.msg} (column {exc.colno})",
                path=path,
                line=number,
                hint='write one JSON object (or JSON string) a line, e.g. {"event": "checked"}',
            ) from None
        except (ValueError, RecursionError) as exc:  # a 5,000-digit number, deep nesting
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise BreadcrumbLogError(
                f"not a JSON line that can be read: {why}",
                path=path,
                line=number,
                hint='write one JSON object (or JSON string) a line, e.g. {"event": "checked"}',
            ) from None
        if not isinstance(event, dict | str):
            raise BreadcrumbLogError(
                f"event is a JSON {_json_kind(event)}, not an object or a string",
                path=path,
                line=number,
                hint='write each event as a JSON object, e.g. {"event": "checked"}, or a string',
            )
        events.append(event)
    return events


def load_patterns(skill_dir: Path | str) -> list[Pattern]:
    """The expected patterns declared in `<skill_dir>/patterns.yaml`, in declared order; an empty
    list when the skill has no patterns.yaml. Raises `PatternsError` naming the file, line and
    entry of anything wrong."""
    path = Path(skill_dir) / PATTERNS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as exc:
        raise PatternsError(
            f"{PATTERNS_FILE} is not UTF-8 text (byte {exc.start})",
            path=path,
            hint="save it as UTF-8",
        ) from None
    except OSError as exc:
        raise PatternsError(
            f"cannot read {PATTERNS_FILE}: {exc.strerror}",
            path=path,
            hint="check that it is a readable file",
        ) from None
    node, data = _parse_yaml(text, path)
    entries, entries_node = _entries(node, data, path)
    lines = [child.start_mark.line + 1 for child in entries_node.value] if entries_node else []
    patterns: list[Pattern] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        number = index + 1
        line = lines[index] if index < len(lines) else None
        pattern = _pattern(entry, number, path, line)
        if pattern.id in seen:
            raise PatternsError(
                f"entry {number}: id {pattern.id!r} is also the id of entry {seen[pattern.id]}",
                path=path,
                line=line,
                hint="give every pattern a unique id",
            )
        seen[pattern.id] = number
        patterns.append(pattern)
    return patterns


def _parse_yaml(text: str, path: Path) -> tuple[yaml.Node | None, Any]:
    try:
        return load_yaml_document(text, path, what=PATTERNS_FILE)
    except SkillReadError as exc:  # an alias bomb, deep nesting, duplicate keys
        raise PatternsError(exc.message, path=path, line=exc.line, hint=exc.hint) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PatternsError(
            f"{PATTERNS_FILE} is not valid YAML: {problem}",
            path=path,
            line=mark.line + 1 if mark is not None else None,
            hint="fix the YAML syntax (a list of entries with id, description and regex or "
            "keywords)",
        ) from None


def _entries(
    node: yaml.Node | None, data: Any, path: Path
) -> tuple[list[Any], yaml.SequenceNode | None]:
    if data is None:  # an empty file declares no patterns
        return [], None
    if isinstance(data, dict):
        if "patterns" not in data:
            raise PatternsError(
                f"{PATTERNS_FILE} is a mapping without a patterns: key",
                path=path,
                line=1,
                hint="put the entries in a top-level list, or under patterns:",
            )
        entries = data["patterns"]
        entries_node = None
        if isinstance(node, yaml.MappingNode):
            entries_node = next(
                (value for key, value in node.value if getattr(key, "value", None) == "patterns"),
                None,
            )
        if entries is None:
            return [], None
    else:
        entries, entries_node = data, node
    if not isinstance(entries, list):
        line = entries_node.start_mark.line + 1 if entries_node is not None else None
        raise PatternsError(
            f"the patterns are a YAML {_yaml_kind(entries)}, not a list",
            path=path,
            line=line,
            hint="write the patterns as a list of entries (- id: ...)",
        )
    return entries, entries_node if isinstance(entries_node, yaml.SequenceNode) else None


def _pattern(entry: Any, number: int, path: Path, line: int | None) -> Pattern:
    where = f"entry {number}"

    def fail(message: str, hint: str) -> PatternsError:
        return PatternsError(f"{where}: {message}", path=path, line=line, hint=hint)

    if not isinstance(entry, dict):
        raise fail(
            f"is a YAML {_yaml_kind(entry)}, not a mapping",
            "write each entry as a mapping with id, description and regex or keywords",
        )
    identifier = entry.get("id")
    if identifier is None:
        raise fail("has no id", "add id: <a short unique name> to the entry")
    if not isinstance(identifier, str) or not identifier.strip():
        raise fail(
            f"id must be a non-empty string, not {identifier!r}",
            "quote the id if YAML reads it as a number or boolean",
        )
    where = f"entry {number} (id {identifier!r})"
    unknown = sorted(str(key) for key in entry if key not in _ENTRY_KEYS)
    if unknown:
        raise fail(
            f"unknown key(s): {', '.join(unknown)}",
            "an entry has id, description, regex or keywords, and an optional order",
        )
    description = entry.get("description")
    if not isinstance(description, str):
        raise fail(
            "has no description" if description is None else "description must be a string",
            "add description: <what the skill should do>",
        )
    rule = entry.get("regex")
    keywords = entry.get("keywords")
    if rule is None and keywords is None:
        raise fail("has no match rule", 'add regex: "<python regex>" or keywords: [word, ...]')
    if rule is not None and keywords is not None:
        raise fail("has both regex and keywords", "keep one of them: a pattern has one rule")
    order = entry.get("order")
    if order is not None and (isinstance(order, bool) or not isinstance(order, int)):
        raise fail(f"order must be an integer, not {order!r}", "write order: 1, order: 2, ...")
    if rule is not None:
        if not isinstance(rule, str) or not rule:
            raise fail("regex must be a non-empty string", 'write regex: "<python regex>"')
        try:
            regex_module.compile(rule)
        except regex_module.error as exc:
            raise fail(
                f"invalid regex {rule!r}: {exc}",
                "fix the regex (Python syntax; quote it in single quotes to keep backslashes)",
            ) from None
        return Pattern(id=identifier, description=description, regex=rule, order=order)
    if not isinstance(keywords, list) or not keywords:
        raise fail("keywords must be a non-empty list", "write keywords: [word, ...]")
    if not all(isinstance(word, str) and word.strip() for word in keywords):
        raise fail(
            "every keyword must be a string with more than spaces",
            "quote keywords that YAML reads as numbers or booleans",
        )
    return Pattern(id=identifier, description=description, keywords=tuple(keywords), order=order)


def _yaml_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    return "scalar" if value is not None else "null"


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "null" if value is None else type(value).__name__
