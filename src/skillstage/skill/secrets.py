"""Private-key blocks and cloud-key-shaped secrets in a skill's files.

Each pattern is a shape that real credentials have and ordinary prose does not. Vendor-documented
example keys (AWS's `...EXAMPLE` keys) are not secrets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERNS: list[tuple[str, str, re.Pattern[bytes]]] = [
    (
        "PRIVATE_KEY",
        "a private key block",
        re.compile(rb"-----BEGIN (?:(?:RSA|DSA|EC|OPENSSH|PGP|ENCRYPTED) )?PRIVATE KEY(?: BLOCK)?-----"),
    ),
    ("CLOUD_KEY", "an AWS access key id", re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("CLOUD_KEY", "a GitHub token", re.compile(rb"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("CLOUD_KEY", "a GitHub token", re.compile(rb"\bgithub_pat_[A-Za-z0-9_]{60,}")),
    ("CLOUD_KEY", "a Slack token", re.compile(rb"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("CLOUD_KEY", "a Google API key", re.compile(rb"\bAIza[0-9A-Za-z_\-]{35}\b")),
    ("CLOUD_KEY", "a Stripe live key", re.compile(rb"\b[rs]k_live_[0-9A-Za-z]{20,}")),
    ("CLOUD_KEY", "an Anthropic API key", re.compile(rb"\bsk-ant-[A-Za-z0-9_\-]{20,}")),
    ("CLOUD_KEY", "an OpenAI API key", re.compile(rb"\bsk-proj-[A-Za-z0-9_\-]{40,}")),
]
# One combined scan first: almost every file has no match, and one pass is far cheaper than nine.
_ANY = re.compile(b"|".join(b"(?:" + pattern.pattern + b")" for _, _, pattern in _PATTERNS))


@dataclass(frozen=True, slots=True)
class SecretHit:
    code: str
    kind: str
    line: int
    preview: str  # the first characters only: a report must not leak the secret it found


def find_secrets(data: bytes) -> list[SecretHit]:
    """Secrets in one file's bytes, with 1-based line numbers."""
    if _ANY.search(data) is None:
        return []
    hits = []
    for code, kind, pattern in _PATTERNS:
        for match in pattern.finditer(data):
            text = match.group(0)
            if b"EXAMPLE" in text:
                continue
            line = data.count(b"\n", 0, match.start()) + 1
            preview = text[:8].decode("ascii", "replace") + "…"
            hits.append(SecretHit(code, kind, line, preview))
    return hits
