"""Property-based fuzzing of the batch server from its own OpenAPI schema (schemathesis 4).

Every operation gets generated valid and invalid requests (bounded per operation,
derandomized so a run is reproducible). The server must never answer 5xx, and its
answers must match the schema (status codes, content types, bodies, Allow headers, 401
for missing or invalid tokens). Left out: `negative_data_rejection` — like OpenAI we
ignore unknown query parameters and extra form fields instead of refusing them — and
`positive_data_acceptance`: what matters is inside strings the schema cannot describe
(the JSONL of an upload, validated on arrival; the JSON `spec` of a grid or phased job;
ids that must exist), so a schema-valid request is often, rightly, a 400 or 404.

The schema is loaded at import (module level): schemathesis 4.32's `from_fixture` reads
`request.node._nodeid`, which pytest 9 no longer has. The store lives in a temp folder
that the module fixture removes afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.conftest import make_wb
from workbench.server import create_app

MAX_EXAMPLES = 30
KEY = "fuzz-key"
ROOT = Path(tempfile.mkdtemp(prefix="wb-fuzz-"))
WB = make_wb(ROOT / "wb", max_queued_jobs=3)
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(WB, model="tiny-test-model", max_upload_bytes=64 * 1024,
                                api_key=KEY))


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    WB.store.close()
    shutil.rmtree(ROOT, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_no_server_errors_and_responses_match_schema(case: schemathesis.Case) -> None:
    response = case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"},
                                      excluded_checks=[checks.negative_data_rejection,
                                                       checks.positive_data_acceptance])
    assert response.status_code < 500
