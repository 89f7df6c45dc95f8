"""Where requests may come from: the client's address behind trusted proxies (a pure function), the policy's
per-key source networks enforced by a real server on SQLite and PostgreSQL, the refusal audited and sent as a
webhook, and the `[api] trusted_proxies` setting."""

from __future__ import annotations

import ipaddress
import json

import httpx
import pytest
from nacl.signing import SigningKey
from sqlalchemy import func, select

from custody.clock import FixedClock
from custody.config import load_settings, render_config
from custody.errors import ConfigError
from custody.intake.signatures import sign_request
from custody.intake.sources import allowed, client_address, parse_address, parse_networks
from custody.ops.webhooks import Dispatcher, sync_endpoints
from custody.store.models import AuditEntry, Withdrawal
from tests.conftest import OMNIBUS
from tests.custody.test_addressbook import NOW, Receiver, install, register, serving

LOOPBACK = parse_networks(["127.0.0.1/32", "::1/128"])


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("192.0.2.7", [], "192.0.2.7"),  # no proxy
        ("192.0.2.7", ["10.20.0.5"], "192.0.2.7"),  # an untrusted peer's X-Forwarded-For is ignored
        ("127.0.0.1", [], "127.0.0.1"),  # a trusted proxy that forwards nothing is the client
        ("127.0.0.1", ["10.20.0.5"], "10.20.0.5"),
        ("127.0.0.1", ["10.20.0.5, 192.0.2.1"], "192.0.2.1"),  # the rightmost untrusted entry
        ("127.0.0.1", ["192.0.2.1, 10.20.0.5"], "10.20.0.5"),  # what the client wrote on the left proves nothing
        ("127.0.0.1", ["10.20.0.5, 127.0.0.1"], "10.20.0.5"),  # trusted hops are skipped
        ("127.0.0.1", ["192.0.2.1", "10.20.0.5"], "10.20.0.5"),  # several headers, in order
        ("127.0.0.1", ["127.0.0.1, 127.0.0.1"], "127.0.0.1"),  # every hop trusted: the leftmost
        ("127.0.0.1", ["10.20.0.5:4711"], "10.20.0.5"),  # a port is not part of the address
        ("127.0.0.1", ["[2001:db8::5]:443"], "2001:db8::5"),
        ("127.0.0.1", [" 2001:db8::5 "], "2001:db8::5"),
        ("::ffff:127.0.0.1", ["10.20.0.5"], "10.20.0.5"),  # an IPv4-mapped peer is its IPv4 address
        ("::1", ["::ffff:10.20.0.5"], "10.20.0.5"),
        ("127.0.0.1", ["10.20.0.5, unknown"], None),  # not an address: the client is not known
        ("127.0.0.1", ["10.20.0.5, "], "10.20.0.5"),  # empty entries are skipped
        (None, ["10.20.0.5"], None),  # no peer (a socket without an address)
        ("not-an-ip", ["10.20.0.5"], None),
    ],
)
def test_the_client_address_is_the_rightmost_untrusted_one(peer, forwarded, client):
    found = client_address(peer, forwarded, LOOPBACK)
    assert found == (None if client is None else ip(client))


def test_without_trusted_proxies_the_peer_is_the_client():
    assert client_address("127.0.0.1", ["10.20.0.5"], ()) == ip("127.0.0.1")


def test_allowed_networks():
    networks = parse_networks(["10.20.0.0/16", "2001:db8::/48"])
    assert allowed(ip("10.20.255.255"), networks) and allowed(ip("2001:db8:0:ffff::1"), networks)
    assert not allowed(ip("10.21.0.0"), networks) and not allowed(ip("2001:db9::1"), networks)
    assert not allowed(ip("::ffff:10.20.0.1"), networks)  # parse_address maps these; a raw one matches nothing
    assert not allowed(None, networks)
    assert allowed(None, ()) and allowed(ip("192.0.2.1"), ())  # no networks: anywhere
    assert parse_address("::ffff:10.20.0.1") == ip("10.20.0.1")


SOURCES = """
[api_keys.backend]
sources = ["10.20.0.0/16", "2001:db8::/48"]
"""


@pytest.fixture
def limited(store):
    """The policy limits "backend" to 10.20.0.0/16 and 2001:db8::/48; "other" has no limit."""
    key = SigningKey.generate()
    install(store, NOW, key, SOURCES)
    return register(store, "backend", key), register(store, "other", SigningKey.generate())


def send(srv, ck, method: str, path: str, body: bytes = b"", *, headers=None, idem: str = "", sign_key=None):
    signed = sign_request(sign_key or ck.key, ck.name, srv.clock.now(), method, path, body, idempotency_key=idem)
    return httpx.request(method, srv.url + path, content=body, headers={**(headers or {}), **signed}, timeout=30)


def refusals(store) -> list[tuple[str, dict]]:
    with store.read() as s:
        rows = s.execute(select(AuditEntry).where(AuditEntry.kind == "request.source_not_allowed")).scalars()
        return [(e.subject, json.loads(e.data)) for e in rows]


def withdrawals(store) -> int:
    with store.read() as s:
        return s.scalar(select(func.count()).select_from(Withdrawal))


