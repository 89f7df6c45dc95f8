"""Customers' address books through the real client against a real server, on SQLite and PostgreSQL, with a
clock the test moves: the lock, removal, the audit entries and their webhooks, refusals that write nothing,
concurrent identical requests, and `custody apikey add` for a policy backend."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import httpx
import pytest
from nacl.signing import SigningKey, VerifyKey
from sqlalchemy import func, select

from custody.api.client import CustodyAPIError, CustodyClient
from custody.clock import FixedClock
from custody.intake import apikeys
from custody.intake.addressbook import due_announcements
from custody.intake.signatures import request_message, sign_request
from custody.ops.webhooks import Dispatcher, sync_endpoints
from custody.store.models import AddressBookEntry, AuditEntry, Customer, RequestNonce
from tests.conftest import OMNIBUS, ClientKey, apply_policy, free_port, policy_toml, running_server

HOUR = 3600
ALICE = "0x8ba1f109551bD432803012645Ac136ddd64DBA72"
BOB = "0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B"
NOW = 1_900_000_000


def book_policy(now: int, backend: SigningKey, extra: str = "") -> str:
    """The daemon tests' policy, with a one-hour address lock and ``backend`` as the backend named "backend"."""
    return (
        policy_toml(now)
        + f"""
[customers]
address_lock = "1h"

[[backends]]
name = "backend"
key = "{backend.verify_key.encode().hex()}"
"""
        + extra
    )


def install(store, now: int, backend: SigningKey, extra: str = "") -> None:
    from policies.loader import load_policy_toml

    apply_policy(store, load_policy_toml(book_policy(now, backend, extra)), now)


def register(store, name: str, key: SigningKey, scopes: str = "withdraw,read,cancel") -> ClientKey:
    apikeys.add_key(store, name, key.verify_key.encode().hex(), apikeys.parse_scopes(scopes), NOW)
    return ClientKey(name, key)


@dataclass
class Served:
    url: str
    store: object
    clock: FixedClock


@contextmanager
def serving(store, tmp_path, clock, **settings: object) -> Iterator[Served]:
    """``tests.conftest.running_server`` on ``clock``."""
    with running_server(store, tmp_path, clock, **settings) as srv:
        yield Served(srv.url, store, clock)


def signed_call(srv: Served, ck: ClientKey, method: str, path: str, body: bytes = b"", **headers: str):
    """One request signed at the server's clock (its path percent-decoded, as the server verifies it), sent as
    is."""
    signed = sign_request(ck.key, ck.name, srv.clock.now(), method, unquote(path), body)
    return httpx.request(method, srv.url + path, content=body, headers={**headers, **signed}, timeout=30)


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps the events it is sent."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@dataclass
class Setup:
    srv: Served
    backend: ClientKey
    client: CustodyClient

    @property
    def store(self):
        return self.srv.store

    @property
    def clock(self) -> FixedClock:
        return self.srv.clock


@pytest.fixture
def book(store, tmp_path) -> Iterator[Setup]:
    """The policy (backend "backend", a one-hour lock), the backend's key registered, a server on a clock the
    test moves, and a client signing at that clock."""
    key = SigningKey.generate()
    install(store, NOW, key)
    backend = register(store, "backend", key)
    clock = FixedClock(NOW)
    with serving(store, tmp_path, clock) as srv, CustodyClient(srv.url, "backend", key, clock=clock.now) as c:
        yield Setup(srv, backend, c)


def written(store) -> tuple[int, int, int]:
    """Address-book entries, customers and audit entries in the database."""
    with store.read() as s:
        return (
            s.scalar(select(func.count()).select_from(AddressBookEntry)),
            s.scalar(select(func.count()).select_from(Customer)),
            s.scalar(select(func.count()).select_from(AuditEntry)),
        )


def audit_after(store, seq: int) -> list[tuple[str, str, dict]]:
    with store.read() as s:
        rows = s.execute(select(AuditEntry).where(AuditEntry.seq > seq).order_by(AuditEntry.seq)).scalars()
        return [(e.kind, e.subject, json.loads(e.data)) for e in rows]


