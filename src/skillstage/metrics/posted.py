"""Execution records posted to the server (`POST /v1/executions`), for agent hosts that share no
disk with the store.

The same path as the inbox's, without a file: each record is decoded by the same schema, checked
by the same rules (a record dated in the future, without a skill, with a NUL…), and stored by the
same insert, in which an execution id already stored is never a second row. So a client that
sends a batch again (its first attempt timed out after the server had stored it) adds nothing.
Records that cannot be kept go to the quarantine, as inbox lines do, under the name of where they
came from (`http:<client>`), numbered by their place in the request; the others are stored.

A request is one transaction: its records are all stored, or (the store failed) none are.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import msgspec

from skillstage.errors import UsageError

# The inbox reader's own pieces, so that a posted record becomes the row an inbox line would.
from skillstage.metrics.ingest import _DECODER, _Rows, _Skills, _StoreLookups
from skillstage.metrics.record import MAX_CLOCK_SKEW, nul_problem
from skillstage.store import Store
from skillstage.store import executions as store_executions

MAX_BODY_BYTES = 32 << 20  # a request's body: ~100,000 records of a few hundred bytes
MAX_RECORDS = 100_000
SHOWN_PROBLEMS = 20  # the answer names the first problems; the quarantine keeps all of them

_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])


@dataclass
class PostedResult:
    """What one request stored: `received` records, of which `inserted` were new, `duplicates`
    already stored (or repeated within the request), `quarantined` refused."""

    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # (record number, why)

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "problems": [{"record": number, "reason": why} for number, why in self.problems],
        }


def split_records(body: bytes) -> list[bytes]:
    """The records of a request body: one JSON object, a JSON array of them, or NDJSON (one
    object per line; blank lines skipped). A `UsageError` when it is none of those."""
    if len(body) > MAX_BODY_BYTES:
        raise UsageError(
            f"the request holds {len(body)} bytes, over the {MAX_BODY_BYTES} taken at once",
            hint="send the records in smaller batches",
        )
    text = body.strip()
    if not text:
        raise UsageError(
            "the request holds no records",
            hint="send one JSON object, a JSON array of them, or one object per line (NDJSON)",
        )
    if text[:1] == b"[":
        try:
            records = [bytes(element) for element in _ARRAY.decode(text)]
        except msgspec.DecodeError as exc:
            raise UsageError(
                f"the request is not a valid JSON array: {exc}",
                hint="send one JSON object, a JSON array of them, or one object per line",
            ) from exc
    else:
        records = [line for line in text.split(b"\n") if line.strip()]
    if len(records) > MAX_RECORDS:
        raise UsageError(
            f"the request holds {len(records)} records, over the {MAX_RECORDS} taken at once",
            hint="send the records in smaller batches",
        )
    return records


def store_posted(
    store: Store,
    records: list[bytes],
    *,
    source: str,
    now: dt.datetime | None = None,
    max_clock_skew: dt.timedelta = MAX_CLOCK_SKEW,
) -> PostedResult:
    """Store the records of one request (see the module docstring); `source` names the sender
    in the quarantine."""
    now = now or dt.datetime.now(dt.UTC)
    rows = _Rows(
        _StoreLookups(store), now, now + max_clock_skew, postgres=store.dialect == "postgresql"
    )
    result = PostedResult(received=len(records))
    made: list[tuple[Any, ...]] = []
    bad: list[tuple[str, int, str, str]] = []
    for number, text in enumerate(records, 1):
        try:
            record = _DECODER.decode(text)
            row: tuple[Any, ...] | str = (b"\\u0000" in text and nul_problem(record)) or rows.row(
                record, ""
            )
        except msgspec.ValidationError as exc:
            row = f"not a valid record: {exc}"
        except msgspec.DecodeError as exc:
            row = f"not valid JSON: {exc}"
        if isinstance(row, str):
            bad.append((source, number, row, text.decode("utf-8", "replace")))
            if len(result.problems) < SHOWN_PROBLEMS:
                result.problems.append((number, row))
        else:
            made.append(row)
    skills = _Skills(now, rows.registered.__setitem__)
    skills.names.update(rows.new_skills)
    with store.atomic() as tx:
        if made:
            prepared = store_executions.prepare_executions(
                made, store_executions.statement_rows(tx)
            )
            prepared.set_skill_ids(lambda provisional: skills.real(tx, provisional))
            result.inserted = store_executions.insert_prepared(tx, prepared, set())
        if bad:
            store_executions.quarantine(tx, bad, now)
    result.quarantined = len(bad)
    result.duplicates = len(made) - result.inserted
    return result
