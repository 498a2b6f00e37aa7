"""API tokens and the roles they carry: who may do what through `skillstage serve`.

A role grants permissions; a server route asks for one permission (`read`, `record`, `operate`,
`approve`, `admin`) and a token whose role grants it gets through. The token's name is the actor
every write records, so the four-eyes rule of sign-offs holds across people holding tokens.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from skillstage.arguments import checked
from skillstage.errors import StoreError, UsageError
from skillstage.store.tokens import TokenInfo as TokenInfo  # (re-exported)

if TYPE_CHECKING:
    from skillstage.config import Project
    from skillstage.store import Store

log = logging.getLogger("skillstage.tokens")

READ = "read"  # every GET of the API and the dashboard
RECORD = "record"  # post executions, resolve which version serves
OPERATE = "operate"  # promote, roll back, rollouts, holds, kill switch
APPROVE = "approve"  # record a sign-off
ADMIN = "admin"  # manage tokens

PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({READ}),
    "recorder": frozenset({RECORD}),
    "operator": frozenset({READ, RECORD, OPERATE}),
    "approver": frozenset({READ, APPROVE}),
    "admin": frozenset({READ, RECORD, OPERATE, APPROVE, ADMIN}),
}
ROLES = tuple(PERMISSIONS)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: a token's name and role."""

    name: str
    role: str

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


def roles_granting(permission: str) -> list[str]:
    """The roles that grant `permission`, for a 403's message."""
    return [role for role, granted in PERMISSIONS.items() if permission in granted]


# What each permission lets a token do, in the words messages use ("may not …").
PERMISSION_WORDS: dict[str, str] = {
    READ: "read",
    RECORD: "record executions or resolve versions",
    OPERATE: "promote, roll back, run rollouts or hold skills",
    APPROVE: "sign off",
    ADMIN: "manage tokens",
}

# What each role may do, for help and messages.
ROLE_WORDS: dict[str, str] = {
    "viewer": "reads",
    "recorder": "posts executions and resolves versions, nothing else",
    "operator": "promotes, rolls back, runs rollouts and holds skills, reads and records",
    "approver": "signs off and reads",
    "admin": "all of that, and manages tokens",
}

# -- the token itself ------------------------------------------------------------------------------
#
# `sks_<token_id>_<secret>`: the token id (16 hex digits, public: `token list` shows it) finds the
# row; the secret is 32 random bytes (`secrets.token_urlsafe`, 43 characters). The store keeps
# sha256(salt || secret) with a random salt per token, not argon2id: a slow hash protects secrets
# people choose, which can be guessed; 256 random bits cannot be, by any hash, and argon2id would
# cost every request tens of milliseconds (and a dependency) for nothing.
PREFIX = "sks"
_TOKEN = re.compile(r"sks_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
MAX_NAME_LENGTH = 64

# `last_used_at` is written at most once a minute per token: a write on every request would make
# every read a write (and queue on SQLite's one write lock).
LAST_USED_EVERY = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class CreatedToken:
    """A new token: `token` is the whole string to send (`Authorization: Bearer <token>`), here
    this once; the store keeps only its digest."""

    info: TokenInfo
    token: str = field(repr=False)

    def to_dict(self) -> dict[str, object]:
        return {**self.info.to_dict(), "token": self.token}


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode("ascii")).hexdigest()


def _parse(token: object) -> tuple[str, str] | None:
    """(token id, secret) of a well-formed token, else None."""
    if not isinstance(token, str) or len(token) > 100:
        return None
    found = _TOKEN.fullmatch(token.strip())
    return (found[1], found[2]) if found is not None else None


def _database_url(project: Project, function: str) -> str:
    from skillstage.config import Project

    if not isinstance(project, Project):
        raise UsageError(
            f"{function}(): project must be a Project, not {type(project).__name__}",
            hint="load one with skillstage.config.load_project()",
        )
    return project.database_url


