"""`skillstage token create|list|revoke`, run as the real command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from skillstage.config import load_config_file
from skillstage.tokens import Principal, authenticate
from tests.cli.conftest import Run

TOKEN = re.compile(r"sks_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def project(run_cli: Run, tmp_path: Path) -> Path:
    assert run_cli("init").returncode == 0
    return tmp_path


def test_create_prints_the_token_once_and_it_authenticates(run_cli: Run, project: Path) -> None:
    done = run_cli("token", "create", "--role", "operator", "--name", "ci-deploy", "--by", "alice")
    assert done.returncode == 0, done.stderr
    assert "Created token 'ci-deploy' with the role operator" in done.stdout
    assert "It will not be shown again" in done.stdout
    (token,) = TOKEN.findall(done.stdout)
    loaded = load_config_file(project / "skillstage.toml")
    assert authenticate(loaded, token) == Principal("ci-deploy", "operator")

    listed = run_cli("token", "list")
    assert listed.returncode == 0
    assert token not in listed.stdout and token[21:] not in listed.stdout
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ROLE", "ID", "CREATED", "(UTC)", "BY", "LAST", "USED"]
    assert row.split()[:3] == ["ci-deploy", "operator", token[4:20]]
    assert row.split()[5] == "alice"


def test_create_and_list_as_json(run_cli: Run, project: Path) -> None:
    done = run_cli("token", "create", "--role", "viewer", "--name", "grafana", "--json")
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert TOKEN.fullmatch(made["token"])
    assert (made["name"], made["role"], made["revoked_at"]) == ("grafana", "viewer", None)
    assert made["note"] == "the token is not shown again"
    listed = json.loads(run_cli("token", "list", "--json").stdout)
    assert [(t["name"], t["role"], t["token_id"]) for t in listed] == [
        ("grafana", "viewer", made["token_id"])
    ]
    assert "token" not in listed[0]


def test_revoke_ends_the_token(run_cli: Run, project: Path) -> None:
    made = json.loads(
        run_cli("token", "create", "--role", "admin", "--name", "ops", "--json").stdout
    )
    done = run_cli("token", "revoke", "ops", "--by", "carol")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "Revoked token 'ops' (role admin): requests with it are refused from now on."
    )
    assert authenticate(load_config_file(project / "skillstage.toml"), made["token"]) is None
    assert run_cli("token", "list").stdout.startswith("No tokens.")
    everything = run_cli("token", "list", "--all").stdout
    assert "ops" in everything and "revoked" in everything and "by carol" in everything


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["create", "--role", "root", "--name", "x"],
            "error: unknown role 'root'\n  hint: the roles: viewer (reads); recorder",
        ),
        (["create", "--role", "viewer", "--name", "a b"], "'a b' is not a token name"),
        (["revoke", "nobody"], "error: no token named 'nobody'"),
        (["create", "--name", "x"], "Missing option '--role'"),
    ],
)
def test_bad_input_is_a_usage_error_without_a_traceback(
    run_cli: Run, project: Path, args: list[str], message: str
) -> None:
    done = run_cli("token", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_second_live_token_of_one_name_is_refused(run_cli: Run, project: Path) -> None:
    assert run_cli("token", "create", "--role", "viewer", "--name", "bob").returncode == 0
    done = run_cli("token", "create", "--role", "admin", "--name", "bob", "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["message"] == (
        "a token named 'bob' (role viewer) exists already"
    )


def test_outside_a_project_it_says_so(run_cli: Run, tmp_path: Path) -> None:
    done = run_cli("token", "list")
    assert done.returncode == 2
    assert "skillstage.toml" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_subcommand_has_help(run_cli: Run, tmp_path: Path) -> None:
    group = run_cli("token", "--help")
    assert group.returncode == 0
    for name in ("create", "list", "revoke"):
        assert name in group.stdout
        done = run_cli("token", name, "--help")
        assert done.returncode == 0 and "Usage: skillstage token" in done.stdout
    assert "viewer reads" in run_cli("token", "create", "--help").stdout