def head(store) -> int:
    with store.read() as s:
        return s.scalar(select(func.max(AuditEntry.seq))) or 0


def iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def test_an_entry_is_locked_for_the_policy_lock_then_active_each_change_audited_and_sent(book, receiver):
    store, clock, c = book.store, book.clock, book.client
    sync_endpoints(store, (receiver.url,), clock.now())  # the receiver gets the events from here on
    start = head(store)
    added = c.add_address("cust-1", "ETH", ALICE, "Alice's wallet")
    assert added == {
        "customer": "cust-1",
        "asset": "ETH",
        "address": ALICE,
        "label": "Alice's wallet",
        "state": "locked",
        "added_at": iso(NOW),
        "active_at": iso(NOW + HOUR),
        "removed_at": None,
    }
    assert c.list_addresses("cust-1") == {"customer": "cust-1", "address_book_only": False, "items": [added]}
    clock.advance(HOUR - 1)  # one second short of the lock
    assert c.list_addresses("cust-1")["items"][0]["state"] == "locked"
    assert due_announcements(store, clock.now()) == 0
    clock.advance(1)  # exactly at active_at
    assert c.list_addresses("cust-1")["items"] == [{**added, "state": "active"}]
    assert due_announcements(store, clock.now()) == 1
    assert due_announcements(store, clock.now() + 10) == 0  # announced once
    with store.read() as s:
        entry = s.execute(select(AddressBookEntry)).scalar_one()
    common = {"id": entry.id, "customer": "cust-1", "asset": "ETH", "address": ALICE}
    assert audit_after(store, start) == [
        (
            "address.added",
            "cust-1",
            {**common, "label": "Alice's wallet", "added_at": NOW, "active_at": NOW + HOUR, "by": "backend"},
        ),
        ("address.active", "cust-1", {**common, "active_at": NOW + HOUR}),
    ]
    removed = c.remove_address("cust-1", ALICE, "ETH")
    assert removed == {**added, "state": "removed", "removed_at": iso(NOW + HOUR)}
    assert audit_after(store, start)[-1] == (
        "address.removed",
        "cust-1",
        {**common, "removed_at": NOW + HOUR, "by": "backend"},
    )
    dispatcher = Dispatcher(store, SigningKey.generate(), (receiver.url,))
    try:
        assert dispatcher.step() == 3
    finally:
        dispatcher.close()
    assert [(e["type"], e["subject"]) for e in receiver.events] == [
        ("address.added", "cust-1"),
        ("address.active", "cust-1"),
        ("address.removed", "cust-1"),
    ]


def test_a_longer_lock_is_kept_and_a_shorter_one_refused(book):
    c, clock = book.client, book.clock
    assert c.add_address("cust-1", "ETH", ALICE, "a", lock=2 * HOUR)["active_at"] == iso(NOW + 2 * HOUR)
    assert c.add_address("cust-1", "ETH", BOB, "b", lock=HOUR)["active_at"] == iso(NOW + HOUR)  # the minimum
    before = written(book.store)
    with pytest.raises(CustodyAPIError) as info:
        c.add_address("cust-2", "ETH", ALICE, "a", lock=HOUR - 1)
    assert (info.value.status, info.value.code) == (422, "lock_too_short")
    assert written(book.store) == before
    clock.advance(HOUR)
    states = {e["address"]: e["state"] for e in c.list_addresses("cust-1")["items"]}
    assert states == {ALICE: "locked", BOB: "active"}