def _check_name(name: str) -> None:
    if _NAME.fullmatch(name) is None:
        shown = name if len(name) <= 70 else name[:67] + "..."
        raise UsageError(
            f"{shown!r} is not a token name: 1-{MAX_NAME_LENGTH} letters, digits and . _ @ + -,"
            " starting with a letter or digit",
            hint="name who holds it; its requests record the name as who acted, "
            "e.g. --name alice or --name ci-deploy",
        )


def _check_role(role: str) -> None:
    if role not in PERMISSIONS:
        raise UsageError(
            f"unknown role {role!r}",
            hint="the roles: " + "; ".join(f"{r} ({ROLE_WORDS[r]})" for r in ROLES),
        )


# -- managing tokens -------------------------------------------------------------------------------


@checked
def create_token(
    project: Project, *, name: str, role: str, actor: str | None = None
) -> CreatedToken:
    """Make a token for `name` with `role`; its secret is in the result and nowhere else.

    Refused (`UsageError`) for an unknown role, a malformed name, or a name that has a live token
    already. The creation is recorded with `actor` (default: the login name)."""
    from skillstage.api import default_actor
    from skillstage.store import Store
    from skillstage.store import tokens as store_tokens

    url = _database_url(project, "create_token")
    _check_role(role)
    _check_name(name)
    who = default_actor(actor)
    token_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_hex(16)
    with Store.open(url) as store, store.atomic() as tx:
        made = store_tokens.insert_token(
            tx,
            token_id=token_id,
            name=name,
            role=role,
            salt=salt,
            digest=_digest(salt, secret),
            actor=who,
            at=dt.datetime.now(dt.UTC),
        )
        if made is None:
            live = store_tokens.live_token(tx, name)
    if made is None:
        role_now = f" (role {live.role})" if live is not None else ""
        raise UsageError(
            f"a token named {name!r}{role_now} exists already",
            hint=f"choose another name, or revoke it first: skillstage token revoke {name}",
        )
    return CreatedToken(made, f"{PREFIX}_{token_id}_{secret}")


@checked
def list_tokens(project: Project, *, revoked: bool = False) -> list[TokenInfo]:
    """The live tokens by name; with `revoked`, the revoked ones too (after them)."""
    from skillstage.store import Store
    from skillstage.store import tokens as store_tokens

    with Store.open(_database_url(project, "list_tokens")) as store, store.reading() as tx:
        return store_tokens.tokens(tx, revoked=revoked)


@checked
def revoke_token(project: Project, name: str, *, actor: str | None = None) -> TokenInfo:
    """Revoke the live token named `name`: every request with it is refused from now on in this
    process, and within `BELIEVED_SECONDS` by every other server on the store. Recorded with
    `actor`."""
    from skillstage.api import default_actor
    from skillstage.store import Store
    from skillstage.store import tokens as store_tokens

    url = _database_url(project, "revoke_token")
    who = default_actor(actor)
    with Store.open(url) as store, store.atomic() as tx:
        revoked = store_tokens.revoke_token(tx, name, actor=who, at=dt.datetime.now(dt.UTC))
        earlier = store_tokens.last_revoked(tx, name) if revoked is None else None
    if revoked is not None:
        _forget_beliefs()  # this process refuses it from its next request on
        return revoked
    if earlier is not None:
        assert earlier.revoked_at is not None
        raise UsageError(
            f"the token named {name!r} was revoked already, "
            f"at {earlier.revoked_at:%Y-%m-%d %H:%M:%S} UTC by {earlier.revoked_by}",
            hint="`skillstage token list` shows the live tokens",
        )
    raise UsageError(
        f"no token named {name!r}", hint="`skillstage token list` shows the live tokens"
    )


# -- authentication --------------------------------------------------------------------------------

# One open store per database for authentication (it runs on every request: opening a store
# costs a connection and a schema check). Each thread gets its own connection from it. A process
# serves one project, so a few are kept; the least recently used beyond that is closed.
_KEPT_STORES = 4
_stores: collections.OrderedDict[str, Store] = collections.OrderedDict()
_stores_guard = threading.Lock()