def test_a_key_calling_from_outside_its_sources_is_refused_audited_and_sent(store, tmp_path, limited):
    backend, other = limited
    receiver = Receiver()
    try:
        with serving(store, tmp_path, FixedClock(NOW)) as srv:
            sync_endpoints(store, (receiver.url,), NOW)
            body = json.dumps({"asset": "ETH", "amount": "1", "destination": OMNIBUS}).encode()
            answer = send(srv, backend, "POST", "/v1/withdrawals", body, idem="w-1")
            assert (answer.status_code, answer.json()["code"]) == (403, "source_not_allowed")
            assert withdrawals(store) == 0
            assert refusals(store) == [
                (
                    "backend",
                    {"key": "backend", "address": "127.0.0.1", "method": "POST", "path": "/v1/withdrawals"},
                )
            ]
            # every route, reads included, and whatever the scope
            ping = send(srv, backend, "GET", "/v1/ping?x=1")
            assert (ping.status_code, ping.json()["code"]) == (403, "source_not_allowed")
            assert refusals(store)[-1][1]["path"] == "/v1/ping?x=1"
            # a key without sources may call from anywhere
            assert send(srv, other, "GET", "/v1/ping").json() == {"key": "other"}
            assert send(srv, other, "POST", "/v1/withdrawals", body, idem="w-2").status_code == 201
            # a request whose signature does not verify is refused before, and not recorded
            bad = send(srv, backend, "GET", "/v1/ping", sign_key=SigningKey.generate())
            assert (bad.status_code, bad.json()["code"]) == (401, "bad_signature")
            assert len(refusals(store)) == 2
        dispatcher = Dispatcher(store, SigningKey.generate(), (receiver.url,))
        try:
            dispatcher.step()
        finally:
            dispatcher.close()
        kinds = [e["type"] for e in receiver.events]
        assert kinds.count("request.source_not_allowed") == 2
        event = next(e for e in receiver.events if e["type"] == "request.source_not_allowed")
        assert event["subject"] == "backend" and event["data"]["address"] == "127.0.0.1"
    finally:
        receiver.close()


def test_the_same_refused_request_sent_again_is_a_replay_recorded_once(store, tmp_path, limited):
    backend, _ = limited
    with serving(store, tmp_path, FixedClock(NOW)) as srv:
        signed = sign_request(backend.key, "backend", NOW, "GET", "/v1/ping", b"")
        first = httpx.get(srv.url + "/v1/ping", headers=signed)
        again = httpx.get(srv.url + "/v1/ping", headers=signed)
        assert (first.status_code, first.json()["code"]) == (403, "source_not_allowed")
        assert (again.status_code, again.json()["code"]) == (401, "replayed_request")
        assert len(refusals(store)) == 1


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(store, tmp_path, limited):
    backend, _ = limited
    with serving(store, tmp_path, FixedClock(NOW)) as srv:
        spoofed = send(srv, backend, "GET", "/v1/ping", headers={"X-Forwarded-For": "10.20.0.5"})
        assert (spoofed.status_code, spoofed.json()["code"]) == (403, "source_not_allowed")
        assert refusals(store)[-1][1]["address"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        ("10.20.0.5", None),
        ("2001:db8::5", None),
        ("192.0.2.1, 10.20.0.5", None),  # the client claims an address on the left: ignored
        ("10.20.0.5, 127.0.0.1", None),  # a second trusted proxy
        ("10.20.0.5, 192.0.2.1", "192.0.2.1"),  # the last untrusted hop is outside
        ("", "127.0.0.1"),  # nothing forwarded: the proxy itself
        ("garbage", None),  # stands for "not known": refused, recorded with no address
    ],
)
def test_behind_a_trusted_proxy_the_rightmost_untrusted_forwarded_address_is_checked(
    store, tmp_path, limited, forwarded, client
):
    backend, _ = limited
    with serving(store, tmp_path, FixedClock(NOW), trusted_proxies=("127.0.0.1/32",)) as srv:
        answer = send(srv, backend, "GET", "/v1/ping", headers={"X-Forwarded-For": forwarded} if forwarded else {})
        if forwarded == "garbage":
            assert (answer.status_code, answer.json()["code"]) == (403, "source_not_allowed")
            assert refusals(store) == [
                ("backend", {"key": "backend", "address": None, "method": "GET", "path": "/v1/ping"})
            ]
        elif client is None:
            assert answer.status_code == 200 and refusals(store) == []
        else:
            assert (answer.status_code, answer.json()["code"]) == (403, "source_not_allowed")
            assert [d["address"] for _, d in refusals(store)] == [client]


def test_trusted_proxies_setting(tmp_path):
    path = tmp_path / "custody.toml"
    path.write_text(render_config(tmp_path, "sqlite:///x.db"))
    assert "trusted_proxies = []" in path.read_text()
    assert load_settings(path).trusted_proxies == ()
    base = path.read_text()
    path.write_text(base.replace("trusted_proxies = []", 'trusted_proxies = ["127.0.0.1/32", "10.0.0.9", "fd00::/8"]'))
    assert load_settings(path).trusted_proxies == ("127.0.0.1/32", "10.0.0.9/32", "fd00::/8")
    for bad in ('["10.0.0.1/8"]', '["nonsense"]', '"127.0.0.1/32"', "[1]"):
        path.write_text(base.replace("trusted_proxies = []", f"trusted_proxies = {bad}"))
        with pytest.raises(ConfigError) as info:
            load_settings(path)
        assert "trusted_proxies" in info.value.message
