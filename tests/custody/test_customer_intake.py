"""Withdrawals for the exchange's customers, through the intake service and the API, on SQLite and PostgreSQL:
the customer's windows and per-transfer maximum at the limit and one unit over, unlisted and address-book
destinations, holds, the backend's signed request kept for offline signers, and what a group of requests costs
in queries."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from nacl.signing import SigningKey
from sqlalchemy import event, func, select

from custody.clock import FixedClock
from custody.errors import NotABackend
from custody.intake.apikeys import Principal
from custody.intake.signatures import sign_request
from custody.intake.withdrawals import Intake, NewWithdrawal, SignedRequest, Withdrawals
from custody.ledger import usage
from custody.ledger.policy import PolicyCache
from custody.ledger.states import State
from custody.store.db import Store
from custody.store.models import AddressBookEntry, AuditEntry, Customer, ScopedUsage, Withdrawal
from policies.canonical import canonical_bytes
from policies.errors import CustodyError
from policies.evaluate import window_totals
from policies.loader import load_policy_toml
from signer import apirequest
from tests.conftest import DAY, DENIED, OMNIBUS, ClientKey, add_client, apply_policy, policy_toml, running_server

ETH = 10**18
WHO = Principal("backend", frozenset({"withdraw", "read", "cancel"}))
OPERATORS = {name: SigningKey(bytes([0x41 + i]) * 32) for i, name in enumerate(["olga", "piet", "quinn"])}
UNLISTED_ADDRESSES = [f"0x{i:040d}" for i in range(1000, 1064)]  # digits only: their own checksum
BOOKED = "0x" + "77" * 20
UNLISTED = """unlisted = { max_per_transfer = "1", windows = [{ period = "24h", limit = "5" }] }\n"""
CUSTOMERS = """
[customers]
address_lock = "24h"
[customers.limits.ETH]
max_per_transfer = "10"
windows = [{ period = "1h", limit = "30" }, { period = "24h", limit = "50" }]
[customers.overrides."cust-42".ETH]
max_per_transfer = "100"
windows = [{ period = "24h", limit = "500" }]
"""


def customer_policy_toml(now: int, backend: str, *, holds: str = "", customers: str = CUSTOMERS) -> str:
    """The daemon tests' policy, with unlisted ETH payouts (1 ETH each, 5 per day), customer limits, the three
    OPERATORS and ``backend`` (a public key in hex) as the backend named "backend"."""
    text = policy_toml(now).replace("[assets.DAI]", UNLISTED + "[assets.DAI]", 1)
    # ETH's hot limit below the payouts the tests make: with no hot balance, a customer payout at or below it
    # would be refused (it is paid hot or not at all)
    text = text.replace('hot_limit = "5"', 'hot_limit = "0.01"', 1)
    people = "".join(
        f'[[operators]]\nname = "{name}"\nkey = "{key.verify_key.encode().hex()}"\n' for name, key in OPERATORS.items()
    )
    return (
        text
        + customers
        + (f"[holds]\n{holds}\n" if holds else "")
        + people
        + (f'[[backends]]\nname = "backend"\nkey = "{backend}"\n')
    )


def install(db_url: str, now: int, *, holds: str = "", customers: str = CUSTOMERS) -> tuple[Store, ClientKey]:
    """A migrated store with the customer policy applied and its backend's API key registered."""
    store = Store(db_url)
    store.migrate()
    ck = add_client(store)
    text = customer_policy_toml(now, ck.key.verify_key.encode().hex(), holds=holds, customers=customers)
    apply_policy(store, load_policy_toml(text), now)
    return store, ck


@pytest.fixture
def setup(db_url) -> Iterator[tuple[Store, ClientKey, Withdrawals]]:
    now = int(time.time())
    store, ck = install(db_url, now)
    yield store, ck, Withdrawals(store, PolicyCache(), FixedClock(now))
    store.dispose()


def ask(service: Withdrawals, key: str, amount: str, destination: str, customer: str | None = "alice", **kw: object):
    return service.create(WHO, key, NewWithdrawal("ETH", amount, destination, customer=customer, **kw))[0]  # type: ignore[arg-type]


