"""Reading `SKILL.md`: the YAML frontmatter between two `---` lines, and the Markdown body.

Bounded on purpose: a skill comes from anyone, so its SKILL.md must not be able to exhaust memory or
time (size limits, alias-bomb and depth limits) or to hide ambiguity (duplicate keys). Every problem
is a `FrontmatterError` with the file's line number.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import yaml

from skillstage.errors import SkillReadError

MAX_SKILL_MD_BYTES = 1024 * 1024
MAX_FRONTMATTER_BYTES = 64 * 1024
# A frontmatter of at most 64 KiB holds far fewer nodes than this without aliases; only an alias
# bomb ("billion laughs") expands past it.
MAX_EXPANDED_NODES = 100_000
MAX_DEPTH = 64

# The frontmatter's first line is line 2 of the file (line 1 is the opening `---`).
_FIRST_FRONTMATTER_LINE = 2

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_CLOSING_LINE = re.compile(r"^---[ \t]*$", re.MULTILINE)
_NEAR_CLOSING_LINE = re.compile(r"^---", re.MULTILINE)


class FrontmatterError(SkillReadError):
    """SKILL.md cannot be read into frontmatter and body."""

    code = "FRONTMATTER_INVALID"


@dataclass(frozen=True)
class SkillDocument:
    """A parsed SKILL.md."""

    frontmatter: dict[str, Any]
    body: str
    body_first_line: int  # the file line where the body starts
    key_lines: dict[str, int] = field(default_factory=dict)  # top-level key -> file line


def _error(code: str, message: str, path: Path, line: int | None, hint: str) -> FrontmatterError:
    return FrontmatterError(message, path=path, line=line, hint=hint, code=code)


def decode_skill_md(raw: bytes, path: Path) -> str:
    """SKILL.md's bytes as text: UTF-8, an optional BOM dropped, CRLF and CR line ends as LF."""
    if len(raw) > MAX_SKILL_MD_BYTES:
        raise _error(
            "SKILL_MD_TOO_LARGE",
            f"SKILL.md is {len(raw):,} bytes; the limit is {MAX_SKILL_MD_BYTES:,} (1 MiB)",
            path,
            None,
            "move long reference material into separate files (references/*.md) and link them",
        )
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _error(
            "SKILL_MD_NOT_UTF8",
            f"SKILL.md is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            path,
            line,
            "save the file as UTF-8",
        ) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def split_frontmatter(text: str, path: Path) -> tuple[str, str, int]:
    """Split SKILL.md text into (frontmatter YAML, body, body's first file line).

    The frontmatter opens with a first line `---` and closes at the next line that is exactly
    `---` (trailing blanks allowed); a `---` inside a value does not close it.
    """
    first_end = text.find("\n")
    first = text if first_end < 0 else text[:first_end]
    if first.rstrip(" \t") != "---":
        raise _error(
            "FRONTMATTER_MISSING",
            "SKILL.md must start with a line '---' opening the YAML frontmatter",
            path,
            1,
            "begin SKILL.md with:\n---\nname: skill-name\nversion: 1.0.0\n"
            "description: What the skill does\n---",
        )
    if first_end >= 0:
        closing = _CLOSING_LINE.search(text, first_end + 1)
        if closing is not None:
            source = text[first_end + 1 : closing.start()]
            body = text[closing.end() + 1 :]
            return source, body, source.count("\n") + _FIRST_FRONTMATTER_LINE + 1
    near = _NEAR_CLOSING_LINE.search(text, first_end + 1) if first_end >= 0 else None
    if near is not None:
        line = text.count("\n", 0, near.start()) + 1
        raise _error(
            "FRONTMATTER_UNCLOSED",
            f"the frontmatter opened on line 1 is not closed: line {line} starts with '---' but "
            "is not exactly '---'",
            path,
            line,
            f"make line {line} exactly '---' (no comment or other text after it)",
        )
    raise _error(
        "FRONTMATTER_UNCLOSED",
        "the frontmatter opened on line 1 is never closed by a line '---'",
        path,
        1,
        "add a line containing only '---' after the last frontmatter key",
    )


