"""`/metrics`: the Prometheus page parses, and its figures follow what happened."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from nacl.signing import SigningKey
from prometheus_client.parser import text_string_to_metric_families

from custody.api.client import CustodyAPIError, CustodyClient
from custody.ledger import freeze
from tests.conftest import DENIED, OMNIBUS, add_client


def scrape(server) -> dict[tuple[str, tuple], float]:
    page = httpx.get(server.url + "/metrics", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(page.text)
        for sample in family.samples
    }


def test_metrics_count_withdrawals_by_state_and_asset_and_time_intake(server):
    ck = add_client(server.store)
    before = scrape(server)
    assert before[("custody_node_up", ())] == 0  # no node configured here
    assert before[("custody_frozen", ())] == 0 and before[("custody_batches_waiting", ())] == 0
    with CustodyClient(server.url, ck.name, ck.key) as c:
        for _ in range(3):
            c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key=uuid.uuid4().hex)
        c.create_withdrawal("ETH", "1", DENIED, idempotency_key=uuid.uuid4().hex)
        with pytest.raises(CustodyAPIError):
            c.create_withdrawal("ETH", "1", OMNIBUS.lower(), idempotency_key=uuid.uuid4().hex)
    with server.store.transaction() as s:
        freeze.freeze(s, 0, "metrics test", "operator")
    after = scrape(server)
    assert after[("custody_withdrawals", (("asset", "ETH"), ("state", "queued_cold")))] == 3
    assert after[("custody_withdrawals", (("asset", "ETH"), ("state", "rejected")))] == 1
    assert after[("custody_intake_requests_total", (("status", "2xx"),))] == 4
    assert after[("custody_intake_requests_total", (("status", "4xx"),))] == 1
    assert after[("custody_intake_seconds_count", ())] == 5
    assert after[("custody_frozen", ())] == 1


def test_metrics_answer_while_the_database_is_unreachable_and_say_so(tmp_path):
    from custody import outage
    from custody.intake.signatures import sign_request
    from custody.store.db import Store
    from tests.conftest import free_port, running_server

    store = Store(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone")  # nothing listens there
    key = SigningKey.generate()
    try:
        with running_server(store, tmp_path) as srv:
            page = scrape(srv)
            assert page[("custody_database_up", ())] == 0 and page[("custody_node_up", ())] == 0
            assert not [name for name, _ in page if name == "custody_withdrawals"]
            headers = sign_request(key, "backend", int(time.time()), "GET", "/v1/ping", b"")
            answer = httpx.get(srv.url + "/v1/ping", headers=headers, timeout=10)
            assert answer.status_code == 503 and answer.json()["code"] == "database_unavailable"
            down = scrape(srv)
            assert down[("custody_dependency_down", (("dependency", "database"), ("loop", "api")))] == 1
            assert down[("custody_dependency_down_seconds", (("dependency", "database"), ("loop", "api")))] >= 0
    finally:
        store.dispose()
        with outage.REGISTRY.lock:  # the registry is the process's: leave it as other tests expect it
            outage.REGISTRY.down.pop(("api", "database"), None)


def test_metrics_say_the_database_is_up(server):
    page = scrape(server)
    assert page[("custody_database_up", ())] == 1
    assert not [labels for name, labels in page if name == "custody_dependency_down" and ("loop", "api") in labels]