def _body(**fields: object) -> bytes:
    return json.dumps({"asset": "ETH", "address": ALICE, "label": "a", **fields}).encode()


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (
            "/v1/customers/cust-1/addresses",
            _body(address="0x8ba1f109551bD432803012645Ac136ddd64DBA7"),
            422,
            "invalid_address",
        ),
        ("/v1/customers/cust-1/addresses", _body(address=ALICE.lower()), 422, "invalid_address"),
        ("/v1/customers/cust-1/addresses", _body(address=ALICE.replace("bD4", "Bd4")), 422, "invalid_address"),
        (
            "/v1/customers/cust-1/addresses",
            _body(address="0xZZa1f109551bD432803012645Ac136ddd64DBA72"),
            422,
            "invalid_address",
        ),
        ("/v1/customers/-cust/addresses", _body(), 422, "invalid_customer"),
        ("/v1/customers/" + "c" * 65 + "/addresses", _body(), 422, "invalid_customer"),
        ("/v1/customers/cust%201/addresses", _body(), 422, "invalid_customer"),
        ("/v1/customers/cust-1/addresses", _body(lock=60), 422, "lock_too_short"),
        ("/v1/customers/cust-1/addresses", _body(lock=0), 422, "lock_too_short"),
        ("/v1/customers/cust-1/addresses", _body(lock=-1), 422, "invalid_field"),
        ("/v1/customers/cust-1/addresses", _body(lock=True), 422, "invalid_field"),
        ("/v1/customers/cust-1/addresses", _body(lock="3600"), 422, "invalid_field"),
        ("/v1/customers/cust-1/addresses", _body(asset="BTC"), 422, "unknown_asset"),
        ("/v1/customers/cust-1/addresses", _body(label="tab\there"), 422, "invalid_field"),
        ("/v1/customers/cust-1/addresses", _body(label="x" * 129), 422, "invalid_field"),
        ("/v1/customers/cust-1/addresses", _body(label=" padded"), 422, "invalid_field"),
        ("/v1/customers/cust-1/addresses", _body(memo="x"), 422, "unknown_field"),
        (
            "/v1/customers/cust-1/addresses",
            json.dumps({"asset": "ETH", "address": ALICE}).encode(),
            422,
            "missing_field",
        ),
        ("/v1/customers/cust-1/addresses", b"[1]", 400, "malformed_json"),
        ("/v1/customers/cust-1/addresses", b"{", 400, "malformed_json"),
    ],
)
def test_bad_input_gets_its_own_code_and_writes_nothing(book, path, body, status, code):
    before = written(book.store)
    answer = signed_call(book.srv, book.backend, "POST", path, body, **{"Content-Type": "application/json"})
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    assert written(book.store) == before


def test_a_live_duplicate_is_refused_and_a_removed_address_can_be_added_again(book):
    c, store = book.client, book.store
    c.add_address("cust-1", "ETH", ALICE, "a")
    c.add_address("cust-1", "USDC", ALICE, "a")  # the same address for another asset is another entry
    c.add_address("cust-2", "ETH", ALICE, "a")  # and for another customer
    before = written(store)
    with pytest.raises(CustodyAPIError) as info:
        c.add_address("cust-1", "ETH", ALICE, "another label")
    assert (info.value.status, info.value.code) == (409, "address_exists")
    assert written(store) == before
    c.remove_address("cust-1", ALICE, "ETH")
    book.clock.advance(10)
    again = c.add_address("cust-1", "ETH", ALICE, "back")
    assert again["state"] == "locked" and again["active_at"] == iso(NOW + 10 + HOUR)
    assert [e["asset"] for e in c.list_addresses("cust-1")["items"]] == ["ETH", "USDC"]
    assert [e["label"] for e in c.list_addresses("cust-1", asset="ETH")["items"]] == ["back"]


def test_removal_takes_effect_at_once_and_a_removed_entry_is_never_announced(book):
    c, store, clock = book.client, book.store, book.clock
    c.add_address("cust-1", "ETH", ALICE, "a")
    c.add_address("cust-1", "ETH", BOB, "b")
    start = head(store)
    removed = c.remove_address("cust-1", ALICE, "ETH")
    assert removed["state"] == "removed" and removed["removed_at"] == iso(NOW)
    assert [e["address"] for e in c.list_addresses("cust-1")["items"]] == [BOB]
    assert [k for k, _, _ in audit_after(store, start)] == ["address.removed"]
    with pytest.raises(CustodyAPIError) as info:
        c.remove_address("cust-1", ALICE, "ETH")  # nothing live left to remove
    assert (info.value.status, info.value.code) == (404, "not_found")
    with pytest.raises(CustodyAPIError) as info:
        c.remove_address("cust-1", BOB, "USDC")
    assert info.value.code == "not_found"
    with pytest.raises(CustodyAPIError) as info:
        c.remove_address("cust-1", BOB.lower(), "ETH")
    assert (info.value.status, info.value.code) == (422, "invalid_address")
    no_asset = signed_call(book.srv, book.backend, "DELETE", f"/v1/customers/cust-1/addresses/{BOB}")
    assert (no_asset.status_code, no_asset.json()["code"]) == (422, "invalid_field")
    clock.advance(HOUR)
    assert due_announcements(store, clock.now()) == 1
    assert [(k, d["address"]) for k, _, d in audit_after(store, start)][-1] == ("address.active", BOB)


