"""Schema-driven fuzzing (schemathesis) of the HTTP API against its own OpenAPI schema: whatever
the generated request, no endpoint answers 500. Write endpoints are fuzzed with the right key too,
so their bodies are exercised past the key check."""

from __future__ import annotations

import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from crossrec.serving.api import create_app
from crossrec.serving.config import ServeConfig
from crossrec.serving.service import Service
from crossrec.serving.store import SQLiteStore

KEY = "fuzz-key"


@pytest.fixture(scope="module")
def app(tiny_bundle, text_flagship, tmp_path_factory):
    torch.set_num_threads(1)
    store = SQLiteStore(tmp_path_factory.mktemp("fuzz") / "store.sqlite")
    return create_app(lambda: Service(text_flagship, tiny_bundle, store=store), ServeConfig(), api_key=KEY)


def test_no_request_gets_a_500(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/recommend",
        "/similar",
        "/explain",
        "/items",
        "/feedback",
        "/admin/reload",
    }
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            response = case.call(headers={"X-API-Key": KEY} if case.method.upper() == "POST" else {})
            case.validate_response(response, checks=[not_a_server_error])

        fuzz()