def _shared_store(url: str) -> Store:
    from skillstage.store import Store

    with _stores_guard:
        found = _stores.get(url)
        if found is not None:
            _stores.move_to_end(url)
            return found
    opened = Store.open(url)  # outside the lock: a slow database must not hold up the others
    with _stores_guard:
        found = _stores.get(url)
        if found is not None:
            opened.close()
            return found
        _stores[url] = opened
        evicted = [_stores.popitem(last=False)[1] for _ in range(len(_stores) - _KEPT_STORES)]
    for store in evicted:
        store.close()
    return opened


# A token found valid is believed for `BELIEVED_SECONDS` without reading the store again: its
# requests then cost a dictionary lookup instead of a transaction (on PostgreSQL that transaction
# was ~0.3 ms of a 0.5 ms request, measured). So a revocation holds within `BELIEVED_SECONDS` on
# every server process, and at once in the process that revoked. Only valid tokens are kept, under
# a digest of the token (the cache holds no secret); anything else reads the store every time.
BELIEVED_SECONDS = 1.0
_BELIEVED_MAX = 1024
_believed: dict[tuple[str, str], tuple[float, Principal]] = {}
_believed_guard = threading.Lock()


def _belief_key(url: str, token: str) -> tuple[str, str]:
    return url, hashlib.sha256(token.strip().encode("utf-8", "replace")).hexdigest()


def believed(project: Project, token: object) -> Principal | None:
    """The holder of `token` when it was found valid less than `BELIEVED_SECONDS` ago, else None
    (then `authenticate` it). Cheap enough for the event loop: it reads no store."""
    if not isinstance(token, str) or len(token) > 100:
        return None
    found = _believed.get(_belief_key(project.database_url, token))
    if found is None or time.monotonic() - found[0] >= BELIEVED_SECONDS:
        return None
    return found[1]


def _believe(key: tuple[str, str], principal: Principal) -> None:
    now = time.monotonic()
    with _believed_guard:
        if len(_believed) >= _BELIEVED_MAX:
            for old in [k for k, (at, _) in _believed.items() if now - at >= BELIEVED_SECONDS]:
                del _believed[old]
            if len(_believed) >= _BELIEVED_MAX:
                _believed.clear()
        _believed[key] = (now, principal)


def _forget_beliefs() -> None:
    with _believed_guard:
        _believed.clear()


def authenticate(project: Project, token: str) -> Principal | None:
    """Who holds `token`: its name and role, or None for a malformed, unknown or revoked token.

    The token's row is read by its indexed public id and the secret's digest compared in
    constant time; a valid token is then believed for `BELIEVED_SECONDS` (see above). A store
    that cannot be read raises `StoreError` (a server answers 503, not 401)."""
    parsed = _parse(token)
    if parsed is None:
        return None
    url = _database_url(project, "authenticate")
    key = _belief_key(url, token)
    found_before = _believed.get(key)
    if found_before is not None and time.monotonic() - found_before[0] < BELIEVED_SECONDS:
        return found_before[1]
    token_id, secret = parsed
    from skillstage.store import tokens as store_tokens

    store = _shared_store(url)
    with store.reading() as tx:
        found = store_tokens.credential(tx, token_id)
    if found is None or found.revoked:
        return None
    if not hmac.compare_digest(_digest(found.salt, secret), found.digest):
        return None
    now = dt.datetime.now(dt.UTC)
    if found.last_used_at is None or now - found.last_used_at >= LAST_USED_EVERY:
        try:
            with store.atomic() as tx:
                store_tokens.touch(tx, found.id, now)
        except StoreError as exc:  # the request is still who it says it is
            log.warning("could not record the use of token %s: %s", found.name, exc.message)
    principal = Principal(found.name, found.role)
    _believe(key, principal)
    return principal