def test_two_identical_requests_at_once_add_one_entry(book):
    def add(_: int) -> tuple[int, str]:
        with CustodyClient(book.srv.url, "backend", book.backend.key, clock=book.clock.now) as c:
            answer = c.request(
                "POST", "/v1/customers/cust-1/addresses", {"asset": "ETH", "address": ALICE, "label": "a"}
            )
            return answer.status_code, answer.json().get("code", "")

    for _ in range(3):
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(add, range(8)))
        assert sorted(results) == [(201, "")] + [(409, "address_exists")] * 7
        with book.store.read() as s:
            live = s.scalar(
                select(func.count()).select_from(AddressBookEntry).where(AddressBookEntry.removed_at.is_(None))
            )
        assert live == 1
        book.client.remove_address("cust-1", ALICE, "ETH")
    added = [k for k, _, _ in audit_after(book.store, 0) if k == "address.added"]
    assert len(added) == 3


def test_announcing_from_several_replicas_at_once_announces_each_entry_once(book):
    c, store, clock = book.client, book.store, book.clock
    for i in range(30):
        c.add_address(f"cust-{i}", "ETH", ALICE, "a")
    clock.advance(HOUR)
    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(lambda _: due_announcements(store, clock.now(), limit=10), range(8)))
    assert sum(counts) == 30
    announced = [d["customer"] for k, _, d in audit_after(store, 0) if k == "address.active"]
    assert sorted(announced) == sorted(f"cust-{i}" for i in range(30))


def test_address_book_only_mode_is_set_and_recorded_when_it_changes(book):
    c, store = book.client, book.store
    start = head(store)
    assert c.set_address_book_only("cust-1", False) == {
        "customer": "cust-1",
        "address_book_only": False,
        "updated_at": None,
    }  # the default already: nothing written
    assert written(store)[1] == 0 and head(store) == start
    assert c.set_address_book_only("cust-1", True) == {
        "customer": "cust-1",
        "address_book_only": True,
        "updated_at": iso(NOW),
    }
    assert c.list_addresses("cust-1") == {"customer": "cust-1", "address_book_only": True, "items": []}
    book.clock.advance(5)
    assert c.set_address_book_only("cust-1", True)["updated_at"] == iso(NOW)  # unchanged
    assert c.set_address_book_only("cust-1", False)["updated_at"] == iso(NOW + 5)
    assert audit_after(store, start) == [
        ("customer.updated", "cust-1", {"customer": "cust-1", "address_book_only": True, "by": "backend"}),
        ("customer.updated", "cust-1", {"customer": "cust-1", "address_book_only": False, "by": "backend"}),
    ]
    before = written(store)
    json_headers = {"Content-Type": "application/json"}
    for path, body, status, code in [
        ("/v1/customers/cust-1", b'{"address_book_only": "yes"}', 422, "invalid_field"),
        ("/v1/customers/cust-1", b'{"address_book_only": 1}', 422, "invalid_field"),
        ("/v1/customers/cust-1", b'{"address_book_only": true, "x": 1}', 422, "unknown_field"),
        ("/v1/customers/cust-1", b"{}", 422, "missing_field"),
        ("/v1/customers/a%2Fb", b'{"address_book_only": true}', 404, "not_found"),  # not a customer resource
        ("/v1/customers/@x", b'{"address_book_only": true}', 422, "invalid_customer"),
    ]:
        answer = signed_call(book.srv, book.backend, "PUT", path, body, **json_headers)
        assert (answer.status_code, answer.json()["code"]) == (status, code), (path, body)
    assert written(store) == before