def failed(w: Withdrawal) -> list[str]:
    return [r["rule"] for r in json.loads(w.reasons) if not r["passed"]]


def written(store: Store) -> tuple[int, int, int]:
    with store.read() as s:
        return (
            s.scalar(select(func.count()).select_from(Withdrawal)) or 0,
            s.scalar(select(func.count()).select_from(AuditEntry)) or 0,
            s.scalar(select(func.count()).select_from(ScopedUsage)) or 0,
        )


def book(store: Store, customer: str, address: str, added_at: int, active_at: int) -> None:
    """An address-book entry, as the address-book service leaves one."""
    with store.transaction() as s:
        s.add(
            AddressBookEntry(
                customer=customer,
                asset="ETH",
                address=address,
                label="own wallet",
                added_at=added_at,
                active_at=active_at,
                removed_at=None,
                announced=False,
                added_by="backend",
                request=None,
            )
        )


def scoped_from_withdrawals(store: Store, scope: str, now: int, periods: list[int]) -> dict[int, int]:
    """What ``scoped_usage`` must hold for ``scope``, summed over the counting withdrawals themselves."""
    with store.read() as s:
        rows = s.execute(
            select(Withdrawal.created_at, Withdrawal.amount, Withdrawal.customer, Withdrawal.destination_kind).where(
                Withdrawal.state.not_in(("rejected", "cancelled", "failed"))
            )
        ).all()
    return window_totals(((r[0], r[1]) for r in rows if scope in usage.scopes(r[2], r[3])), now, periods)


def scoped(store: Store, scope: str, now: int, periods: list[int]) -> dict[int, int]:
    with store.read() as s:
        return usage.scoped_totals(s, now, {(scope, "ETH"): periods})[(scope, "ETH")]


# -- the customer's limits --------------------------------------------------------------------------------------
def test_a_customer_window_takes_exactly_its_limit_and_refuses_one_unit_over(setup):
    store, _, service = setup
    for i in range(3):
        assert ask(service, f"a{i}", "9", OMNIBUS).state == State.QUEUED_COLD
    at_limit = ask(service, "a3", "3", OMNIBUS)  # 30 of 30 in the hour
    assert at_limit.state == State.QUEUED_COLD and at_limit.destination_kind == "whitelist"
    over = ask(service, "a4", "0.000000000000000001", OMNIBUS)
    assert over.state == State.REJECTED and failed(over) == ["customer_window:1h"]
    assert ask(service, "b0", "9", OMNIBUS, customer="bob").state == State.QUEUED_COLD  # another customer's own
    assert ask(service, "t0", "9", OMNIBUS, customer=None).state == State.QUEUED_COLD  # a treasury withdrawal
    service.clock.advance(3600)  # the hour is over; the day still holds 30
    assert ask(service, "a5", "10", OMNIBUS).state == State.DELAYED  # 10 is the customer's maximum (and a delay)
    assert ask(service, "a6", "10", OMNIBUS).state == State.DELAYED  # 50 of 50 in the day
    over_day = ask(service, "a7", "0.000000000000000001", OMNIBUS)
    assert over_day.state == State.REJECTED and failed(over_day) == ["customer_window:1d"]
    now, periods = service.clock.now(), [3600, DAY]
    assert scoped(store, "customer:alice", now, periods) == {3600: 20 * ETH, DAY: 50 * ETH}
    assert scoped(store, "customer:alice", now, periods) == scoped_from_withdrawals(
        store, "customer:alice", now, periods
    )


def test_cancelling_gives_the_customer_window_back(setup):
    store, _, service = setup
    made = [ask(service, f"c{i}", "10", OMNIBUS) for i in range(3)]  # 30 of 30 in the hour
    assert ask(service, "c3", "1", OMNIBUS).state == State.REJECTED
    service.cancel(WHO, made[0].id)
    assert ask(service, "c4", "10", OMNIBUS).state == State.DELAYED
    now = service.clock.now()
    assert scoped(store, "customer:alice", now, [3600]) == {3600: 30 * ETH}
    assert scoped(store, "customer:alice", now, [3600]) == scoped_from_withdrawals(store, "customer:alice", now, [3600])


