"""API tokens in the store: made, shown once, found by their holder, revoked, recorded; on SQLite
and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from pathlib import Path

import pytest

from skillstage import api, tokens
from skillstage.config import Project, load_config_file
from skillstage.errors import UsageError
from skillstage.store import Store
from skillstage.store import tokens as store_tokens
from skillstage.tokens import (
    PERMISSIONS,
    ROLES,
    Principal,
    authenticate,
    create_token,
    list_tokens,
    revoke_token,
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


def _rows(project: Project) -> list[tuple[object, ...]]:
    with Store.open(project.database_url) as store, store.reading() as tx:
        return tx.query("SELECT * FROM token")


def test_a_token_authenticates_as_its_name_and_role(project: Project) -> None:
    made = create_token(project, name="ci-deploy", role="operator", actor="alice")
    assert made.token.startswith(f"sks_{made.info.token_id}_")
    assert (made.info.name, made.info.role, made.info.created_by) == (
        "ci-deploy",
        "operator",
        "alice",
    )
    assert authenticate(project, made.token) == Principal("ci-deploy", "operator")
    assert authenticate(project, f"  {made.token}\n") == Principal("ci-deploy", "operator")


def test_the_store_keeps_a_salted_digest_and_never_the_secret(project: Project) -> None:
    made = create_token(project, name="alice", role="viewer", actor="admin")
    secret = made.token[len(f"sks_{made.info.token_id}_") :]
    assert len(secret) == 43  # 32 random bytes
    assert made.token == f"sks_{made.info.token_id}_{secret}"
    (row,) = _rows(project)
    assert not any(secret in str(value) for value in row)
    assert not any(made.token in str(value) for value in row)
    with Store.open(project.database_url) as store, store.reading() as tx:
        salt, digest = tx.one("SELECT salt, digest FROM token") or ("", "")
    assert digest == hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()
    assert "sks_" not in repr(made)  # a logged result does not show it either


def test_two_tokens_never_share_a_salt_or_id(project: Project) -> None:
    first = create_token(project, name="a", role="viewer", actor="x")
    second = create_token(project, name="b", role="viewer", actor="x")
    assert first.info.token_id != second.info.token_id
    with Store.open(project.database_url) as store, store.reading() as tx:
        salts = [row[0] for row in tx.query("SELECT salt FROM token")]
    assert len(set(salts)) == 2


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "sks_",
        "sks_0123456789abcdef_",
        "Bearer sks_0123456789abcdef_" + "A" * 43,
        "sks_0123456789abcdef_" + "A" * 43,  # well formed, unknown
        "sks_0123456789ABCDEF_" + "A" * 43,
        "x" * 10_000,
        None,
        b"sks_0123456789abcdef_" + b"A" * 43,
        42,
    ],
)
def test_malformed_and_unknown_tokens_are_nobody(project: Project, presented: object) -> None:
    create_token(project, name="alice", role="admin", actor="x")
    assert authenticate(project, presented) is None  # type: ignore[arg-type]


def test_a_wrong_secret_with_a_real_id_is_nobody(project: Project) -> None:
    made = create_token(project, name="alice", role="admin", actor="x")
    prefix, secret = made.token[:21], made.token[21:]
    other = ("B" if secret[0] != "B" else "C") + secret[1:]
    assert authenticate(project, prefix + other) is None
    assert authenticate(project, made.token[:-1]) is None


def test_revoked_tokens_are_refused_and_leave_the_list(project: Project) -> None:
    made = create_token(project, name="alice", role="approver", actor="root")
    kept = create_token(project, name="bob", role="viewer", actor="root")
    revoked = revoke_token(project, "alice", actor="carol")
    assert (revoked.revoked_by, revoked.revoked) == ("carol", True)
    assert authenticate(project, made.token) is None
    assert authenticate(project, kept.token) == Principal("bob", "viewer")
    assert [t.name for t in list_tokens(project)] == ["bob"]
    everything = list_tokens(project, revoked=True)
    assert [(t.name, t.revoked) for t in everything] == [("bob", False), ("alice", True)]


def test_a_revoked_name_can_be_given_a_new_token(project: Project) -> None:
    old = create_token(project, name="alice", role="viewer", actor="root")
    revoke_token(project, "alice", actor="root")
    new = create_token(project, name="alice", role="operator", actor="root")
    assert authenticate(project, old.token) is None
    assert authenticate(project, new.token) == Principal("alice", "operator")


def test_a_live_name_cannot_be_taken_twice(project: Project) -> None:
    create_token(project, name="alice", role="viewer", actor="root")
    with pytest.raises(UsageError) as caught:
        create_token(project, name="alice", role="admin", actor="root")
    assert "a token named 'alice' (role viewer) exists already" in caught.value.message
    assert caught.value.hint is not None and "skillstage token revoke alice" in caught.value.hint
    assert [t.role for t in list_tokens(project)] == ["viewer"]


def test_two_writers_creating_one_name_make_one_token(project: Project) -> None:
    barrier = threading.Barrier(4)
    made: list[str] = []
    refused: list[str] = []

    def create() -> None:
        barrier.wait()
        try:
            made.append(create_token(project, name="race", role="viewer", actor="x").token)
        except UsageError as exc:
            refused.append(exc.message)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and len(refused) == 3, (made, refused)
    assert authenticate(project, made[0]) == Principal("race", "viewer")


def test_an_unknown_role_is_refused_with_the_roles(project: Project) -> None:
    with pytest.raises(UsageError) as caught:
        create_token(project, name="alice", role="superuser", actor="x")
    assert caught.value.message == "unknown role 'superuser'"
    assert caught.value.hint is not None
    for role in ROLES:
        assert role in caught.value.hint
    assert list_tokens(project) == []


@pytest.mark.parametrize("name", ["", "-alice", "alice smith", "a" * 65, "ali\nce", "élodie"])
def test_a_malformed_name_is_refused(project: Project, name: str) -> None:
    with pytest.raises(UsageError, match="is not a token name"):
        create_token(project, name=name, role="viewer", actor="x")


def test_arguments_of_the_wrong_type_are_usage_errors(project: Project) -> None:
    with pytest.raises(UsageError, match="name must be str"):
        create_token(project, name=7, role="viewer")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="project must be a Project"):
        list_tokens("skillstage.toml")  # type: ignore[arg-type]


def test_revoking_an_unknown_or_revoked_name_says_which(project: Project) -> None:
    with pytest.raises(UsageError) as caught:
        revoke_token(project, "nobody", actor="x")
    assert caught.value.message == "no token named 'nobody'"
    assert caught.value.hint == "`skillstage token list` shows the live tokens"
    create_token(project, name="alice", role="viewer", actor="x")
    revoke_token(project, "alice", actor="carol")
    with pytest.raises(UsageError, match=r"'alice' was revoked already, at .* UTC by carol"):
        revoke_token(project, "alice", actor="x")


def test_creation_and_revocation_are_recorded_with_their_actor(project: Project) -> None:
    create_token(project, name="alice", role="operator", actor="root")
    revoke_token(project, "alice", actor="carol")
    with Store.open(project.database_url) as store, store.reading() as tx:
        events = store_tokens.token_events(tx)
    assert [(e.kind, e.name, e.role, e.actor) for e in events] == [
        ("revoke", "alice", "operator", "carol"),
        ("create", "alice", "operator", "root"),
    ]
    assert events[0].at >= events[1].at
    assert events[0].at.tzinfo is not None


def test_the_actor_defaults_to_the_login_name(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", "dana")
    made = create_token(project, name="alice", role="viewer")
    assert made.info.created_by == "dana"
    assert revoke_token(project, "alice").revoked_by == "dana"


def test_use_is_noted_at_most_once_a_minute(project: Project) -> None:
    made = create_token(project, name="alice", role="viewer", actor="x")
    assert list_tokens(project)[0].last_used_at is None
    before = dt.datetime.now(dt.UTC)
    assert authenticate(project, made.token) is not None
    first = list_tokens(project)[0].last_used_at
    assert first is not None and first >= before - dt.timedelta(seconds=1)
    tokens._forget_beliefs()  # (else the second call does not read the store at all)
    assert authenticate(project, made.token) is not None
    assert list_tokens(project)[0].last_used_at == first


def test_a_token_revoked_elsewhere_is_refused_within_the_belief_window(project: Project) -> None:
    made = create_token(project, name="alice", role="operator", actor="x")
    assert authenticate(project, made.token) == Principal("alice", "operator")
    # As another server process revokes it: straight in the store, not through this process.
    with Store.open(project.database_url) as store, store.atomic() as tx:
        store_tokens.revoke_token(tx, "alice", actor="elsewhere", at=dt.datetime.now(dt.UTC))
    revoked_at = time.monotonic()
    while authenticate(project, made.token) is not None:
        assert time.monotonic() - revoked_at < tokens.BELIEVED_SECONDS + 0.5
        time.sleep(0.05)
    assert tokens.believed(project, made.token) is None


def test_revoking_in_this_process_holds_at_once(project: Project) -> None:
    made = create_token(project, name="alice", role="operator", actor="x")
    assert authenticate(project, made.token) is not None
    assert tokens.believed(project, made.token) == Principal("alice", "operator")
    revoke_token(project, "alice", actor="x")
    assert tokens.believed(project, made.token) is None
    assert authenticate(project, made.token) is None


def test_every_role_is_one_of_the_permission_table() -> None:
    assert set(ROLES) == set(PERMISSIONS) == {"viewer", "recorder", "operator", "approver", "admin"}


def test_authentication_is_fast(project: Project) -> None:
    # It runs on every request: one indexed read (the last use is written once a minute), and
    # nothing at all while the token is believed.
    made = create_token(project, name="alice", role="viewer", actor="x")
    authenticate(project, made.token)
    rounds = 300
    started = time.perf_counter()
    for _ in range(rounds):
        tokens._forget_beliefs()
        assert authenticate(project, made.token) is not None
    read_ms = (time.perf_counter() - started) / rounds * 1000
    started = time.perf_counter()
    for _ in range(rounds):
        assert authenticate(project, made.token) is not None
    believed_ms = (time.perf_counter() - started) / rounds * 1000
    print(f"authenticate: {read_ms:.3f} ms reading the store, {believed_ms:.4f} ms believed")
    assert read_ms < 5, read_ms
    assert believed_ms < 0.1, believed_ms
