"""Private-key blocks and cloud-key-shaped secrets in a skill's files.

Each pattern is a shape that real credentials have and ordinary prose does not. Vendor-documented
example keys (AWS's `...EXAMPLE` keys) are not secrets.

Every file of every skill is scanned, so speed matters: each pattern starts with a literal, which
lets the regex engine skip through the bytes with a fast substring search (about one pass per
pattern, like `in`). A leading `\\b` would defeat that, so word boundaries are checked on the match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERNS: list[tuple[str, str, re.Pattern[bytes]]] = [
    (
        "PRIVATE_KEY",
        "a private key block",
        re.compile(
            rb"-----BEGIN (?:(?:RSA|DSA|EC|OPENSSH|PGP|ENCRYPTED) )?PRIVATE KEY(?: BLOCK)?-----"
        ),
    ),
    (
        "CLOUD_KEY",
        "an AWS access key id or Google API key",
        re.compile(rb"A(?:[KS]IA[0-9A-Z]{16}|Iza[0-9A-Za-z_\-]{35})(?![0-9A-Za-z])"),
    ),
    (
        "CLOUD_KEY",
        "a GitHub token",
        re.compile(rb"g(?:h[pousr]_[A-Za-z0-9]{36,}|ithub_pat_[A-Za-z0-9_]{60,})"),
    ),
    ("CLOUD_KEY", "a Slack token", re.compile(rb"xox[abprs]-[A-Za-z0-9-]{10,}")),
    # sk_live_/rk_live_ (Stripe) and sk-ant-/sk-proj- (Anthropic, OpenAI) share their second
    # letter: one pass from "k", the letter before it checked on the match.
    (
        "CLOUD_KEY",
        "a Stripe, Anthropic or OpenAI API key",
        re.compile(rb"k(?:_live_[0-9A-Za-z]{20,}|-(?:ant|proj)-[\w\-]{20,})"),
    ),
]
_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass(frozen=True, slots=True)
class SecretHit:
    code: str
    kind: str
    line: int
    preview: str  # the first characters only: a report must not leak the secret it found


def _starts_a_word(data: bytes, start: int, text: bytes) -> bool:
    if text.startswith(b"-----"):
        return True
    if text.startswith(b"k"):  # the key starts one letter earlier: sk_live_, rk_live_, sk-ant-
        allowed = b"rs" if text.startswith(b"k_live_") else b"s"
        return (
            start > 0 and data[start - 1] in allowed and (start < 2 or data[start - 2] not in _WORD)
        )
    return start == 0 or data[start - 1] not in _WORD


def find_secrets(data: bytes) -> list[SecretHit]:
    """Secrets in one file's bytes, with 1-based line numbers."""
    hits = []
    for code, kind, pattern in _PATTERNS:
        for match in pattern.finditer(data):
            text = match.group(0)
            if b"EXAMPLE" in text or not _starts_a_word(data, match.start(), text):
                continue
            line = data.count(b"\n", 0, match.start()) + 1
            shown = data[match.start() - 1 : match.start()] + text if text[:1] == b"k" else text
            hits.append(SecretHit(code, kind, line, shown[:8].decode("ascii", "replace") + "…"))
    return hits