def test_the_customer_maximum_and_its_override(setup):
    _, _, service = setup
    assert ask(service, "m0", "10", OMNIBUS).state == State.DELAYED
    over = ask(service, "m1", "10.000000000000000001", OMNIBUS)
    assert over.state == State.REJECTED and failed(over) == ["customer_max"]
    assert ask(service, "m2", "100", OMNIBUS, customer="cust-42").state == State.DELAYED  # its override
    assert failed(ask(service, "m3", "101", OMNIBUS, customer="cust-42")) == ["max_per_transfer", "customer_max"]


@pytest.mark.parametrize("customer", ["", "-alice", "a" * 65, "al ice", "alice/1", "é"])
def test_a_malformed_customer_is_refused_and_nothing_is_written(setup, customer):
    store, _, service = setup
    before = written(store)
    with pytest.raises(CustodyError) as info:
        ask(service, "bad", "1", OMNIBUS, customer=customer)
    assert info.value.code == "invalid_customer"
    assert written(store) == before


# -- destinations ------------------------------------------------------------------------------------------------
def test_unlisted_payouts_share_the_asset_unlisted_limits_across_customers(setup):
    store, _, service = setup
    made = [ask(service, f"u{i}", "1", UNLISTED_ADDRESSES[i], customer=f"cust{i}") for i in range(5)]
    assert {w.state for w in made} == {State.QUEUED_COLD} and {w.destination_kind for w in made} == {"unlisted"}
    over = ask(service, "u5", "0.000000000000000001", UNLISTED_ADDRESSES[5], customer="cust5")
    # one wei over the window (and, that small, a payout only the hot wallet may make: it has no balance here)
    assert over.state == State.REJECTED and failed(over) == ["unlisted_window:1d", "route"]
    too_big = ask(service, "u6", "1.000000000000000001", UNLISTED_ADDRESSES[6], customer="cust6")
    assert "unlisted_max" in failed(too_big)
    service.cancel(WHO, made[0].id)
    assert ask(service, "u7", "1", UNLISTED_ADDRESSES[7], customer="cust7").state == State.QUEUED_COLD
    now = service.clock.now()
    assert scoped(store, "unlisted", now, [DAY]) == {DAY: 5 * ETH}
    assert scoped(store, "unlisted", now, [DAY]) == scoped_from_withdrawals(store, "unlisted", now, [DAY])
    # without a customer only the whitelist exists
    assert failed(ask(service, "u8", "1", UNLISTED_ADDRESSES[8], customer=None)) == ["whitelist"]
    denied = ask(service, "u9", "0.5", DENIED, customer="cust9")
    assert denied.state == State.REJECTED and "deny_list" in failed(denied)


def test_address_book_entries_are_usable_once_their_lock_has_passed(setup):
    store, _, service = setup
    now = service.clock.now()
    book(store, "alice", BOOKED, now - DAY, now + 1)  # one second short
    locked = ask(service, "b0", "2", BOOKED)
    assert locked.state == State.REJECTED and failed(locked) == ["address_book"]
    service.clock.advance(1)  # exactly expired
    paid = ask(service, "b1", "2", BOOKED)  # over the unlisted maximum: only the book allows it
    assert paid.state == State.QUEUED_COLD and paid.destination_kind == "address_book"
    assert failed(ask(service, "b2", "2", BOOKED, customer="bob")) == ["unlisted_max"]  # not bob's entry
    with store.transaction() as s:
        s.add(Customer(id="carol", book_only=True, updated_at=now))
    assert failed(ask(service, "b3", "0.5", UNLISTED_ADDRESSES[0], customer="carol")) == ["address_book"]
    assert ask(service, "b4", "0.5", UNLISTED_ADDRESSES[0], customer="dave").destination_kind == "unlisted"


