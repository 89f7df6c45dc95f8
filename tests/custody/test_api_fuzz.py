"""Schemathesis against the API's own /openapi.json, every request signed as a real client would: whatever the
generated input, no 5xx, and every response (status, content type, body) matches the schema."""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, reject, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from custody.intake.signatures import sign_request
from tests.conftest import seeded_server

CASES: Counter[str] = Counter()
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with seeded_server(tmp_path_factory.mktemp("api-fuzz")) as served:
        yield served
    print(f"\nschemathesis: {sum(CASES.values())} cases, by operation: {dict(sorted(CASES.items()))}")


def send_signed(case, srv, client) -> httpx.Response | None:
    """The generated request, signed over its exact bytes; None if no HTTP client could send it."""
    kwargs = case.as_transport_kwargs(base_url=srv.url)
    if "json" in kwargs:
        body = json.dumps(kwargs.pop("json")).encode()
    else:
        data = kwargs.pop("data", b"")
        body = data.encode() if isinstance(data, str) else (data or b"")
    try:
        request = httpx.Request(kwargs["method"], kwargs["url"], params=kwargs.get("params"), content=body)
        headers = {k: str(v) for k, v in (kwargs.get("headers") or {}).items()}
        signed = sign_request(
            client.key,
            client.name,
            int(time.time()),
            request.method,
            request.url.raw_path.decode("ascii"),
            body,
            headers.pop("Idempotency-Key", ""),
        )
        request = httpx.Request(request.method, request.url, content=body, headers={**headers, **signed})
    except (UnicodeError, ValueError, httpx.InvalidURL):
        return None
    with httpx.Client(timeout=30) as http:
        return http.send(request)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_within_its_schema(api, mode):
    srv, client = api
    schema = schemathesis.openapi.from_dict(httpx.get(srv.url + "/openapi.json").json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            response = send_signed(case, srv, client)
            if response is None:
                reject()
            CASES[f"{mode.value} {case.method} {case.path}"] += 1
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            # Negative inputs may not exist (no parameters) or all be unsendable (a path segment no URL can
            # carry); positive ones always exist.
            assert mode is GenerationMode.NEGATIVE
    assert sum(n for k, n in CASES.items() if k.startswith(mode.value)) >= 60
