"""Old-format skills (v1) and their upgrade to today's format (v2: YAML frontmatter).

A v1 skill is a `SKILL.md` (or `skill.md`, or the older `prompt.md`) without frontmatter, whose
name is its first heading and whose description is its first paragraph; or a frontmatter with the
keys used before the Agent Skills spec: `title` (today's `name`), `desc` (`description`) and
`triggers` (folded into the description as "Use it when the request mentions …", since agents
choose a skill by its description alone).

The first part of this module is pure (bytes in, bytes out); the second applies an upgrade to a
directory: the result is checked by the same rules `skillstage validate` runs, on a scratch copy,
and written atomically only when it passes.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from skillstage.errors import SkillstageError

if TYPE_CHECKING:
    from skillstage.config import ValidationPolicy
    from skillstage.skill.checks import Finding

# The file names a skill's instructions were kept under, in the order they are looked for.
SKILL_FILE_NAMES = ("SKILL.md", "skill.md", "prompt.md")
OLD_KEYS = frozenset({"title", "desc", "triggers"})
DEFAULT_VERSION = "1.0.0"
_MAX_NAME_LENGTH = 64
_MAX_DESCRIPTION_LENGTH = 1024
_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*\Z")


class UpgradeRefused(SkillstageError):
    """The skill cannot be upgraded as it is; the message says why and the hint what to fix."""

    code = "UPGRADE_REFUSED"


# -- detection ---------------------------------------------------------------------------------


def has_frontmatter(raw: bytes) -> bool:
    """Whether a skill file opens with a `---` line (today's format). Costs a few byte compares:
    `validate` asks it of thousands of files."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.startswith(b"---"):
        return False
    rest = raw[3:].split(b"\n", 1)[0]
    return rest.strip(b" \t\r") == b""


def is_v1_text(raw: bytes) -> bool:
    """Whether a skill file without frontmatter holds v1 content: readable text (UTF-8, no NUL)
    that is not blank. An empty or binary file is no skill of any format."""
    if has_frontmatter(raw) or b"\x00" in raw:
        return False
    try:
        return bool(raw.decode("utf-8-sig").strip())
    except UnicodeDecodeError:
        return False


def old_keys_in(frontmatter: Mapping[str, Any]) -> list[str]:
    """The old format's keys a frontmatter uses, in file order."""
    return [key for key in frontmatter if key in OLD_KEYS]


def is_skill_name(text: str) -> bool:
    """A valid Agent Skills name: 1-64 of a-z, 0-9 and single inner hyphens."""
    return len(text) <= _MAX_NAME_LENGTH and _NAME.match(text) is not None


def name_from_title(title: str) -> str:
    """A skill name made from a human title ("PDF Tools!" → "pdf-tools"); "" when nothing of it
    is usable."""
    ascii_text = "".join(
        c for c in unicodedata.normalize("NFKD", title) if not unicodedata.combining(c)
    )
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > _MAX_NAME_LENGTH:
        slug = slug[:_MAX_NAME_LENGTH].rsplit("-", 1)[0] if "-" in slug[:_MAX_NAME_LENGTH] else ""
    return slug


# -- the Markdown of a v1 file -----------------------------------------------------------------

_ATX = re.compile(r" {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*\Z")
_SETEXT = re.compile(r" {0,3}(?:=+|-+)[ \t]*\Z")
_RULE = re.compile(r" {0,3}(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})\Z")
_LIST_ITEM = re.compile(r" {0,3}(?:[-*+]|\d{1,9}[.)])(?:[ \t]|\Z)")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)|\[([^\]]+)\]\[[^\]]*\]")
_EMPHASIS = re.compile(r"(\*{1,3}|_{2,3})(\S(?:.*?\S)?)\1")
_TAG = re.compile(r"</?[A-Za-z][^>]*>")


@dataclass(frozen=True)
class _Blocks:
    title: str | None
    paragraph: str | None


