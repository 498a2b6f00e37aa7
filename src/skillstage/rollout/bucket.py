"""Sticky buckets (seed 002 §3.3 gradual rollout, canary segments).

Unleash's gradual-rollout normalisation, so that a team running Unleash can predict who is in:
the bucket of a subject is murmur3 (32-bit, seed 0, unsigned) of `"<group>:<subject>"`, modulo
100, plus 1 (1..100); the subject is in at weight W when its bucket is at most W. The bucket never
changes for a subject, so a subject in at 10% is still in at 50% (monotone). The group is the skill
name unless the rollout names one, so one subject is not in the first 10% of every skill.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import mmh3

NORMALIZER = 100


def bucket(group: str, subject: str) -> int:
    """The subject's bucket in `group`: 1..100, the same on every call and in every Unleash SDK."""
    return int(mmh3.hash(f"{group}:{subject}", 0, False)) % NORMALIZER + 1


def random_bucket() -> int:
    """A bucket for a request that names no subject: drawn anew on every call."""
    # Not a secret, so not SystemRandom (a system call per draw doubled such a resolve); the
    # module's generator, which Python reseeds in a forked child.
    return int(random.random() * NORMALIZER) + 1


def in_segments(segments: Mapping[str, list[str]], context: Mapping[str, object] | None) -> bool:
    """Whether a request's context carries one of the allowed values of every segment key (a
    canary on low-risk streams first: `tier=internal`). No segments: every request."""
    if not segments:
        return True
    if not context:
        return False
    for key, allowed in segments.items():
        value = context.get(key)
        if value is None or str(value) not in allowed:
            return False
    return True
