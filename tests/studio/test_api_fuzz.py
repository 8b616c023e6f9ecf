"""schemathesis fuzzes the studio's REST API from its own OpenAPI schema (as an admin, so every
operation is reachable): no request it makes may crash the studio (5xx), and every answer must match
the schema. Bounded: a few examples per operation, on SQLite."""

import os

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from tests.studio.conftest import add_account, agent_yaml

from parley.studio.app import create_app

EXAMPLES_PER_OPERATION = int(os.environ.get("PARLEY_FUZZ_EXAMPLES", "8"))  # more for a deeper local run
CHECKS = [not_a_server_error, response_schema_conformance]


def test_api_never_fails_on_generated_requests(sqlite_store) -> None:
    admin = add_account(sqlite_store, "fuzz-admin", "admin")
    sqlite_store.create_agent("card-block", agent_yaml(), admin.principal)
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", create_app(sqlite_store))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case) -> None:
            case.call_and_validate(headers=admin.headers, checks=CHECKS)

        fuzz()
