"""The server's API tokens: who holds each (its name, the actor its requests record), its role,
and the salted digest of its secret (never the secret itself).

A token is found by its public id (`token_id`, unique and indexed): authentication reads one row.
One token per name is live at a time (a partial unique index, so two admins creating the same name
at once make one token); revoking keeps the row, with who revoked it and when. Every creation and
revocation is also appended to `token_event`, with its actor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from skillstage.store.store import Transaction

CREATE = "create"
REVOKE = "revoke"


@dataclass(frozen=True)
class TokenInfo:
    """A token as `token list` shows it: everything but its secret and digest."""

    name: str
    role: str
    token_id: str  # the public part of the token (`sks_<token_id>_…`)
    created_at: dt.datetime
    created_by: str
    revoked_at: dt.datetime | None
    revoked_by: str | None
    last_used_at: dt.datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_dict(self) -> dict[str, Any]:
        def stamp(at: dt.datetime | None) -> str | None:
            return at.isoformat() if at is not None else None

        return {
            "name": self.name,
            "role": self.role,
            "token_id": self.token_id,
            "created_at": stamp(self.created_at),
            "created_by": self.created_by,
            "revoked_at": stamp(self.revoked_at),
            "revoked_by": self.revoked_by,
            "last_used_at": stamp(self.last_used_at),
        }


@dataclass(frozen=True)
class Credential:
    """What authentication compares a presented secret with."""

    id: int
    name: str
    role: str
    salt: str
    digest: str
    revoked: bool
    last_used_at: dt.datetime | None


@dataclass(frozen=True)
class TokenEvent:
    """One creation or revocation of a token, by `actor`."""

    kind: str  # create | revoke
    name: str
    role: str
    token_id: str
    actor: str
    at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "role": self.role,
            "token_id": self.token_id,
            "actor": self.actor,
            "at": self.at.isoformat(),
        }


_INFO_COLUMNS = "name, role, token_id, created_at, created_by, revoked_at, revoked_by, last_used_at"


def _info(tx: Transaction, row: Sequence[Any]) -> TokenInfo:
    d = tx.dialect
    return TokenInfo(
        name=row[0],
        role=row[1],
        token_id=row[2],
        created_at=d.read_time(row[3]),  # type: ignore[arg-type]
        created_by=row[4],
        revoked_at=d.read_time(row[5]),
        revoked_by=row[6],
        last_used_at=d.read_time(row[7]),
    )


def _append(tx: Transaction, row_id: int, kind: str, actor: str, at: dt.datetime) -> None:
    tx.execute(
        "INSERT INTO token_event (token_id, kind, actor, at) VALUES (:id, :kind, :actor, :at)",
        {"id": row_id, "kind": kind, "actor": actor, "at": tx.dialect.time(at)},
    )


def insert_token(
    tx: Transaction,
    *,
    token_id: str,
    name: str,
    role: str,
    salt: str,
    digest: str,
    actor: str,
    at: dt.datetime,
) -> TokenInfo | None:
    """Add a live token and its creation event; None when `name` already has a live token."""
    row_id = tx.insert_returning_id(
        "INSERT INTO token (token_id, name, role, salt, digest, created_at, created_by)"
        " VALUES (:token_id, :name, :role, :salt, :digest, :at, :actor)"
        " ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING",
        {
            "token_id": token_id,
            "name": name,
            "role": role,
            "salt": salt,
            "digest": digest,
            "at": tx.dialect.time(at),
            "actor": actor,
        },
    )
    if row_id is None:
        return None
    _append(tx, row_id, CREATE, actor, at)
    row = tx.one(f"SELECT {_INFO_COLUMNS} FROM token WHERE id = :id", {"id": row_id})
    assert row is not None
    return _info(tx, row)


def live_token(tx: Transaction, name: str) -> TokenInfo | None:
    """The live (not revoked) token named `name`, or None."""
    row = tx.one(
        f"SELECT {_INFO_COLUMNS} FROM token WHERE name = :name AND revoked_at IS NULL",
        {"name": name},
    )
    return _info(tx, row) if row is not None else None


def last_revoked(tx: Transaction, name: str) -> TokenInfo | None:
    """The token named `name` revoked last, or None when no token ever had the name."""
    rows = tx.query(
        f"SELECT {_INFO_COLUMNS} FROM token WHERE name = :name AND revoked_at IS NOT NULL"
        " ORDER BY revoked_at DESC, id DESC LIMIT 1",
        {"name": name},
    )
    return _info(tx, rows[0]) if rows else None


def tokens(tx: Transaction, *, revoked: bool = False) -> list[TokenInfo]:
    """The live tokens by name (with `revoked`, the revoked ones too, after them)."""
    sql = f"SELECT {_INFO_COLUMNS} FROM token"
    if not revoked:
        sql += " WHERE revoked_at IS NULL"
    sql += " ORDER BY CASE WHEN revoked_at IS NULL THEN 0 ELSE 1 END, name, id"
    return [_info(tx, row) for row in tx.query(sql)]


def revoke_token(tx: Transaction, name: str, *, actor: str, at: dt.datetime) -> TokenInfo | None:
    """Revoke the live token named `name` and record it; None when there is none."""
    row_id = tx.scalar(
        f"SELECT id FROM token WHERE name = :name AND revoked_at IS NULL{tx.dialect.for_update}",
        {"name": name},
    )
    if row_id is None:
        return None
    changed = tx.execute(
        "UPDATE token SET revoked_at = :at, revoked_by = :actor"
        " WHERE id = :id AND revoked_at IS NULL",
        {"at": tx.dialect.time(at), "actor": actor, "id": row_id},
    )
    if changed != 1:
        return None
    _append(tx, row_id, REVOKE, actor, at)
    row = tx.one(f"SELECT {_INFO_COLUMNS} FROM token WHERE id = :id", {"id": row_id})
    assert row is not None
    return _info(tx, row)


def credential(tx: Transaction, token_id: str) -> Credential | None:
    """The token whose public id is `token_id` (live or revoked), or None."""
    row = tx.one(
        "SELECT id, name, role, salt, digest, revoked_at, last_used_at FROM token"
        " WHERE token_id = :token_id",
        {"token_id": token_id},
    )
    if row is None:
        return None
    return Credential(
        id=row[0],
        name=row[1],
        role=row[2],
        salt=row[3],
        digest=row[4],
        revoked=row[5] is not None,
        last_used_at=tx.dialect.read_time(row[6]),
    )


def touch(tx: Transaction, row_id: int, at: dt.datetime) -> None:
    """Note that the token with row id `row_id` was used at `at`."""
    tx.execute(
        "UPDATE token SET last_used_at = :at WHERE id = :id",
        {"at": tx.dialect.time(at), "id": row_id},
    )


def token_events(tx: Transaction, *, limit: int = 1000) -> list[TokenEvent]:
    """Creations and revocations of tokens, newest first."""
    d = tx.dialect
    return [
        TokenEvent(
            kind=row[0],
            name=row[1],
            role=row[2],
            token_id=row[3],
            actor=row[4],
            at=d.read_time(row[5]),  # type: ignore[arg-type]
        )
        for row in tx.query(
            "SELECT e.kind, t.name, t.role, t.token_id, e.actor, e.at FROM token_event e"
            " JOIN token t ON t.id = e.token_id ORDER BY e.at DESC, e.id DESC LIMIT :limit",
            {"limit": limit},
        )
    ]
