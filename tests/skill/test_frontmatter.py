"""SKILL.md parsing: bounded, line-numbered errors, never another exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from skillstage.errors import SkillstageError
from skillstage.skill.frontmatter import FrontmatterError, parse_skill_md

P = Path("skill/SKILL.md")


def parse(text: str | bytes):  # type: ignore[no-untyped-def]
    return parse_skill_md(text.encode() if isinstance(text, str) else text, P)


def error_of(text: str | bytes) -> FrontmatterError:
    with pytest.raises(FrontmatterError) as caught:
        parse(text)
    return caught.value


def test_a_dashes_inside_a_value_do_not_close_the_frontmatter() -> None:
    document = parse("---\nname: x\ndescription: a --- b\n---\nbody\n")
    assert document.frontmatter["description"] == "a --- b"
    assert document.body == "body\n"
    assert document.body_first_line == 5


def test_the_closing_line_may_have_trailing_blanks_and_body_may_contain_dashes() -> None:
    document = parse("---\nname: x\n---  \nintro\n---\nmore\n")
    assert document.frontmatter == {"name": "x"}
    assert document.body == "intro\n---\nmore\n"


def test_crlf_and_bom_are_tolerated() -> None:
    document = parse(b"\xef\xbb\xbf---\r\nname: x\r\ndescription: d\r\n---\r\nbody\r\n")
    assert document.frontmatter == {"name": "x", "description": "d"}
    assert document.body == "body\n"


def test_key_lines_are_file_lines() -> None:
    document = parse("---\nname: x\n\ndescription: d\n---\n")
    assert document.key_lines == {"name": 2, "description": 4}


def test_skill_md_over_one_mib_is_refused() -> None:
    error = error_of("---\nname: x\n---\n" + "a" * (1024 * 1024))
    assert error.code == "SKILL_MD_TOO_LARGE"
    assert "1 MiB" in error.message


def test_frontmatter_over_64_kib_is_refused() -> None:
    error = error_of("---\ndescription: " + "a" * (65 * 1024) + "\n---\n")
    assert error.code == "FRONTMATTER_TOO_LARGE"
    assert error.line == 2


def test_an_alias_bomb_is_refused() -> None:
    lines = ["---", 'a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for level in range(1, 8):
        previous = chr(ord("a") + level - 1)
        current = chr(ord("a") + level)
        lines.append(f"{current}: &{current} [" + ",".join([f"*{previous}"] * 10) + "]")
    lines.append("---")
    error = error_of("\n".join(lines) + "\n")
    assert error.code == "FRONTMATTER_ALIAS_BOMB"
    assert error.line is not None and error.line >= 2


def test_a_few_aliases_are_fine() -> None:
    document = parse("---\nbase: &b {k: v}\nother: *b\n---\n")
    assert document.frontmatter["other"] == {"k": "v"}


def test_a_recursive_alias_is_refused() -> None:
    assert error_of("---\na: &a [*a]\n---\n").code == "FRONTMATTER_ALIAS_BOMB"


def test_duplicate_keys_are_refused_with_both_lines() -> None:
    error = error_of("---\nname: x\ndescription: d\nname: y\n---\n")
    assert error.code == "FRONTMATTER_DUPLICATE_KEY"
    assert error.line == 4
    assert "first on line 2" in error.message


def test_nested_duplicate_keys_are_refused() -> None:
    error = error_of("---\nmetadata:\n  a: '1'\n  a: '2'\n---\n")
    assert error.code == "FRONTMATTER_DUPLICATE_KEY"
    assert error.line == 4


@pytest.mark.parametrize(
    ("source", "kind"), [("- a\n- b", "a list"), ("just text", "a single value")]
)
def test_non_mapping_frontmatter_is_refused(source: str, kind: str) -> None:
    error = error_of(f"---\n{source}\n---\n")
    assert error.code == "FRONTMATTER_NOT_MAPPING"
    assert kind in error.message


def test_non_utf8_bytes_are_refused_with_their_line() -> None:
    error = error_of(b"---\nname: x\ndescription: caf\xe9\n---\n")
    assert error.code == "SKILL_MD_NOT_UTF8"
    assert error.line == 3
    assert "0xe9" in error.message


def test_missing_opening_line() -> None:
    error = error_of("name: x\n")
    assert (error.code, error.line) == ("FRONTMATTER_MISSING", 1)


def test_unclosed_frontmatter() -> None:
    assert error_of("---\nname: x\n").code == "FRONTMATTER_UNCLOSED"


def test_a_closing_line_with_a_comment_is_pointed_at() -> None:
    error = error_of("---\nname: x\n--- # end\nbody\n")
    assert (error.code, error.line) == ("FRONTMATTER_UNCLOSED", 3)
    assert "line 3 starts with '---' but is not exactly '---'" in error.message


def test_invalid_yaml_names_its_line() -> None:
    error = error_of("---\nname: x\ndescription: a: b\n---\n")
    assert error.code == "FRONTMATTER_INVALID_YAML"
    assert error.line == 3
    assert error.hint and "quote" in error.hint


@pytest.mark.parametrize(
    "value", ['"tab\\0nul"', '"a\\x00"', '"a\\u0000"', '{k: "a\\0"}', '["a\\0"]']
)
def test_an_escaped_nul_is_refused(value: str) -> None:
    # No store keeps U+0000 (PostgreSQL refused the frontmatter and `list` failed for every skill)
    error = error_of(f"---\nname: x\ndescription: {value}\n---\n")
    assert error.code == "FRONTMATTER_INVALID_YAML"
    assert "NUL" in error.message and "description" in error.message
    assert parse('---\nname: x\ndescription: "a\\\\0"\n---\n')  # a backslash and a 0


def test_empty_frontmatter() -> None:
    assert error_of("---\n---\nbody").code == "FRONTMATTER_EMPTY"


def test_deep_nesting_is_refused() -> None:
    error = error_of("---\na: " + "[" * 200 + "]" * 200 + "\n---\n")
    assert error.code in ("FRONTMATTER_TOO_DEEP", "FRONTMATTER_INVALID_YAML")


def test_non_string_keys_are_refused() -> None:
    assert error_of("---\n1: x\n---\n").code == "FRONTMATTER_KEY_NOT_STRING"


def test_errors_render_place_and_hint() -> None:
    text = str(error_of("---\nname: x\nname: y\n---\n"))
    assert text.startswith("skill/SKILL.md:3: key 'name' appears twice")
    assert "hint:" in text


# -- properties: whatever the bytes, a parsed skill or a SkillstageError ---------------------------

_yaml_alphabet = st.sampled_from(
    [
        *"abc:-[]{}&*!|>'\"%@`#,?\n\t ",
        "---",
        "...",
        "\r\n",
        "\ufeff",
        "\x00",
        "é",
        "\\",
        "!!binary ",
        "!!timestamp ",
        "!!int ",
        "!!float ",
        "!!set ",
        "!!omap ",
        "!!pairs ",
        "!!python/object ",
        "<<: ",
        "2025-13-45",
        "1e999",
        "? ",
        "~",
        "0x",
    ]
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_parse_or_raise_a_skillstage_error(raw: bytes) -> None:
    try:
        document = parse_skill_md(raw, P)
    except SkillstageError:
        return
    assert isinstance(document.frontmatter, dict)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_yaml_alphabet, max_size=200).map("".join))
def test_any_frontmatter_text_parses_or_raises_a_skillstage_error(source: str) -> None:
    raw = ("---\n" + source + "\n---\nbody\n").encode("utf-8", "surrogatepass")
    try:
        document = parse_skill_md(raw, P)
    except SkillstageError:
        return
    assert all(isinstance(key, str) for key in document.frontmatter)


@pytest.mark.parametrize("value", ["!!timestamp x", "!!int :", "!!binary é"])
def test_malformed_explicit_tags_are_yaml_errors(value: str) -> None:
    assert error_of(f"---\na: {value}\n---\n").code == "FRONTMATTER_INVALID_YAML"


# -- the event builder agrees with PyYAML's full loader wherever it answers ------------------------

_scalars = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.sampled_from(["yes", "no", "on", "1.0", "0x1F", "2025-11-20", "~", "null", "1_000", ".inf"]),
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(min_size=1, max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _both(source: str):  # type: ignore[no-untyped-def]
    import yaml

    from skillstage.skill.frontmatter import _build_from_events

    try:
        fast = _build_from_events(source, P)
    except (SkillstageError, yaml.YAMLError):
        return None, None
    if fast is None:
        return None, None
    return fast[0], yaml.load(source, Loader=yaml.CSafeLoader)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=10), _values, min_size=1, max_size=6))
def test_event_builder_matches_pyyaml_on_dumped_documents(data: dict[str, object]) -> None:
    import yaml

    for style in (False, True, None):
        fast, full = _both(yaml.safe_dump(data, default_flow_style=style, allow_unicode=True))
        assert fast == full


@settings(max_examples=500, deadline=None)
@given(st.lists(_yaml_alphabet, max_size=120).map("".join))
def test_event_builder_matches_pyyaml_on_arbitrary_text(source: str) -> None:
    fast, full = _both("k: v\n" + source)
    assert fast == full


# -- the line reader (no YAML parser) agrees with PyYAML wherever it answers ---------------------

_simple_values = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
    st.sampled_from(
        [
            "yes",
            "No",
            "on",
            "off",
            "true",
            "null",
            "1.0",
            "1.0.0",
            "0x1F",
            "0o17",
            "12:30",
            "2025-11-20",
            "2025-13-45",
            "1e3",
            ".inf",
            "C# tips",
            "a: b",
            "a #b",
            "a:",
            "x:y",
            "é",
            "v1.0.0",
            "1_000",
            "+1",
            "-1",
            "~",
            "<<",
            "=",
            "a\tb",
            "a\u2028b",
            "日本",
        ]
    ),
)
_simple_keys = st.sampled_from(
    ["name", "description", "tags", "on", "yes", "null", "a-b", "x_y", "Key", "n", "1a", "true"]
)


@st.composite
def _simple_documents(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        key = draw(_simple_keys)
        if draw(st.booleans()):
            lines.append(f"{key}: {draw(_simple_values)}{draw(st.sampled_from(['', ' ', '  ']))}")
        elif draw(st.booleans()):
            lines.append(f"{key}:")
            indent = draw(st.sampled_from(["", "  ", "    "]))
            for _ in range(draw(st.integers(0, 3))):
                lines.append(f"{indent}- {draw(_simple_values)}")
        else:  # a nested mapping (`metadata:`), now and then with an indent out of line
            lines.append(f"{key}:")
            indent = draw(st.sampled_from(["  ", "    "]))
            for _ in range(draw(st.integers(0, 3))):
                shift = draw(st.sampled_from(["", "", "", " "]))
                value = draw(st.sampled_from(["", f" {draw(_simple_values)}"]))
                lines.append(f"{indent}{shift}{draw(_simple_keys)}:{value}")
        if draw(st.integers(0, 5)) == 0:
            lines.append(
                draw(st.sampled_from(["", "# comment", "  ", "   - x", " x: y", "  # note"]))
            )
    return "\n".join(lines) + draw(st.sampled_from(["", "\n"]))


@settings(max_examples=1500, deadline=None)
@given(_simple_documents())
@example("name: Null\n   - x")  # a null-looking value continued on the next line: "Null - x"
@example("tags: ~\n  - a")
@example("metadata:\n  version: 1.0.0\n  author: Ada\n")
@example("metadata:\n  a: 1\n  a: 2\n")  # a repeated key: left to the YAML reader
@example("metadata:\n  - a\n  b: c\n")
def test_line_reader_matches_pyyaml(source: str) -> None:
    import yaml

    from skillstage.skill.frontmatter import _read_simple_lines

    try:
        simple = _read_simple_lines(source, P)
    except SkillstageError as error:
        assert error.code == "FRONTMATTER_DUPLICATE_KEY"
        return
    if simple is None:
        return
    assert simple[0] == yaml.load(source, Loader=yaml.CSafeLoader)
    assert set(simple[1]) == set(simple[0])


_plain_values = st.sampled_from(
    ["1.0.0", "Ada Lovelace", "yes", "null", "", "1.0", "v2", "a #b", "x: y", "~", "true", "日本"]
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(_simple_keys, _plain_values, st.sampled_from(["  ", "  ", "    ", "   "])),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from(["metadata", "tags", "on"]),
)
def test_line_reader_matches_pyyaml_on_nested_mappings(
    entries: list[tuple[str, str, str]], key: str
) -> None:
    import yaml

    from skillstage.skill.frontmatter import _read_simple_lines

    source = (
        "name: a\n"
        + f"{key}:\n"
        + "".join(
            f"{indent}{sub}:{' ' + value if value else ''}\n" for sub, value, indent in entries
        )
    )
    simple = _read_simple_lines(source, P)
    if simple is not None:
        assert simple[0] == yaml.load(source, Loader=yaml.CSafeLoader)