def _node_line(node: yaml.Node, first_line: int = _FIRST_FRONTMATTER_LINE) -> int:
    return int(node.start_mark.line) + first_line


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _check_mapping_keys(node: yaml.MappingNode, path: Path, first_line: int) -> None:
    import yaml

    seen: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
            continue
        ident = (key.tag, key.value)
        line = _node_line(key, first_line)
        if ident in seen:
            raise _error(
                "FRONTMATTER_DUPLICATE_KEY",
                f"key {key.value!r} appears twice (first on line {seen[ident]})",
                path,
                line,
                "keep one of the two; YAML readers disagree on which one wins",
            )
        seen[ident] = line


def load_yaml_document(text: str, path: Path, *, what: str) -> tuple[yaml.Node | None, Any]:
    """A YAML file of the user's (patterns.yaml, a sign-off checklist) as its node graph and its
    data: composed first (nodes keep their lines, for messages), then checked like frontmatter
    (`check_node_graph`: `SkillReadError` for alias bombs, deep nesting, duplicate keys), then
    constructed. Invalid YAML is a `yaml.YAMLError`, for the caller to word."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
        if node is None:
            return None, None
        check_node_graph(node, path, what=what, first_line=1)
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


def check_node_graph(
    root: yaml.Node,
    path: Path,
    *,
    what: str = "the frontmatter",
    first_line: int = _FIRST_FRONTMATTER_LINE,
) -> None:
    """Refuse alias bombs, recursive aliases, deep nesting and duplicate keys before constructing
    (`what`: the document, in messages; `first_line`: the file's line of its first line).

    The composed graph shares aliased nodes, so it stays small; what explodes is any later walk of
    the constructed objects. Count the size the document would have with every alias expanded.
    """
    import yaml

    expanded: dict[int, int] = {}
    on_path: set[int] = set()
    # Iterative post-order walk: (node, depth, children done?)
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        ident = id(node)
        if done:
            on_path.discard(ident)
            total = 1 + sum(expanded[id(child)] for child in _children(node))
            if total > MAX_EXPANDED_NODES:
                raise _error(
                    "FRONTMATTER_ALIAS_BOMB",
                    f"{what} expands to more than {MAX_EXPANDED_NODES:,} values through "
                    "YAML aliases",
                    path,
                    _node_line(node, first_line),
                    f"remove the anchors (&) and aliases (*); {what} needs neither",
                )
            expanded[ident] = total
            continue
        if ident in expanded:
            continue
        if ident in on_path:
            raise _error(
                "FRONTMATTER_ALIAS_BOMB",
                f"{what} contains an alias that refers to itself",
                path,
                _node_line(node, first_line),
                "remove the recursive anchor (&) and alias (*)",
            )
        if depth > MAX_DEPTH:
            raise _error(
                "FRONTMATTER_TOO_DEEP",
                f"{what} nests deeper than {MAX_DEPTH} levels",
                path,
                _node_line(node, first_line),
                "flatten the structure",
            )
        if isinstance(node, yaml.MappingNode):
            _check_mapping_keys(node, path, first_line)
        on_path.add(ident)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) not in expanded:
                stack.append((child, depth + 1, False))


class _NeedsFullLoader(Exception):
    """The document uses a YAML feature the event builder leaves to PyYAML's constructor."""


_PLAIN = (True, False)
# First characters for which PyYAML's resolver has an implicit type (bool, int, float, null,
# timestamp, merge, value, yaml): `Resolver.yaml_implicit_resolvers`' keys, written out so that
# reading plain frontmatter needs no YAML import (a test checks the two agree).
_TYPED_FIRST_CHARS = frozenset("!&*+-.0123456789<=FNOTYfnoty~") | {""}
# Of the plain scalars starting with a letter, only these have a type (PyYAML's bool and null
# resolvers); and a dotted version like 1.0.0 is no int, float or timestamp. Both are strings
# without asking the resolver (a test checks against PyYAML).
_TYPED_WORDS = frozenset(
    {"yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE"}
    | {"on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL"}
)
_DOTTED_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")


def plainly_text(text: str) -> bool:
    """Whether a plain scalar is a string by YAML 1.1's implicit types, without the resolver."""
    if text[:1].isalpha():
        return text not in _TYPED_WORDS
    return _DOTTED_VERSION.fullmatch(text) is not None


@functools.cache
def _scalar_tools() -> tuple[Any, Any]:
    """PyYAML's resolver and safe constructor, imported on first use: most frontmatter needs
    neither."""
    import yaml

    return yaml.resolver.Resolver(), yaml.constructor.SafeConstructor()


def _build_from_events(source: str, path: Path) -> tuple[dict[str, Any], dict[str, int]] | None:
    """Build the frontmatter straight from the C parser's events.

    Most frontmatter is plain keys, strings and lists, and for those this is about twice as fast as
    composing a node graph and then constructing it. Anything else (anchors, aliases, explicit
    tags, merge keys, complex keys, several documents) returns None and goes through PyYAML's
    full loader; the results agree (tested).
    """
    import yaml

    parser: Any = yaml.CSafeLoader(source)  # used only as the C parser's event stream
    try:
        root: Any = None
        # Each open container: [object, pending key, key identities seen -> line]
        stack: list[list[Any]] = []
        documents = 0
        root_lines: dict[str, int] = {}
        while True:
            event: Any = parser.get_event()
            kind = type(event)
            if kind is yaml.ScalarEvent:
                if event.anchor is not None or event.tag not in (None, "!"):
                    return None
                value: Any = event.value
                if event.implicit[0]:
                    # Most plain scalars start with a character no implicit type can start with
                    # (a letter other than y/n/t/f/o): those are strings without asking.
                    tag = (
                        _scalar_tools()[0].resolve(yaml.ScalarNode, value, _PLAIN)
                        if not value or value[0] in _TYPED_FIRST_CHARS
                        else _STR_TAG
                    )
                    if tag == _MERGE_TAG:
                        return None
                    if tag != _STR_TAG:
                        try:
                            node = yaml.ScalarNode(tag, value)
                            scalars = _scalar_tools()[1]
                            value = scalars.yaml_constructors[tag](scalars, node)
                        except Exception:
                            return None  # the full loader reports the bad value

                    identity: Any = (tag, event.value)
                else:
                    identity = (_STR_TAG, value)
                line = int(event.start_mark.line) + _FIRST_FRONTMATTER_LINE
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                if event.anchor is not None or event.tag not in (None, "!"):
                    return None
                if len(stack) >= MAX_DEPTH:
                    raise _error(
                        "FRONTMATTER_TOO_DEEP",
                        f"the frontmatter nests deeper than {MAX_DEPTH} levels",
                        path,
                        int(event.start_mark.line) + _FIRST_FRONTMATTER_LINE,
                        "flatten the structure",
                    )
                if stack and type(stack[-1][0]) is dict and stack[-1][1] is _NO_KEY:
                    return None  # a mapping or sequence used as a key
                container: Any = {} if kind is yaml.MappingStartEvent else []
                stack.append([container, _NO_KEY, {}])
                continue
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                value = stack.pop()[0]
                identity = None
                line = 0
            elif kind is yaml.AliasEvent:
                return None
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    return None
                continue
            elif kind is yaml.StreamEndEvent:
                break
            else:
                continue
            if not stack:
                root = value
                continue
            top = stack[-1]
            if type(top[0]) is list:
                top[0].append(value)
            elif top[1] is _NO_KEY:
                seen = top[2]
                if identity in seen:
                    raise _error(
                        "FRONTMATTER_DUPLICATE_KEY",
                        f"key {identity[1]!r} appears twice (first on line {seen[identity]})",
                        path,
                        line,
                        "keep one of the two; YAML readers disagree on which one wins",
                    )
                seen[identity] = line
                top[1] = value
                if len(stack) == 1 and isinstance(value, str):
                    root_lines[value] = line
            else:
                top[0][top[1]] = value
                top[1] = _NO_KEY
    finally:
        parser.dispose()
    if root is None:
        return None  # empty: let the full loader give the error
    if not isinstance(root, dict):
        return None
    return root, root_lines


_NO_KEY = object()
_NOT_SIMPLE = object()
_KEY_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*):(?: +(.*))?")
_ITEM_LINE = re.compile(r"( *)-(?: +(.*))?")
_NESTED_KEY_LINE = re.compile(r"( +)([A-Za-z_][A-Za-z0-9_-]*):(?: +(.*))?")