def test_customer_ids_with_every_allowed_character_round_trip(book):
    c = book.client
    customer = "Eu.user_42:main@exchange-" + "x" * 39  # 64 characters
    assert c.add_address(customer, "ETH", ALICE, "a")["customer"] == customer
    assert c.list_addresses(customer)["items"][0]["customer"] == customer
    assert c.set_address_book_only(customer, True)["customer"] == customer
    assert c.remove_address(customer, ALICE, "ETH")["state"] == "removed"
    assert c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key="w-1", customer="cust-1")["customer"] == "cust-1"


def test_only_a_policy_backend_with_its_own_key_may_add_entries(store, tmp_path):
    policy_key = SigningKey.generate()
    install(store, NOW, policy_key)
    impostor = register(store, "backend", SigningKey.generate())  # the name of a backend, another key
    other = register(store, "treasury", SigningKey.generate())  # not a backend at all
    reader = register(store, "reader", SigningKey.generate(), "read")
    clock = FixedClock(NOW)
    with serving(store, tmp_path, clock) as srv:
        before = written(store)
        for ck, status, code in [
            (impostor, 403, "not_a_backend"),
            (other, 403, "not_a_backend"),
            (reader, 403, "missing_scope"),
        ]:
            answer = signed_call(srv, ck, "POST", "/v1/customers/cust-1/addresses", _body())
            assert (answer.status_code, answer.json()["code"]) == (status, code)
        assert written(store) == before
        for ck in (other, reader):  # reading needs only the read scope
            assert signed_call(srv, ck, "GET", "/v1/customers/cust-1/addresses").status_code == 200
        assert signed_call(srv, reader, "PUT", "/v1/customers/cust-1", b'{"address_book_only": true}').json()[
            "code"
        ] == ("missing_scope")


def test_the_signed_request_that_added_an_entry_is_kept_and_verifies(book):
    body = _body(label="kept")
    answer = signed_call(book.srv, book.backend, "POST", "/v1/customers/cust-1/addresses", body)
    assert answer.status_code == 201
    with book.store.read() as s:
        stored = json.loads(s.execute(select(AddressBookEntry.request)).scalar_one())
    assert set(stored) == {"key", "method", "path", "timestamp", "nonce", "idempotency_key", "body_b64", "signature"}
    assert (stored["key"], stored["method"], stored["path"]) == ("backend", "POST", "/v1/customers/cust-1/addresses")
    assert base64.b64decode(stored["body_b64"]) == body and stored["timestamp"] == str(NOW)
    message = request_message(
        stored["timestamp"], stored["nonce"], stored["method"], stored["path"], stored["idempotency_key"], body
    )
    VerifyKey(book.backend.key.verify_key.encode()).verify(message, bytes.fromhex(stored["signature"]))
    # the nonce was consumed with the entry: the same signed request again is a replay
    with book.store.read() as s:
        assert s.scalar(select(func.count()).select_from(RequestNonce)) >= 1
    headers = {
        "X-Custody-Key": "backend",
        "X-Custody-Timestamp": stored["timestamp"],
        "X-Custody-Nonce": stored["nonce"],
        "X-Custody-Signature": stored["signature"],
    }
    book.client.remove_address("cust-1", ALICE, "ETH")
    replay = httpx.post(book.srv.url + "/v1/customers/cust-1/addresses", content=body, headers=headers)
    assert (replay.status_code, replay.json()["code"]) == (401, "replayed_request")


def test_a_refused_request_does_not_consume_its_nonce(book):
    """Like a withdrawal: a request refused for its body may be sent again exactly as it was."""
    path = "/v1/customers/cust-1/addresses"
    book.client.add_address("cust-1", "ETH", ALICE, "a")
    signed = sign_request(book.backend.key, "backend", NOW, "POST", path, _body())
    first = httpx.post(book.srv.url + path, content=_body(), headers=signed)
    assert first.json()["code"] == "address_exists"
    book.client.remove_address("cust-1", ALICE, "ETH")
    assert httpx.post(book.srv.url + path, content=_body(), headers=signed).status_code == 201


