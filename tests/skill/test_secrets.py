"""Secret shapes: found where real credentials look like this, not in ordinary words."""

from __future__ import annotations

import pytest

from skillstage.skill.secrets import find_secrets

A = b"a" * 40


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b"AKIA1234567890ABCDEF", True),
        (b"id=ASIA1234567890ABCDEF\n", True),
        (b"xAKIA1234567890ABCDEF", False),  # inside a longer word
        (b"AKIAIOSFODNN7EXAMPLE", False),  # AWS's documented example key
        (b"key=sk_live_" + A[:24], True),
        (b"rk_live_" + A[:24], True),
        (b"mask_live_" + A[:24], False),
        (b"ghp_" + A[:36], True),
        (b"xghp_" + A[:36], False),
        (b"github_pat_" + A + b"_" + A, True),
        (b"-----BEGIN OPENSSH PRIVATE KEY-----", True),
        (b"-----BEGIN PRIVATE KEY-----", True),
        (b"-----BEGIN PUBLIC KEY-----", False),
        (b"xoxb-123456789012", True),
        (b"sk-ant-" + A[:30], True),
        (b"sk-proj-" + A, True),
        (b"risk-ant-" + A[:30], False),
        (b"AIza" + b"b" * 35, True),
        (b"the quick brown fox; sk- and gh_ and AKIA alone", False),
    ],
)
def test_secret_shapes(data: bytes, found: bool) -> None:
    assert bool(find_secrets(data)) is found


def test_line_numbers_and_preview_do_not_leak_the_secret() -> None:
    secret = b"ghp_" + b"Z" * 36
    (hit,) = find_secrets(b"one\ntwo\ntoken: " + secret + b"\n")
    assert hit.line == 3
    assert hit.preview == "ghp_ZZZZ…"