@functools.lru_cache(maxsize=4096)
def _implicit_tag(text: str) -> str:
    # Keys and short values repeat across thousands of skills; the resolver is pure Python.
    import yaml

    return str(_scalar_tools()[0].resolve(yaml.ScalarNode, text, _PLAIN))


def _simple_scalar(text: str | None) -> Any:
    """The value of a plain scalar that needs no YAML parser, or `_NOT_SIMPLE`."""
    if text is None:
        return None
    text = text.rstrip(" ")
    if not text:
        return None
    if (
        not text[0].isalnum()
        or ": " in text
        or " #" in text
        or text.endswith(":")
        or not text.isprintable()  # also rules out tabs and YAML's other line breaks
    ):
        return _NOT_SIMPLE
    if text[0] not in _TYPED_FIRST_CHARS or plainly_text(text):
        return text
    tag = _implicit_tag(text)
    if tag == _STR_TAG:
        return text
    import yaml

    scalars = _scalar_tools()[1]
    try:
        return scalars.yaml_constructors[tag](scalars, yaml.ScalarNode(tag, text))
    except Exception:
        return _NOT_SIMPLE


def _read_simple_lines(source: str, path: Path) -> tuple[dict[str, Any], dict[str, int]] | None:
    """Read the frontmatter most skills have without a YAML parser: `key: plain value` lines,
    `- item` lists of plain values, one level of `key:` followed by indented `name: plain value`
    lines (the `metadata` mapping), blank lines and comment lines. Anything else returns None and
    goes to the YAML parser; where this answers, it answers as PyYAML does (tested).

    SKILL.md files are read by the thousand; this is a few times faster than libyaml's events,
    and a command that reads one skill does not pay for importing PyYAML (~10 ms).
    """
    data: dict[str, Any] = {}
    key_lines: dict[str, int] = {}
    open_key: str | None = None  # a key whose value may be the block that follows
    items: list[Any] | None = None
    mapping: dict[str, Any] | None = None
    indent = -1  # of the block's lines
    for offset, text in enumerate(source.split("\n")):
        if not text or text.isspace() or text.lstrip().startswith("#"):
            continue
        if text[0] == " " or text[0] == "-":
            if open_key is None:
                return None
            item = _ITEM_LINE.fullmatch(text)
            if item is not None:
                if mapping is not None:
                    return None
                value = _simple_scalar(item.group(2))
                if value is _NOT_SIMPLE or (items is not None and len(item.group(1)) != indent):
                    return None
                if items is None:
                    items, indent = [], len(item.group(1))
                    data[open_key] = items
                items.append(value)
                continue
            entry = _NESTED_KEY_LINE.fullmatch(text)
            if entry is None or items is not None:
                return None
            if mapping is not None and len(entry.group(1)) != indent:
                return None
            key, value = entry.group(2), _simple_scalar(entry.group(3))
            if value is _NOT_SIMPLE or key in (mapping or {}):
                return None  # (a repeated key: the YAML reader says where, and which)
            if key[0] in _TYPED_FIRST_CHARS and _simple_scalar(key) != key:
                return None
            if mapping is None:
                mapping, indent = {}, len(entry.group(1))
                data[open_key] = mapping
            mapping[key] = value
            continue
        line = _KEY_LINE.fullmatch(text)
        if line is None:
            return None
        key = line.group(1)
        if key[0] in _TYPED_FIRST_CHARS and _simple_scalar(key) != key:
            return None  # a key YAML reads as a boolean or number
        value = _simple_scalar(line.group(2))
        if value is _NOT_SIMPLE:
            return None
        number = offset + _FIRST_FRONTMATTER_LINE
        if key in key_lines:
            raise _error(
                "FRONTMATTER_DUPLICATE_KEY",
                f"key {key!r} appears twice (first on line {key_lines[key]})",
                path,
                number,
                "keep one of the two; YAML readers disagree on which one wins",
            )
        key_lines[key] = number
        data[key] = value
        # Only an empty value can be followed by a block: `key: null` then `  - x` is one plain
        # scalar over two lines ("null - x"), which the YAML parser is left to read.
        open_key = key if not (line.group(2) or "").strip(" ") else None
        items = mapping = None
    return (data, key_lines) if data else None