def test_only_a_policy_backend_may_pay_a_customer_destination(setup):
    store, _, service = setup
    add_client(store, "other")  # a withdrawing key that is not one of the policy's backends
    other = Principal("other", WHO.scopes)
    before = written(store)
    with pytest.raises(NotABackend):
        service.create(other, "x0", NewWithdrawal("ETH", "1", UNLISTED_ADDRESSES[0], customer="alice"))
    assert written(store) == before
    w, _ = service.create(other, "x1", NewWithdrawal("ETH", "1", OMNIBUS, customer="alice"))
    assert w.state == State.QUEUED_COLD  # the treasury whitelist is every withdrawing key's


def test_a_held_withdrawal_counts_in_the_windows_and_the_client_may_cancel_it(db_url):
    now = int(time.time())
    store, _ = install(db_url, now, holds="first_payout = true")
    service = Withdrawals(store, PolicyCache(), FixedClock(now))
    held = ask(service, "h0", "1", UNLISTED_ADDRESSES[0])
    assert held.state == State.HELD and held.outcome == "hold" and failed(held) == ["hold:first_payout"]
    assert held.eligible_at is None and held.destination_kind == "unlisted"
    # a held withdrawal is not history: the next payout to the address is a first payout too (else a held
    # decoy, cancelled afterwards, would let the real payout through unreviewed)
    again = ask(service, "h1", "1", UNLISTED_ADDRESSES[0])
    assert again.state == State.HELD and failed(again) == ["hold:first_payout"]
    assert ask(service, "h2", "1", OMNIBUS).state == State.QUEUED_COLD  # never held for the whitelist
    assert scoped(store, "unlisted", now, [DAY]) == {DAY: 2 * ETH}
    cancelled = service.cancel(WHO, held.id)
    assert cancelled.state == State.CANCELLED
    assert scoped(store, "unlisted", now, [DAY]) == {DAY: 1 * ETH}
    assert scoped(store, "customer:alice", now, [DAY]) == {DAY: 2 * ETH}
    with store.read() as s:
        kinds = list(s.execute(select(AuditEntry.kind).where(AuditEntry.subject == held.id).order_by(AuditEntry.seq)))
    assert [k for (k,) in kinds] == ["withdrawal.received", "withdrawal.held", "withdrawal.cancelled"]
    store.dispose()


# -- one group, many requests ------------------------------------------------------------------------------------
def _plan() -> list[tuple[str, str, str, str | None]]:
    """(idempotency key, amount, destination, customer): customer and unlisted windows filled within a group."""
    return [
        ("p0", "9", OMNIBUS, "alice"),
        ("p1", "1", UNLISTED_ADDRESSES[0], "alice"),  # held: first payout
        ("p2", "1", UNLISTED_ADDRESSES[0], "alice"),  # paid before: the one just held counts
        ("p3", "9", OMNIBUS, "alice"),
        ("p4", "9", OMNIBUS, "alice"),  # 29 of 30 in the hour
        ("p5", "2", OMNIBUS, "alice"),  # over the customer's hour
        ("p6", "1", OMNIBUS, "alice"),  # exactly 30
        ("p7", "1", UNLISTED_ADDRESSES[1], "bob"),
        ("p8", "1", UNLISTED_ADDRESSES[2], "carol"),
        ("p9", "1", UNLISTED_ADDRESSES[3], "dave"),  # 5 unlisted
        ("pa", "1", UNLISTED_ADDRESSES[4], "erin"),  # over the unlisted day
        ("pb", "1", OMNIBUS, None),
        ("pc", "0.5", UNLISTED_ADDRESSES[1], "bob"),  # bob's second to this address: over the unlisted day
        ("pd", "2", OMNIBUS, "bob"),
    ]


def _outcome(result: object) -> tuple[object, ...]:
    if isinstance(result, Exception):
        return ("error", getattr(result, "code", ""))
    w, created = result  # type: ignore[misc]
    return (w.state, w.destination_kind, w.customer, w.amount, created, tuple(failed(w)))