def _first_title_and_paragraph(text: str) -> _Blocks:
    """The first heading and the first paragraph of a Markdown text (code blocks, HTML, tables,
    lists and rules are not paragraphs)."""
    title: str | None = None
    paragraph: str | None = None
    lines: list[str] = []
    fence: str | None = None
    comment = False

    def flush() -> None:
        nonlocal paragraph
        if lines and paragraph is None:
            paragraph = " ".join(lines)
        lines.clear()

    for line in text.split("\n"):
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        if comment:
            comment = "-->" not in stripped
            continue
        if stripped.startswith(("```", "~~~")):
            flush()
            fence = stripped[:3]
            continue
        if not stripped:
            flush()
            continue
        if stripped.startswith("<!--"):
            flush()
            comment = "-->" not in stripped
            continue
        atx = _ATX.match(line)
        if atx is not None:
            flush()
            if title is None and (atx.group(1) or "").strip():
                title = _plain(atx.group(1))
            continue
        if lines and _SETEXT.match(line):
            if title is None:
                title = _plain(" ".join(lines))
            lines.clear()
            continue
        if (
            _RULE.match(line)
            or _LIST_ITEM.match(line)
            or stripped.startswith(("<", "|"))
            or (not lines and line.startswith(("    ", "\t")))
        ):
            flush()
            continue
        lines.append(stripped.lstrip("> ").strip())
        if title is not None and paragraph is not None:
            break
    flush()
    return _Blocks(title, _plain(paragraph) if paragraph else None)


def _plain(markdown: str) -> str:
    """Inline Markdown as plain text: links and images by their text, no emphasis or code marks,
    no HTML tags, one space between words."""
    text = _IMAGE.sub(r"\1", markdown)
    text = _LINK.sub(lambda m: m.group(1) or m.group(2), text)
    text = _EMPHASIS.sub(r"\2", text)
    text = _TAG.sub("", text).replace("`", "")
    return " ".join(text.split())


def _within_limit(description: str) -> tuple[str, bool]:
    """The description, cut to whole sentences within the spec's limit; and whether it was cut
    (a description with no sentence end within the limit is left whole, for validation to
    refuse)."""
    if len(description) <= _MAX_DESCRIPTION_LENGTH:
        return description, False
    sentences = re.split(r"(?<=[.!?])\s+", description)
    kept = ""
    for sentence in sentences:
        candidate = f"{kept} {sentence}".strip()
        if len(candidate) > _MAX_DESCRIPTION_LENGTH:
            break
        kept = candidate
    return (kept, True) if kept else (description, False)


# -- conversion --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversion:
    """What an upgrade makes of one skill file."""

    source: str  # the file read (SKILL.md, skill.md or prompt.md)
    shape: Literal["no-frontmatter", "old-keys", "file-name"]
    old: bytes
    new: bytes  # the new SKILL.md
    name: str | None
    name_from: str | None  # "title", "heading", "directory", "frontmatter"
    description_from: str | None  # "desc", "paragraph", "frontmatter"
    notes: tuple[str, ...] = ()


def _lines(text: str) -> list[str]:
    """Lines with their own ends (LF, CRLF or a lone CR, as a Markdown reader splits them)."""
    return re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z", text)


def _yaml_entry(key: str, value: str, eol: str) -> str:
    """One `key: value` line, quoted as YAML needs."""
    import yaml

    dumped = yaml.safe_dump({key: value}, allow_unicode=True, width=2**31 - 1, sort_keys=False)
    return dumped.rstrip("\n").replace("\n", eol) + eol


