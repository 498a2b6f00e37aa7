"""The version check agrees with the semver package (which skillstage no longer imports at run
time: it costs every command start-up)."""

from __future__ import annotations

import pytest
import semver
from hypothesis import given
from hypothesis import strategies as st

from skillstage.skill.model import is_semantic_version

CASES = [
    "1.0.0",
    "0.0.0",
    "10.20.30",
    "1.1.2-prerelease+meta",
    "1.1.2+meta",
    "1.0.0-alpha",
    "1.0.0-alpha.beta",
    "1.0.0-alpha.1",
    "1.0.0-alpha0.valid",
    "1.0.0-rc.1+build.1",
    "1.2.3-beta",
    "10.2.3-DEV-SNAPSHOT",
    "1.2.3-SNAPSHOT-123",
    "2.0.0+build.1848",
    "1.0.0-0A.is.legal",
    "99999999999999999999999.999999999999999999.99999999999999999",
    "1",
    "1.2",
    "1.2.3-0123",
    "1.2.3-0123.0123",
    "1.1.2+.123",
    "+invalid",
    "-invalid",
    "alpha",
    "1.0.0-alpha_beta",
    "1.0.0-alpha..",
    "01.1.1",
    "1.01.1",
    "1.1.01",
    "1.2.3.DEV",
    "1.2-SNAPSHOT",
    "1.2.3-",
    "1.2.3+",
    "v1.2.3",
    " 1.2.3",
    "1.2.3\n",
    "1.2.3 ",
    "１.2.3",  # a full-width digit: \d would take it without re.ASCII
    "1." + "9" * 300 + ".0",
    "",
]


@pytest.mark.parametrize("text", CASES)
def test_agrees_with_the_semver_package(text: str) -> None:
    assert is_semantic_version(text) == semver.Version.is_valid(text)


def test_the_usual_versions_are_accepted_and_the_usual_mistakes_refused() -> None:
    assert is_semantic_version("2.1.0") and is_semantic_version("1.0.0-rc.1+build.5")
    assert not is_semantic_version("2.1") and not is_semantic_version("v2.1.0")


@given(
    st.from_regex(
        r"\A[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(-[0-9A-Za-z.-]{1,8})?(\+[0-9A-Za-z.-]{1,8})?\Z"
    )
    | st.text(alphabet="0123456789.-+abAZ", max_size=16)
)
def test_agrees_on_generated_versions(text: str) -> None:
    assert is_semantic_version(text) == semver.Version.is_valid(text)