def test_a_group_decides_customer_withdrawals_exactly_as_one_at_a_time(db_url):
    now = int(time.time())
    results = []
    for grouped in (True, False):
        store, _ = install(db_url, now, holds="first_payout = true")
        service = Withdrawals(store, PolicyCache(), FixedClock(now))
        items = [Intake(WHO, k, NewWithdrawal("ETH", a, d, customer=c)) for k, a, d, c in _plan()]
        made = service.create_many(items) if grouped else [service.create_many([item])[0] for item in items]
        results.append([_outcome(r) for r in made])
        assert scoped(store, "unlisted", now, [DAY]) == scoped_from_withdrawals(store, "unlisted", now, [DAY])
        for customer in ("alice", "bob"):
            scope = usage.customer_scope(customer)
            assert scoped(store, scope, now, [3600, DAY]) == scoped_from_withdrawals(store, scope, now, [3600, DAY])
        store.dispose()
        if grouped:  # the second round reuses the database: reset it
            _reset(db_url)
    assert results[0] == results[1]
    states = [r[0] for r in results[0]]
    assert states[1] == State.HELD and states[2] == State.HELD  # a held payout is not history: still a first one
    assert states[5] == State.REJECTED and states[6] == State.QUEUED_COLD
    assert states[10] == State.REJECTED and states[12] == State.REJECTED and states[13] == State.QUEUED_COLD


def _reset(db_url: str) -> None:
    """Drop every table, so that ``install`` starts over on the same database."""
    from custody.store.models import Base

    store = Store(db_url)
    with store.engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    store.dispose()


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


def _reads(seen: list[str]) -> list[str]:
    """The statements a group made before writing its withdrawals: what deciding them cost."""
    end = next(i for i, text in enumerate(seen) if text.startswith("INSERT INTO withdrawals"))
    return seen[:end]


NEW_TABLES = ("scoped_usage", "address_book", "customers", "FROM api_keys")


def test_a_group_without_customers_reads_nothing_more(db_url):
    now = int(time.time())
    store, _ = install(db_url, now, holds="first_payout = true\nmedian_multiple = 10")
    service = Withdrawals(store, PolicyCache(), FixedClock(now))
    service.create(WHO, "warm", NewWithdrawal("ETH", "1", OMNIBUS))  # the policy cache is filled
    with statements(store) as seen:
        service.create_many([Intake(WHO, f"n{i}", NewWithdrawal("ETH", "1", OMNIBUS)) for i in range(6)])
    assert seen and not [text for text in seen if any(t in text for t in NEW_TABLES)]
    store.dispose()


def test_customer_facts_cost_a_few_queries_per_group_however_many_requests(db_url):
    now = int(time.time())
    store, _ = install(db_url, now, holds="first_payout = true\nmedian_multiple = 10")
    service = Withdrawals(store, PolicyCache(), FixedClock(now))
    service.create(WHO, "warm", NewWithdrawal("ETH", "1", OMNIBUS))
    costs = []
    for n, start in ((1, 0), (2, 1), (8, 3)):
        items = [
            Intake(WHO, f"g{start + i}", NewWithdrawal("ETH", "0.1", UNLISTED_ADDRESSES[start + i], customer=f"c{i}"))
            for i in range(n)
        ]
        with statements(store) as seen:
            service.create_many(items)
        costs.append(len(_reads(seen)))
    with statements(store) as seen:
        service.create_many([Intake(WHO, f"t{i}", NewWithdrawal("ETH", "0.1", OMNIBUS)) for i in range(3)])
    plain = len(_reads(seen))
    # windows, address book, book-only mode, earlier payouts, 30-day amounts, and whether the key is a backend
    assert costs == [plain + 6] * 3
    store.dispose()


