"""Requests generated from the OpenAPI document (schemathesis) against a real server: none gets
a 500, whatever it holds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from skillstage import api
from skillstage.config import load_config_file
from skillstage.server import create_app
from tests.server.conftest import serving
from tests.skilltree import write_skill

EXAMPLES = 25  # per operation


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzzed")
    database = f"sqlite:///{root / 'state' / 'state.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKILLSTAGE_DATABASE_URL", database)
        api.init(root)
        project = load_config_file(root / "skillstage.toml")
        for name in ("notes", "digest"):
            write_skill(project.stage_path("prototype", name).parent, name)
        api.promote(project, ["notes"], actor="alice")
        with serving(create_app(project, auth=False)) as url:
            yield url


def test_no_generated_request_gets_a_server_error(served: str) -> None:
    schema = schemathesis.openapi.from_url(f"{served}/v1/openapi.json")
    # The change feed waits up to a minute for a change by design: its waiting is tested on its
    # own (test_v1.py), and generated waits would only make this slow.
    operations = [
        result.ok() for result in schema.exclude(path_regex="^/v1/routing").get_all_operations()
    ]
    assert len(operations) > 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
        )
        def no_server_error(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        no_server_error()
