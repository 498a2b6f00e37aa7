"""Execution records (seed 002 §5.2, §5.4) and the append-only inbox they are written to.

A record says how one run of one skill version went. Writers append it as one JSON line to
`<inbox>/<skill>_executions.jsonl` with a single `write(2)` on a file opened with O_APPEND, so
concurrent writers never interleave and a crash leaves at most one incomplete last line, which
ingestion leaves alone until it is complete.

The schema is a msgspec Struct, validated at the boundary (the writer and ingestion): msgspec
decodes and checks a line in ~0.7 µs where a pydantic model takes ~4 µs, and ingestion's target
is 300,000 records a second.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from skillstage.errors import SkillstageError, UsageError

# Upper bounds keep every value finite and storable (an unbounded count overflowed SQLite's
# 64-bit integers; an infinite time was written as null, and summed overflowed).
MAX_EXECUTION_TIME_MS = 366 * 86_400_000.0  # a year
MAX_PATTERNS = 1_000_000
# How far after "now" a record's timestamp may be by default (writers' clocks drift a little;
# `metrics.max_clock_skew_minutes`): a record from the future would sort after every real one
# ("the last 100 executions") until its time came.
MAX_CLOCK_SKEW = dt.timedelta(minutes=10)

_Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
_Milliseconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_EXECUTION_TIME_MS)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_PATTERNS)]
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_Digest = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
_Version = Annotated[str, msgspec.Meta(max_length=128)]  # the store's column holds 128

# The inbox file kinds: ours, and seed 002's three per-skill files (§5.2), read the same way.
RECORD_KINDS = ("executions", "fidelity", "outcomes", "performance")
# `<skill>_<kind>.jsonl` or `.json`, with an optional rotation suffix (`.1`, `.2026-12-01`, or
# logrotate's `-20261202`); compressed rotations are not read.
INBOX_FILE = re.compile(
    r"(?P<skill>.+?)_(?P<kind>executions|fidelity|outcomes|performance)\.(?P<format>jsonl?)"
    r"(?P<rotation>[.-]\d[\w.-]*)?(?<!\.gz)(?<!\.xz)(?<!\.bz2)(?<!\.zst)\Z"
)


# The `source` tag of the executions `skillstage eval` records: benchmark runs, which are the
# baseline of a version in the first stage and never evidence of how it behaves in use.
BENCHMARK_SOURCE = "eval"


def skill_from_file_name(name: str) -> str:
    """The skill an inbox file's name stands for. Seed 002 writes names with underscores
    (`youtube_spam_detection_fidelity.json`); skill names use hyphens."""
    return name.replace("_", "-")


SKILL_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*\Z")


class ExecutionRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """One execution of a skill version.

    `patterns_followed`/`patterns_missed` are counts or lists of pattern ids (seed 002's scorer
    writes lists; its SQL stores counts). `skill` may be left out in a per-skill inbox file: the
    file name says it. Unknown keys are ignored, so writers may add their own.
    """

    execution_id: _Id
    timestamp: dt.datetime
    skill: str | None = None
    version: _Version | None = None
    digest: _Digest | None = None
    pattern_fidelity: _Fraction | None = None
    outcome_quality: _Fraction | None = None
    execution_time_ms: _Milliseconds | None = None
    patterns_followed: _Count | list[str] | None = None
    patterns_missed: _Count | list[str] | None = None
    exception: bool = False
    false_positive: bool = False
    false_negative: bool = False
    critical: bool = False
    subject: str | None = None  # a user or session key, for bucketing and per-subject analysis
    tags: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            field: value
            for field in self.__struct_fields__
            if (value := getattr(self, field)) is not None
        }


_ENCODER = msgspec.json.Encoder()


def _validated(fields: Mapping[str, Any], latest: dt.datetime) -> ExecutionRecord:
    unknown = sorted(set(fields) - set(ExecutionRecord.__struct_fields__))
    if unknown:
        raise UsageError(
            f"not a valid execution record: unknown field(s) {', '.join(unknown)}",
            hint="fields: " + ", ".join(ExecutionRecord.__struct_fields__),
        )
    try:
        record = msgspec.convert(dict(fields), ExecutionRecord, strict=False)
        _ENCODER.encode(record)  # only what JSON can hold: tags, text that is UTF-8
    except UnicodeEncodeError:
        raise UsageError(
            "not a valid execution record: text that is not valid UTF-8 (a lone surrogate)"
        ) from None
    except (msgspec.ValidationError, msgspec.EncodeError, TypeError) as exc:
        message = str(exc)
        if message.endswith("`$.digest`"):
            message = (
                "digest must be the 64 lowercase hex digits of a sha256 content digest (as "
                "`skillstage list --json` shows); leave it out to take the version's"
            )
        raise UsageError(f"not a valid execution record: {message}") from None
    problem = record_problem(record, latest=latest)
    if problem:
        raise UsageError(f"not a valid execution record: {problem}")
    return record


def record_problem(
    record: ExecutionRecord, skill_from_file: str | None = None, *, latest: dt.datetime
) -> str | None:
    """What is wrong with a decoded record beyond its types, or None. `latest`: the latest
    timestamp taken (now plus the clock skew allowed)."""
    nul = nul_problem(record)
    if nul:
        return nul
    skill = record.skill or skill_from_file
    if not skill:
        return "no skill: give `skill` (or write to <skill>_executions.jsonl)"
    if not SKILL_NAME.match(skill) or len(skill) > 64:
        return f"skill {skill!r} is not a skill name (1-64 of a-z, 0-9 and single hyphens)"
    if record.timestamp.tzinfo is None or record.timestamp.utcoffset() is None:
        return "timestamp has no time zone: write it in UTC with a Z (2026-12-01T10:00:00Z)"
    if record.timestamp < EARLIEST:
        return past_problem(record.timestamp)
    return future_problem(record.timestamp, latest) if record.timestamp > latest else None


def nul_problem(record: ExecutionRecord) -> str | None:
    """Why a record holding a NUL character (`\\u0000` in its JSON) cannot be kept, or None:
    PostgreSQL's text cannot hold one, and on SQLite it would cut the text short for readers."""
    found = [
        name
        for name in ("execution_id", "skill", "version", "subject")
        if "\x00" in (getattr(record, name) or "")
    ]
    if record.tags is not None and "\\u0000" in _ENCODER.encode(record.tags).decode():
        found.append("tags")
    if not found:
        return None
    return f"{', '.join(found)} holds a NUL character (\\u0000), which the store cannot keep"