def added_keys(store) -> list[str]:
    """The API keys registered, but the daemon's own (migrations add one for the rebalancer)."""
    return [k.name for k in apikeys.list_keys(store) if not k.name.startswith("custody-")]


def _config(tmp_path, store) -> str:
    from custody.config import render_config

    path = tmp_path / "custody.toml"
    path.write_text(render_config(tmp_path / "data", store.url))
    return str(path)


def test_apikey_add_refuses_a_backend_name_with_another_public_key(store, tmp_path):
    from tests.cli_helpers import custody

    backend = SigningKey.generate()
    install(store, NOW, backend)
    cfg = _config(tmp_path, store)
    wrong = SigningKey.generate().verify_key.encode().hex()
    refused = custody("apikey", "add", "backend", "--public-key", wrong, "--config", cfg, ok=False)
    assert refused.exit_code == 1
    assert "invalid_public_key" in refused.output and backend.verify_key.encode().hex() in refused.output
    assert added_keys(store) == []
    custody("apikey", "add", "backend", "--public-key", backend.verify_key.encode().hex().upper(), "--config", cfg)
    custody("apikey", "add", "reader", "--public-key", wrong, "--scopes", "read", "--config", cfg)  # not a backend
    assert added_keys(store) == ["backend", "reader"]


def test_apikey_add_without_an_applied_policy_checks_nothing(store, tmp_path):
    from tests.cli_helpers import custody

    cfg = _config(tmp_path, store)
    custody(
        "apikey", "add", "backend", "--public-key", SigningKey.generate().verify_key.encode().hex(), "--config", cfg
    )
    assert added_keys(store) == ["backend"]


# -- Bitcoin (issue 18): addresses checked for the asset's chain and network, kept in canonical form ----------
BTC_ASSET = """
[assets.BTC]
chain = "bitcoin"
network = "regtest"
decimals = 8
max_per_transfer = "10"
hot_limit = "0"
max_fee = "0.001"
max_fee_rate = 50
"""
BTC_ALICE = "bcrt1qqypqxpq9qcrsszg2pvxq6rs0zqg3yyc5phstwt"  # P2WPKH of the bytes 1..20


def test_a_bitcoin_entry_is_checked_for_its_network_and_kept_in_lowercase(store, tmp_path):
    key = SigningKey.generate()
    install(store, NOW, key, BTC_ASSET)
    register(store, "backend", key)
    clock = FixedClock(NOW)
    with serving(store, tmp_path, clock) as srv, CustodyClient(srv.url, "backend", key, clock=clock.now) as c:
        added = c.add_address("cust-1", "BTC", BTC_ALICE.upper(), "Alice's QR code")
        assert added["address"] == BTC_ALICE and added["asset"] == "BTC"
        before = written(store)
        for asset, address, code, words in [
            ("BTC", ALICE, "address_wrong_chain", "is an Ethereum address, not a Bitcoin one"),
            ("ETH", BTC_ALICE, "address_wrong_chain", "is a Bitcoin address, not an Ethereum one"),
            ("BTC", "bc1qqypqxpq9qcrsszg2pvxq6rs0zqg3yyc5fcj4z3", "address_wrong_chain", "not a regtest one"),
            ("BTC", BTC_ALICE[:8] + BTC_ALICE[8:].upper(), "invalid_address", "mixes upper and lower case"),
        ]:
            with pytest.raises(CustodyAPIError) as info:
                c.add_address("cust-2", asset, address, "x")
            assert (info.value.status, info.value.code) == (422, code) and words in info.value.detail, address
        assert written(store) == before
        with pytest.raises(CustodyAPIError) as info:
            c.add_address("cust-1", "BTC", BTC_ALICE, "again")  # the same address, however it is spelt
        assert info.value.code == "address_exists"
        assert c.remove_address("cust-1", BTC_ALICE.upper(), "BTC")["state"] == "removed"