def _decode(raw: bytes, source: str) -> str:
    from skillstage.skill.frontmatter import MAX_SKILL_MD_BYTES

    if len(raw) > MAX_SKILL_MD_BYTES:
        raise UpgradeRefused(
            f"{source} is more than {MAX_SKILL_MD_BYTES:,} bytes (1 MiB), the limit of a "
            "skill file",
            code="SKILL_MD_TOO_LARGE",
            hint="move long reference material into separate files (references/*.md), link "
            "them from the body, then upgrade",
        )
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise UpgradeRefused(
            f"{source} holds a NUL byte (offset {nul}): it is a binary file, not Markdown",
            code="SKILL_MD_BINARY",
            line=raw.count(b"\n", 0, nul) + 1,
            hint=f"replace {source} with the skill's Markdown instructions",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UpgradeRefused(
            f"{source} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            code="SKILL_MD_NOT_UTF8",
            line=raw.count(b"\n", 0, exc.start) + 1,
            hint=f"save {source} as UTF-8 (e.g. iconv -f latin1 -t utf-8), then upgrade",
        ) from None
    if not text.lstrip("\ufeff").strip():
        raise UpgradeRefused(
            f"{source} is empty: there is no heading or paragraph to take the name and "
            "description from",
            code="SKILL_MD_EMPTY",
            hint="write SKILL.md beginning with:\n---\nname: skill-name\nversion: 1.0.0\n"
            "description: What the skill does and when to use it\n---",
        )
    return text


def _choose_name(title: str | None, title_from: str, expected: str) -> tuple[str, str, str | None]:
    """The skill's name, where it came from, and a note when the title was passed over.

    The name must equal the directory's (a rule of the spec), so the title is used when it makes
    that name; else the directory name when it is a valid one; else the title's name, which
    validation then refuses with the directory rename that fixes it."""
    slug = name_from_title(title) if title else ""
    if slug and slug == expected:
        return slug, title_from, None
    if is_skill_name(expected):
        if not title:
            return expected, "directory", f"no {title_from} to take a name from"
        why = (
            f"gives {slug!r}, not the directory's name"
            if slug
            else "gives no valid name (a-z, 0-9 and hyphens)"
        )
        return expected, "directory", f"the {title_from} {title!r} {why}"
    if slug:
        return slug, title_from, None
    shown = f"the {title_from} {title!r} gives no valid name and " if title else ""
    raise UpgradeRefused(
        f"no valid skill name: {shown}the directory name {expected!r} is not one either "
        "(1-64 characters of a-z, 0-9 and single hyphens)",
        code="NAME_UNDERIVABLE",
        hint=f"rename the directory, e.g. to {name_from_title(expected) or 'my-skill'!r}, "
        "then upgrade",
    )


def convert(
    raw: bytes,
    *,
    source: str,
    expected_name: str,
    add_version: bool = True,
) -> Conversion | None:
    """The v2 SKILL.md for a skill file's bytes, or None when it is already v2 (frontmatter in
    SKILL.md or skill.md, none of the old keys).

    The body is kept byte for byte (a UTF-8 byte-order mark is dropped: it would stand before the
    opening `---`). `expected_name` is the name the skill's location implies (its directory's);
    `add_version` adds `version: 1.0.0` when the skill has none (skillstage's rules need one; the
    spec's alone do not). Raises `UpgradeRefused` for what cannot be upgraded.
    """
    text = _decode(raw, source)
    bom = text.startswith("\ufeff")
    if bom:
        text = text[1:]
    first_break = re.search(r"\r\n|\r|\n", text)
    eol = first_break.group(0) if first_break else "\n"
    notes: list[str] = ["dropped the UTF-8 byte-order mark"] if bom else []
    if has_frontmatter(raw):
        return _convert_frontmatter(text, raw, source, expected_name, add_version, eol, notes)
    blocks = _first_title_and_paragraph(text.replace("\r\n", "\n").replace("\r", "\n"))
    name, name_from, note = _choose_name(blocks.title, "heading", expected_name)
    if note:
        notes.append(note)
    if not blocks.paragraph:
        raise UpgradeRefused(
            f"{source} has no paragraph to take the description from",
            code="DESCRIPTION_UNDERIVABLE",
            hint=f"add a first paragraph to {source} saying what the skill does and when to use "
            "it, then upgrade",
        )
    description, cut = _within_limit(blocks.paragraph)
    if cut:
        notes.append(
            f"the first paragraph is longer than {_MAX_DESCRIPTION_LENGTH} characters; the "
            "description keeps its first sentences"
        )
    header = "---" + eol + _yaml_entry("name", name, eol)
    if add_version:
        header += _yaml_entry("version", DEFAULT_VERSION, eol)
        notes.append(f"version {DEFAULT_VERSION} (the skill had none)")
    header += _yaml_entry("description", description, eol) + "---" + eol
    return Conversion(
        source,
        "no-frontmatter",
        raw,
        (header + text).encode("utf-8"),
        name,
        name_from,
        "paragraph",
        tuple(notes),
    )


def _triggers_sentence(triggers: Any, source: str, line: int | None) -> str | None:
    if isinstance(triggers, str):
        triggers = [part.strip() for part in triggers.split(",")]
    if triggers is None or (isinstance(triggers, list) and not triggers):
        return None
    if not isinstance(triggers, list) or not all(isinstance(t, str) for t in triggers):
        raise UpgradeRefused(
            "'triggers' must be a list of phrases to fold into the description",
            path=source,
            line=line,
            code="TRIGGERS_WRONG_TYPE",
            hint="write triggers: [first phrase, second phrase], then upgrade",
        )
    phrases = [t.strip() for t in triggers if t.strip()]
    if not phrases:
        return None
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " or " + phrases[-1]
    return f"Use it when the request mentions {listed}."


def _convert_frontmatter(
    text: str,
    raw: bytes,
    source: str,
    expected_name: str,
    add_version: bool,
    eol: str,
    notes: list[str],
) -> Conversion | None:
    from skillstage.skill.frontmatter import FrontmatterError, parse_skill_md

    try:
        document = parse_skill_md(raw, Path(source))
    except FrontmatterError as exc:
        raise UpgradeRefused(
            f"{source} has frontmatter that cannot be read: {exc.message}",
            line=exc.line,
            code=exc.code,
            hint=exc.hint,
        ) from None
    data, key_lines = document.frontmatter, document.key_lines
    old = old_keys_in(data)
    if not old:
        if source == "prompt.md":
            notes.append("prompt.md becomes SKILL.md, unchanged")
            return Conversion(
                source, "file-name", raw, text.encode("utf-8"), None, None, None, tuple(notes)
            )
        return None
    lines = _lines(text)
    closing = document.body_first_line - 1  # the file line of the closing `---`
    starts = sorted({line for line in key_lines.values() if 1 < line < closing} | {closing})

    def span(key: str) -> tuple[int, int]:
        """The 0-based line range of a top-level key's entry (its value's lines too); the
        blank and comment lines before the next key are left to it."""
        begin = key_lines[key]
        end = next(s for s in starts if s > begin)
        while end - 1 > begin:
            previous = lines[end - 2].strip()
            if previous and not previous.startswith("#"):
                break
            end -= 1
        return begin - 1, end - 1

    replaced: dict[int, tuple[int, str]] = {}  # first line -> (end line, new text)

    def replace(key: str, new_text: str) -> None:
        begin, end = span(key)
        replaced[begin] = (end, new_text)

    def text_of(key: str) -> str:
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            raise UpgradeRefused(
                f"'{key}' must be a non-empty string to be upgraded, not {value!r}",
                path=source,
                line=key_lines.get(key),
                code=f"{key.upper()}_WRONG_TYPE",
                hint=f'quote the value: {key}: "..."',
            )
        return " ".join(value.split())

    name: str | None = data.get("name") if isinstance(data.get("name"), str) else None
    name_from: str | None = "frontmatter" if "name" in data else None
    insert_after_open: list[str] = []
    version_entry = ""
    if (
        add_version
        and "version" not in data
        and not (isinstance(data.get("metadata"), dict) and "version" in data["metadata"])
    ):
        version_entry = _yaml_entry("version", DEFAULT_VERSION, eol)
        notes.append(f"version {DEFAULT_VERSION} (the skill had none)")
    if "title" in data:
        title = text_of("title")
        if "name" in data:
            replace("title", version_entry)
            notes.append(f"dropped 'title' ({title!r}): the skill has a name")
        else:
            name, name_from, note = _choose_name(title, "title", expected_name)
            if note:
                notes.append(note)
            replace("title", _yaml_entry("name", name, eol) + version_entry)
    elif "name" not in data:
        blocks = _first_title_and_paragraph(document.body)
        name, name_from, note = _choose_name(blocks.title, "heading", expected_name)
        if note:
            notes.append(note)
        insert_after_open += [_yaml_entry("name", name, eol), version_entry]
    else:
        insert_after_open.append(version_entry)

    description: str | None = None
    description_from: str | None = None
    if "desc" in data:
        desc = text_of("desc")
        if "description" in data and data["description"] != data["desc"]:
            raise UpgradeRefused(
                "the frontmatter has both 'desc' and 'description', and they differ",
                path=source,
                line=key_lines.get("desc"),
                code="DESCRIPTION_CONFLICT",
                hint="keep one of the two (delete the other line), then upgrade",
            )
        description, description_from = desc, "desc"
    elif "description" in data:
        description_from = "frontmatter"
        if isinstance(data["description"], str):
            description = data["description"]
    else:
        paragraph = _first_title_and_paragraph(document.body).paragraph
        if paragraph is None and "triggers" not in data:
            raise UpgradeRefused(
                f"{source} has no description, desc or first paragraph to take one from",
                code="DESCRIPTION_UNDERIVABLE",
                hint="add 'description: <what the skill does and when to use it>', then upgrade",
            )
        description, description_from = paragraph, "paragraph"
    if "triggers" in data:
        sentence = _triggers_sentence(data["triggers"], source, key_lines.get("triggers"))
        replace("triggers", "")
        if sentence is not None:
            description = f"{description} {sentence}" if description else sentence
            notes.append("triggers folded into the description ('Use it when …')")
        else:
            notes.append("dropped the empty 'triggers'")
    changed_description = "desc" in data or "triggers" in data or description_from == "paragraph"
    if changed_description and description is not None:
        entry = _yaml_entry("description", description, eol)
        if "desc" in data:
            replace("desc", entry)
            if "description" in data:
                replace("description", "")
        elif "description" in data:
            replace("description", entry)
        elif "title" in data and "name" not in data:
            begin = span("title")[0]
            end, name_entry = replaced[begin]
            replaced[begin] = (end, name_entry + entry)  # after the name, as a v1 file's
        else:
            insert_after_open.append(entry)
    out = [lines[0], *insert_after_open]
    index = 1
    while index < len(lines):
        if index in replaced:
            end, new_text = replaced[index]
            out.append(new_text)
            index = end
            continue
        out.append(lines[index])
        index += 1
    return Conversion(
        source,
        "old-keys",
        raw,
        "".join(out).encode("utf-8"),
        name,
        name_from,
        description_from,
        tuple(notes),
    )


def unified_diff(conversion: Conversion, directory: str) -> str:
    """The change as a unified diff (paths as `git diff` shows them)."""
    import difflib

    old = conversion.old.decode("utf-8", errors="replace").splitlines(keepends=True)
    new = conversion.new.decode("utf-8", errors="replace").splitlines(keepends=True)
    prefix = f"{directory.rstrip('/')}/" if directory not in ("", ".") else ""
    lines = difflib.unified_diff(
        old, new, f"a/{prefix}{conversion.source}", f"b/{prefix}SKILL.md", n=3
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# -- applying an upgrade to a directory --------------------------------------------------------


@dataclass
class FormatUpgrade:
    """What `upgrade` did, or would do, to one skill directory."""

    path: Path
    status: Literal["upgraded", "would-upgrade", "already-v2", "refused"]
    source: str | None = None
    shape: str | None = None
    name: str | None = None
    name_from: str | None = None
    description_from: str | None = None
    notes: list[str] = field(default_factory=list)
    diff: str = ""
    code: str | None = None
    reason: str | None = None
    line: int | None = None
    hint: str | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "refused"

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "path": str(self.path),
            "status": self.status,
            "ok": self.ok,
            "source": self.source,
            "target": "SKILL.md" if self.status in ("upgraded", "would-upgrade") else None,
            "shape": self.shape,
            "name": self.name,
            "name_from": self.name_from,
            "description_from": self.description_from,
            "notes": self.notes,
            "diff": self.diff,
            "error": None
            if self.ok
            else {"code": self.code, "message": self.reason, "line": self.line, "hint": self.hint},
            "findings": [asdict(f) for f in self.findings],
        }


def skill_file(directory: Path) -> str | None:
    """The name of a directory's skill file: SKILL.md, else skill.md, else prompt.md."""
    names = set(os.listdir(directory)) if directory.is_dir() else set()
    return next(
        (n for n in SKILL_FILE_NAMES if n in names and (directory / n).is_file()),
        None,
    )


def upgrade_directory(
    directory: Path,
    policy: ValidationPolicy,
    *,
    expected_name: str | None = None,
    spec_only: bool = False,
    write: bool = False,
    known_skills: Mapping[str, Sequence[str]] | None = None,
    shown_as: str | None = None,
) -> FormatUpgrade:
    """Upgrade one skill directory: convert its skill file, check the result as `validate` would
    (`check_skill` on a scratch copy, and its dependencies against `known_skills`), and with
    `write` replace the file atomically (a temporary file renamed over SKILL.md, the old file's
    mode kept; a prompt.md or skill.md is then removed)."""
    shown = shown_as or str(directory)
    outcome = FormatUpgrade(directory, "refused")
    source = skill_file(directory)
    if source is None:
        outcome.code = "SKILL_MD_MISSING"
        outcome.reason = "no SKILL.md, skill.md or prompt.md in the directory"
        outcome.hint = "pass the directory holding the skill's Markdown file"
        return outcome
    outcome.source = source
    if source != "SKILL.md" and os.path.lexists(directory / "SKILL.md"):
        outcome.code = "SKILL_MD_NOT_A_FILE"
        outcome.reason = f"SKILL.md is in the way of upgrading {source}: it is not a file"
        outcome.hint = f"move {directory / 'SKILL.md'} away, then upgrade"
        return outcome
    expected = unicodedata.normalize("NFKC", expected_name or directory.name)
    path = directory / source
    try:
        with path.open("rb") as handle:
            from skillstage.skill.frontmatter import MAX_SKILL_MD_BYTES

            raw = handle.read(MAX_SKILL_MD_BYTES + 1)
        conversion = convert(raw, source=source, expected_name=expected, add_version=not spec_only)
    except UpgradeRefused as exc:
        outcome.code, outcome.reason, outcome.line, outcome.hint = (
            exc.code,
            exc.message,
            exc.line,
            exc.hint,
        )
        return outcome
    except OSError as exc:
        outcome.code = "SKILL_MD_UNREADABLE"
        outcome.reason = f"{source} cannot be read: {exc.strerror or exc}"
        outcome.hint = f"check the permissions of {path}"
        return outcome
    if conversion is None:
        outcome.status = "already-v2"
        outcome.shape = "v2"
        return outcome
    outcome.shape = conversion.shape
    outcome.name, outcome.name_from = conversion.name, conversion.name_from
    outcome.description_from = conversion.description_from
    outcome.notes = list(conversion.notes)
    outcome.diff = unified_diff(conversion, shown)
    findings = _check_result(directory, conversion, policy, expected, spec_only, known_skills)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        outcome.code = "UPGRADE_RESULT_INVALID"
        outcome.findings = errors
        outcome.reason = (
            f"the upgraded SKILL.md would not validate ({len(errors)} error(s): "
            f"{', '.join(sorted({f.id for f in errors}))})"
        )
        outcome.hint = "fix what the findings below name, then upgrade again"
        return outcome
    if not write:
        outcome.status = "would-upgrade"
        return outcome
    try:
        _write_atomically(directory, conversion, path)
    except UpgradeRefused as exc:
        outcome.code, outcome.reason, outcome.hint = exc.code, exc.message, exc.hint
        return outcome
    outcome.status = "upgraded"
    return outcome


def _check_result(
    directory: Path,
    conversion: Conversion,
    policy: ValidationPolicy,
    expected: str,
    spec_only: bool,
    known_skills: Mapping[str, Sequence[str]] | None,
) -> list[Finding]:
    """The findings `validate` would report on the upgraded skill, from a scratch copy of the
    directory holding the new SKILL.md; their paths and hints name the real directory."""
    import dataclasses
    import shutil
    import stat
    import tempfile

    from skillstage.skill.checks import check_dependencies, check_skill

    def copy(source: str, target: str) -> None:
        # A FIFO would block a plain copy; a device or socket cannot be copied: the copy holds
        # a FIFO of its own, which the checks report as the special file it is.
        mode = os.lstat(source).st_mode
        if stat.S_ISREG(mode):
            shutil.copy2(source, target)
        else:
            os.mkfifo(target, stat.S_IMODE(mode))

    with tempfile.TemporaryDirectory(prefix="skillstage-upgrade-") as scratch:
        copy_root = Path(scratch) / (directory.name or "skill")
        shutil.copytree(directory, copy_root, symlinks=True, copy_function=copy)
        if conversion.source != "SKILL.md":
            (copy_root / conversion.source).unlink()
        (copy_root / "SKILL.md").write_bytes(conversion.new)
        report = check_skill(copy_root, policy, spec_only=spec_only, expected_name=expected)
        if not spec_only and known_skills is not None and report.name:
            check_dependencies([report], {**known_skills, report.name: report.dependencies})
    real, copied = str(directory), str(copy_root)

    def real_path(text: str | None) -> str | None:
        return text.replace(copied, real) if text else text

    return [
        dataclasses.replace(f, message=real_path(f.message) or "", hint=real_path(f.hint))
        for f in report.findings
    ]


def _write_atomically(directory: Path, conversion: Conversion, source_path: Path) -> None:
    import tempfile

    with source_path.open("rb") as handle:
        if handle.read(len(conversion.old) + 1) != conversion.old:
            raise UpgradeRefused(
                f"{conversion.source} changed while it was being upgraded; nothing was written",
                code="SKILL_MD_CHANGED",
                hint="run the upgrade again",
            )
        mode = os.fstat(handle.fileno()).st_mode & 0o7777
    target = directory / "SKILL.md"
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".SKILL.md.", suffix=".upgrade")
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(conversion.new)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # On a case-insensitive file system skill.md *is* the SKILL.md just written.
    if (
        conversion.source != "SKILL.md"
        and source_path.exists()
        and not os.path.samefile(source_path, target)
    ):
        source_path.unlink()
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