# No execution of a skill happened before this; a record dated earlier has a broken clock (year 1
# with a positive offset is not even a UTC time Python can hold).
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def past_problem(stamp: dt.datetime) -> str:
    """Why `stamp`, before EARLIEST, cannot be taken."""
    return f"timestamp {stamp.isoformat()} is before 1970: check the writer's clock"


def future_problem(stamp: dt.datetime, latest: dt.datetime) -> str:
    """Why `stamp`, after `latest`, cannot be taken."""
    limit = latest.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"timestamp {stamp.isoformat()} is in the future (after {limit} UTC: now plus "
        "metrics.max_clock_skew_minutes): check the writer's clock"
    )


def inbox_file(inbox: Path, skill: str) -> Path:
    """The inbox file records of `skill` are appended to."""
    return inbox / f"{skill}_executions.jsonl"


def append_records(inbox: Path, records: list[ExecutionRecord], *, durable: bool = False) -> None:
    """Append records to their skills' inbox files: each file gets its lines in one write."""
    by_file: dict[Path, bytearray] = {}
    for record in records:
        assert record.skill is not None
        buffer = by_file.setdefault(inbox_file(inbox, record.skill), bytearray())
        buffer += _ENCODER.encode(record.to_dict()) + b"\n"
    inbox.mkdir(parents=True, exist_ok=True)
    for path, data in by_file.items():
        descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                # A writer that died mid-line left it incomplete: end it, so that the bad line
                # is quarantined alone instead of swallowing these records.
                data = bytearray(b"\n") + data
            written = os.write(descriptor, data)
            if written != len(data):
                # Only a full disk does this to a regular file; the short line stays incomplete
                # (ingestion quarantines it once more data follows) and the caller hears of it.
                raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
            if durable:
                os.fsync(descriptor)
        finally:
            os.close(descriptor)


def new_execution_id() -> str:
    """A fresh execution id: a UUID whose first 48 bits are the time in milliseconds (the layout
    of UUIDv7), so ids written close in time sit close in the store's index and ingestion
    inserts them near the end of it instead of all over it."""
    stamp = time.time_ns() // 1_000_000
    value = (stamp << 80) | (0x7 << 76) | (secrets.randbits(12) << 64)
    value |= (0b10 << 62) | secrets.randbits(62)
    return str(uuid.UUID(int=value))


def record_execution(
    inbox: Path | str,
    *,
    skill: str,
    execution_id: str | None = None,
    timestamp: dt.datetime | str | None = None,
    durable: bool = False,
    max_clock_skew: dt.timedelta = MAX_CLOCK_SKEW,
    **fields: Any,
) -> ExecutionRecord:
    """Validate one execution record and append it to the skill's inbox file; returns it.

    `timestamp`: an aware datetime or ISO 8601 text with a zone (default: now). `fields` are
    the record's other fields (version, digest, pattern_fidelity, outcome_quality,
    execution_time_ms, patterns_followed, patterns_missed, exception, false_positive,
    false_negative, critical, subject, tags). `durable` fsyncs the file before returning.
    Raises `UsageError` for a record that is not valid (or dated more than `max_clock_skew`
    after now).
    """
    now = dt.datetime.now(dt.UTC)
    stamp = timestamp if timestamp is not None else now
    record = _validated(
        {
            "execution_id": new_execution_id() if execution_id is None else execution_id,
            "timestamp": stamp.isoformat() if isinstance(stamp, dt.datetime) else stamp,
            "skill": skill,
            **fields,
        },
        now + max_clock_skew,
    )
    inbox = Path(inbox)
    if inbox.exists() and not inbox.is_dir():
        raise UsageError(f"the metrics inbox {inbox} is not a directory")
    try:
        append_records(inbox, [record], durable=durable)
    except OSError as exc:  # a full disk, a permission: the record is not kept, and says why
        raise SkillstageError(
            f"cannot append to the metrics inbox: {exc.strerror or exc}",
            path=exc.filename or inbox,
            hint="free some space or make the inbox writable, then record again",
        ) from None
    return record