def _construct(loader: yaml.CSafeLoader, node: yaml.Node, path: Path) -> Any:
    import yaml

    try:
        return loader.construct_document(node)
    except yaml.YAMLError:
        raise
    except Exception as exc:
        # PyYAML's constructors fail on explicit tags with malformed values (`!!timestamp x`,
        # `!!int :`) with AttributeError, IndexError and others: all of them mean bad input.
        raise _error(
            "FRONTMATTER_INVALID_YAML",
            f"the frontmatter has a value YAML cannot construct ({type(exc).__name__}: {exc})",
            path,
            None,
            "remove explicit tags (!!timestamp, !!int, …) and write plain values",
        ) from None


def load_frontmatter(source: str, path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Load frontmatter YAML (C safe loader) into a mapping and the line of each top-level key."""
    loaded = _load_frontmatter(source, path)
    # A raw NUL is refused by the parser; an escaped one ("\0", "\x00", "\u0000" in a double-
    # quoted string) is not, and no store keeps it (PostgreSQL refuses it in text and JSON).
    if "\\" in source and _holds_nul(loaded[0]):
        key = next(k for k, v in loaded[0].items() if _holds_nul(v) or "\x00" in str(k))
        raise _error(
            "FRONTMATTER_INVALID_YAML",
            f"frontmatter value {key} holds a NUL character (an escaped \\0)",
            path,
            loaded[1].get(key),
            "remove the \\0 (or \\x00, \\u0000) escape",
        )
    return loaded


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def _load_frontmatter(source: str, path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    if len(source.encode("utf-8")) > MAX_FRONTMATTER_BYTES:
        raise _error(
            "FRONTMATTER_TOO_LARGE",
            f"the frontmatter is larger than {MAX_FRONTMATTER_BYTES // 1024} KiB",
            path,
            _FIRST_FRONTMATTER_LINE,
            "keep the frontmatter to short metadata; put the rest in the body or other files",
        )
    simple = _read_simple_lines(source, path)
    if simple is not None:
        return simple
    import yaml

    try:
        built = _build_from_events(source, path)
    except yaml.YAMLError:
        built = None  # the full loader reports it with its usual message and line
    if built is not None:
        _check_keys_are_strings(built[0], path)
        return built
    loader = yaml.CSafeLoader(source)
    try:
        node = loader.get_single_node()
        if node is None:
            raise _error(
                "FRONTMATTER_EMPTY",
                "the frontmatter is empty",
                path,
                _FIRST_FRONTMATTER_LINE,
                "add at least name, version and description",
            )
        check_node_graph(node, path)
        if not isinstance(node, yaml.MappingNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
            raise _error(
                "FRONTMATTER_NOT_MAPPING",
                f"the frontmatter must be a mapping of keys to values, not {kind}",
                path,
                _node_line(node),
                "write one 'key: value' per line",
            )
        key_lines = {
            str(key.value): _node_line(key)
            for key, _ in node.value
            if isinstance(key, yaml.ScalarNode)
        }
        data = _construct(loader, node, path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + _FIRST_FRONTMATTER_LINE if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise _error(
            "FRONTMATTER_INVALID_YAML",
            f"the frontmatter is not valid YAML: {problem}",
            path,
            line,
            "quote values that contain ': ' or start with a special character "
            "([ { & * ! | > ' \" % @ `)",
        ) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise _error(
            "FRONTMATTER_INVALID_YAML",
            f"the frontmatter cannot be read: {exc}",
            path,
            None,
            "simplify the value; frontmatter should hold plain strings, lists and mappings",
        ) from None
    finally:
        loader.dispose()
    _check_keys_are_strings(data, path)
    return data, key_lines


def _check_keys_are_strings(data: dict[Any, Any], path: Path) -> None:
    for key in data:
        if not isinstance(key, str):
            raise _error(
                "FRONTMATTER_KEY_NOT_STRING",
                f"frontmatter key {key!r} is not a string",
                path,
                None,
                "frontmatter keys are field names such as 'name'; quote the key if it is meant",
            )


def parse_skill_md(raw: bytes, path: Path) -> SkillDocument:
    """Parse the bytes of a SKILL.md, or raise a `FrontmatterError` with a line number."""
    text = decode_skill_md(raw, path)
    source, body, body_first_line = split_frontmatter(text, path)
    frontmatter, key_lines = load_frontmatter(source, path)
    return SkillDocument(frontmatter, body, body_first_line, key_lines)