# -- through the API ---------------------------------------------------------------------------------------------
def test_the_api_takes_a_customer_and_keeps_the_signed_request_for_the_signers(db_url, tmp_path):
    from custody.api.client import CustodyAPIError, CustodyClient

    now = int(time.time())
    store, ck = install(db_url, now)
    try:
        with running_server(store, tmp_path) as srv, CustodyClient(srv.url, ck.name, ck.key) as client:
            out = client.create_withdrawal("ETH", "0.5", UNLISTED_ADDRESSES[0], idempotency_key="k1", customer="cu-1")
            assert out["customer"] == "cu-1" and out["state"] == "queued_cold"
            assert client.get_withdrawal(out["id"])["customer"] == "cu-1"
            listed = client.create_withdrawal("ETH", "0.5", OMNIBUS, idempotency_key="k2", customer="cu-1")
            plain = client.create_withdrawal("ETH", "0.5", OMNIBUS, idempotency_key="k3")
            assert plain["customer"] is None
            with pytest.raises(CustodyAPIError) as info:
                client.create_withdrawal("ETH", "0.5", OMNIBUS, idempotency_key="k4", customer="no spaces")
            assert info.value.status == 422 and info.value.code == "invalid_customer"
        with store.read() as s:
            rows = {w.id: w for w in s.execute(select(Withdrawal)).scalars()}
        stored = json.loads(rows[out["id"]].request)
        assert set(stored) == {
            "key",
            "method",
            "path",
            "timestamp",
            "nonce",
            "idempotency_key",
            "body_b64",
            "signature",
        }
        request = apirequest.SignedRequest(
            **{k: v for k, v in stored.items() if k not in ("body_b64", "signature")},
            body=base64.b64decode(stored["body_b64"]),
            signature=bytes.fromhex(stored["signature"]),
        )
        assert request.verify(ck.key.verify_key.encode().hex())
        body = apirequest.withdrawal_body(request)
        assert (body.asset, body.amount, body.destination, body.customer) == (
            "ETH",
            "0.5",
            UNLISTED_ADDRESSES[0],
            "cu-1",
        )
        assert rows[listed["id"]].request is None and rows[listed["id"]].destination_kind == "whitelist"
        assert rows[plain["id"]].request is None and rows[plain["id"]].customer is None
    finally:
        store.dispose()


def test_the_service_keeps_the_request_only_off_the_whitelist(setup):
    _, ck, service = setup
    now = service.clock.now()

    def signed(key: str, body: bytes) -> SignedRequest:
        headers = sign_request(ck.key, ck.name, now, "POST", "/v1/withdrawals", body, idempotency_key=key)
        return SignedRequest(
            ck.name,
            "POST",
            "/v1/withdrawals",
            headers["X-Custody-Timestamp"],
            headers["X-Custody-Nonce"],
            key,
            body,
            headers["X-Custody-Signature"].upper(),
        )

    made = []
    for key, destination in (("s0", UNLISTED_ADDRESSES[0]), ("s1", OMNIBUS)):
        new = NewWithdrawal("ETH", "1", destination, customer="alice")
        body = json.dumps({"asset": "ETH", "amount": "1", "destination": destination, "customer": "alice"}).encode()
        made.append(service.create_many([Intake(WHO, key, new, signed=signed(key, body))])[0][0])  # type: ignore[index]
    unlisted, listed = made
    assert listed.request is None
    stored = json.loads(unlisted.request)
    assert stored["signature"] == stored["signature"].lower() and stored["timestamp"] == str(now)
    same = apirequest.SignedRequest(  # the form the signers read, byte for byte
        **{k: v for k, v in stored.items() if k not in ("body_b64", "signature")},
        body=base64.b64decode(stored["body_b64"]),
        signature=bytes.fromhex(stored["signature"]),
    )
    assert canonical_bytes(same.to_json()).decode() == unlisted.request and same.verify(
        ck.key.verify_key.encode().hex()
    )
    assert base64.b64decode(stored["body_b64"]).startswith(b'{"asset": "ETH"')


def test_held_decoys_do_not_raise_the_median(db_url):
    """Usually 0.02 ETH; 0.9 ETH is held (10 x the median). More held 0.9s must not become the median that lets
    the next one through."""
    now = int(time.time())
    store, _ = install(db_url, now, holds="median_multiple = 10")
    service = Withdrawals(store, PolicyCache(), FixedClock(now))
    assert ask(service, "m0", "0.02", UNLISTED_ADDRESSES[1]).state == State.QUEUED_COLD  # no history: not held
    for i in range(1, 4):
        w = ask(service, f"m{i}", "0.9", UNLISTED_ADDRESSES[1])
        assert w.state == State.HELD and failed(w) == ["hold:median"], i
    store.dispose()
