"""The frontmatter schema: strict types, unknown keys kept, every wrong value reported."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from skillstage.skill.model import Frontmatter, FrontmatterTypeError, SkillVersion


def wrong_types(raw: dict[str, Any]) -> list[tuple[tuple[str | int, ...], Any]]:
    with pytest.raises(FrontmatterTypeError) as caught:
        Frontmatter.from_mapping(raw)
    return [(problem.loc, problem.value) for problem in caught.value.problems]


def test_fields_are_read_by_their_yaml_names() -> None:
    meta = Frontmatter.from_mapping(
        {
            "name": "a",
            "allowed-tools": ["Read", "Bash"],
            "metadata": {"version": "2.0.0"},
            "sla_override": True,
            "sla_override_expires": dt.date(2025, 11, 20),
        }
    )
    assert meta.allowed_tools == ["Read", "Bash"]
    assert meta.effective_version == "2.0.0"
    assert meta.sla_override is True
    assert meta.sla_override_expires == dt.date(2025, 11, 20)
    assert meta.extra == {}


def test_an_expiry_may_be_a_date_string() -> None:
    meta = Frontmatter.from_mapping({"sla_override_expires": "2025-11-20"})
    assert meta.sla_override_expires == dt.date(2025, 11, 20)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"name": 5}, [(("name",), 5)]),
        ({"description": True}, [(("description",), True)]),
        ({"sla_override": "true"}, [(("sla_override",), "true")]),
        ({"sla_override": 1}, [(("sla_override",), 1)]),
        ({"sla_override_expires": "soon"}, [(("sla_override_expires",), "soon")]),
        ({"allowed-tools": 5}, [(("allowed-tools",), 5)]),
        ({"tags": ["a", 1, False]}, [(("tags", 1), 1), (("tags", 2), False)]),
        (
            {"metadata": {"a": ["x"], "b": "ok", 3: "y"}},
            [(("metadata", "a"), ["x"]), (("metadata", "3"), 3)],
        ),
        ({"name": 1, "tags": "x", "foo": 2}, [(("name",), 1), (("tags",), "x")]),
    ],
)
def test_every_value_of_the_wrong_type_is_reported(
    raw: dict[str, Any], expected: list[tuple[tuple[str | int, ...], Any]]
) -> None:
    assert wrong_types(raw) == expected


def test_the_error_lists_the_fields() -> None:
    with pytest.raises(FrontmatterTypeError) as caught:
        Frontmatter.from_mapping({"tags": "x", "name": 1, "version": 1.0})
    assert caught.value.fields == ["name", "tags", "version"]
    assert str(caught.value) == "frontmatter fields of the wrong type: name, tags, version"


def test_unknown_keys_are_kept_and_stored() -> None:
    raw = {
        "name": "a",
        "version": "1.0.0",
        "when_to_use": "x",
        "extra": 1,  # the attribute's name is no special key
        "allowed_tools": "Read",  # not the spec's allowed-tools: kept as written
        "released": dt.date(2025, 1, 1),
        "nested": {dt.date(2025, 1, 2): [None, dt.datetime(2025, 1, 1, 10)], 4: float("nan")},
        "empty": None,
    }
    meta = Frontmatter.from_mapping(raw)
    assert meta.allowed_tools is None
    assert meta.extra == {k: v for k, v in raw.items() if k not in ("name", "version")}
    skill = SkillVersion("a", "1.0.0", "0" * 64, Path("a"), meta, "", ())
    assert skill.frontmatter_dict() == {
        "name": "a",
        "version": "1.0.0",
        "when_to_use": "x",
        "extra": 1,
        "allowed_tools": "Read",
        "released": "2025-01-01",
        "nested": {"2025-01-02": [None, "2025-01-01T10:00:00"], "4": None},
    }


def test_stored_fields_use_yaml_names_and_iso_dates() -> None:
    meta = Frontmatter.from_mapping(
        {"name": "a", "allowed-tools": "Read", "sla_override_expires": "2025-11-20", "tags": []}
    )
    skill = SkillVersion("a", "1.0.0", "0" * 64, Path("a"), meta, "", ())
    assert skill.frontmatter_dict() == {
        "name": "a",
        "allowed-tools": "Read",
        "tags": [],
        "sla_override_expires": "2025-11-20",
    }


def test_frontmatter_is_frozen_and_compares_by_value() -> None:
    meta = Frontmatter.from_mapping({"name": "a", "foo": 1})
    assert meta == Frontmatter(name="a", extra={"foo": 1})
    assert meta != Frontmatter(name="a")
    with pytest.raises(AttributeError):
        meta.name = "b"  # type: ignore[misc]
