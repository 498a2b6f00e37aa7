"""Plain frontmatter is read without importing PyYAML (its import is a tenth of a short command's
start-up), and what is read that way is exactly what PyYAML reads."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from hypothesis import given
from hypothesis import strategies as st

from skillstage.skill import frontmatter
from skillstage.skill.frontmatter import plainly_text

_STR = "tag:yaml.org,2002:str"


def _pyyaml_tag(text: str) -> str:
    return str(yaml.resolver.Resolver().resolve(yaml.ScalarNode, text, (True, False)))


def test_the_typed_first_characters_are_pyyamls() -> None:
    keys = {k for k in yaml.resolver.Resolver.yaml_implicit_resolvers if k is not None}
    assert keys == frontmatter._TYPED_FIRST_CHARS


def test_the_words_pyyaml_types_are_not_plain_text() -> None:
    for word in frontmatter._TYPED_WORDS:
        assert _pyyaml_tag(word) != _STR and not plainly_text(word)
    for text in ("yes", "Null", "OFF", "true"):
        assert not plainly_text(text)
    for text in ("The skill", "no-op", "Yesterday", "nullable", "y", "n", "1.0.0", "10.20.30"):
        assert plainly_text(text) and _pyyaml_tag(text) == _STR, text


@given(
    st.text(alphabet="abnoyNOYTFtf019.:-+_ eE", min_size=1, max_size=12)
    | st.from_regex(r"\A[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}\Z")
    | st.sampled_from(sorted(frontmatter._TYPED_WORDS))
)
def test_plain_text_is_what_pyyaml_reads_as_a_string(text: str) -> None:
    if plainly_text(text):
        assert _pyyaml_tag(text) == _STR, text


def _read_in_a_new_process(frontmatter_text: str) -> dict[str, object]:
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from skillstage.skill.frontmatter import parse_skill_md\n"
        "raw = sys.stdin.buffer.read()\n"
        "document = parse_skill_md(raw, Path('SKILL.md'))\n"
        "print(json.dumps({'yaml': 'yaml' in sys.modules, 'fm': document.frontmatter}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        input=f"---\n{frontmatter_text}---\n# Body\n".encode(),
        capture_output=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_flat_frontmatter_is_read_without_importing_pyyaml() -> None:
    result = _read_in_a_new_process(
        "name: test-skill\nversion: 1.0.0\ndescription: The test skill. Use it when testing.\n"
        "tags:\n  - one\n  - Two words\n"
    )
    assert result["yaml"] is False
    assert result["fm"] == {
        "name": "test-skill",
        "version": "1.0.0",
        "description": "The test skill. Use it when testing.",
        "tags": ["one", "Two words"],
    }


def test_typed_or_nested_frontmatter_still_goes_to_pyyaml() -> None:
    typed = _read_in_a_new_process("name: a\nversion: 1.0\nenabled: yes\n")
    assert typed["yaml"] is True and typed["fm"] == {"name": "a", "version": 1.0, "enabled": True}
    nested = _read_in_a_new_process("name: a\nmetadata:\n  release:\n    version: 1.0.0\n")
    assert nested["yaml"] is True and nested["fm"] == {
        "name": "a",
        "metadata": {"release": {"version": "1.0.0"}},
    }


def test_a_metadata_mapping_of_plain_values_is_read_without_importing_pyyaml() -> None:
    result = _read_in_a_new_process(
        "name: a\ndescription: The a skill. Use it when testing.\nmetadata:\n  version: 1.0.0\n"
        "  author: Ada Lovelace\n"
    )
    assert result["yaml"] is False
    assert result["fm"] == {
        "name": "a",
        "description": "The a skill. Use it when testing.",
        "metadata": {"version": "1.0.0", "author": "Ada Lovelace"},
    }
