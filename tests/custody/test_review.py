"""Held withdrawals and the four-eyes review, on SQLite and PostgreSQL: one approval leaves it held, a second
distinct operator releases it (the policy decides again then), the same operator twice does not, one reject
rejects it, two approvals at once release it once, and every refusal writes nothing. And `custody review`."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from nacl.signing import SigningKey
from sqlalchemy import func, select

from custody.clock import FixedClock
from custody.errors import AlreadyDecided, BadSignature, InvalidField, NotFound, NotHeld, UnknownOperator
from custody.intake.review import HeldView, Review, sign_decision
from custody.intake.withdrawals import NewWithdrawal, Withdrawals
from custody.ledger.policy import PolicyCache
from custody.ledger.states import State
from custody.store.db import Store
from custody.store.models import AddressBookEntry, Approval, AuditEntry, Customer, ScopedUsage, Withdrawal
from policies.errors import CustodyError
from tests.cli_helpers import custody
from tests.conftest import DAY, OMNIBUS
from tests.custody.test_customer_intake import (
    BOOKED,
    ETH,
    OPERATORS,
    UNLISTED_ADDRESSES,
    WHO,
    book,
    failed,
    install,
    scoped,
)


@dataclass
class Desk:
    store: Store
    withdrawals: Withdrawals
    review: Review
    clock: FixedClock

    def held(self, key: str, amount: str = "1", destination: str = UNLISTED_ADDRESSES[0], customer: str = "alice"):
        w, _ = self.withdrawals.create(WHO, key, NewWithdrawal("ETH", amount, destination, customer=customer))
        assert w.state == State.HELD, failed(w)
        return w

    def decide(self, operator: str | SigningKey, withdrawal_id: str, decision: str = "approve", reason: str = "ok"):
        key = OPERATORS[operator] if isinstance(operator, str) else operator
        return self.review.decide(sign_decision(key, withdrawal_id, decision, reason, self.clock.now()))

    def state(self, withdrawal_id: str) -> str:
        return self.review.show(withdrawal_id).withdrawal.state

    def written(self) -> tuple[object, ...]:
        """Everything a decision could write."""
        with self.store.read() as s:
            return (
                s.scalar(select(func.count()).select_from(AuditEntry)),
                s.scalar(select(func.count()).select_from(Approval)),
                tuple(s.execute(select(Withdrawal.id, Withdrawal.state, Withdrawal.updated_at)).all()),
                tuple(s.execute(select(ScopedUsage.scope, ScopedUsage.at, ScopedUsage.amount)).all()),
            )

    def kinds(self, withdrawal_id: str) -> list[str]:
        with self.store.read() as s:
            query = select(AuditEntry.kind).where(AuditEntry.subject == withdrawal_id).order_by(AuditEntry.seq)
            return list(s.execute(query).scalars())


HOLDS = 'first_payout = true\nmedian_multiple = 10\nyoung_entry = "7d"'


@pytest.fixture
def desk(db_url) -> Iterator[Desk]:
    now = int(time.time())
    store, _ = install(db_url, now, holds=HOLDS)
    clock = FixedClock(now)
    yield Desk(store, Withdrawals(store, PolicyCache(), clock), Review(store, PolicyCache(), clock), clock)
    store.dispose()


def test_one_approval_leaves_it_held_and_a_second_operator_releases_it(desk):
    w = desk.held("h1")
    assert desk.decide("olga", w.id).state == State.HELD
    desk.clock.advance(60)
    released = desk.decide("piet", w.id, reason="customer called back")
    assert released.state == State.QUEUED_COLD and released.route == "cold" and released.outcome == "allow"
    assert released.destination_kind == "unlisted" and released.updated_at == desk.clock.now()
    assert not failed(released) and "approved" in released.reasons  # decided again, the holds not checked
    assert desk.kinds(w.id) == [
        "withdrawal.received",
        "withdrawal.held",
        "withdrawal.reviewed",
        "withdrawal.reviewed",
        "withdrawal.queued_cold",
    ]
    view = desk.review.show(w.id)
    assert [(a.operator, a.decision) for a in view.approvals] == [("olga", "approve"), ("piet", "approve")]
    assert view.approvals[1].reason == "customer called back" and len(view.approvals[1].signature) == 128
    with desk.store.read() as s:
        entry = s.execute(select(AuditEntry).where(AuditEntry.kind == "withdrawal.queued_cold")).scalar_one()
    assert '"approved_by":["olga","piet"]' in entry.data and '"by":"operator:piet"' in entry.data
    now = desk.clock.now()
    assert scoped(desk.store, "unlisted", now, [DAY]) == {DAY: 1 * ETH}  # it still counts, once


def test_the_same_operator_twice_does_not_release_it_and_writes_nothing(desk):
    w = desk.held("h1")
    desk.decide("olga", w.id)
    before = desk.written()
    for decision in ("approve", "reject"):
        with pytest.raises(AlreadyDecided) as info:
            desk.decide("olga", w.id, decision)
        assert info.value.code == "already_decided"
    assert desk.written() == before and desk.state(w.id) == State.HELD


def test_one_reject_rejects_it_and_gives_its_windows_back(desk):
    w = desk.held("h1")
    desk.decide("olga", w.id)
    rejected = desk.decide("quinn", w.id, "reject", "the customer did not ask for this")
    assert rejected.state == State.REJECTED
    assert desk.kinds(w.id)[-2:] == ["withdrawal.reviewed", "withdrawal.rejected"]
    now = desk.clock.now()
    assert scoped(desk.store, "unlisted", now, [DAY]) == {DAY: 0}
    assert scoped(desk.store, "customer:alice", now, [3600, DAY]) == {3600: 0, DAY: 0}


def test_an_approval_of_a_withdrawal_that_is_not_held_is_refused_and_writes_nothing(desk):
    queued, _ = desk.withdrawals.create(WHO, "q1", NewWithdrawal("ETH", "1", OMNIBUS, customer="alice"))
    assert queued.state == State.QUEUED_COLD
    released = desk.held("h1")
    desk.decide("olga", released.id)
    desk.decide("piet", released.id)
    cancelled = desk.held("h2", destination=UNLISTED_ADDRESSES[1])
    desk.withdrawals.cancel(WHO, cancelled.id)  # the client may cancel a held withdrawal
    before = desk.written()
    for withdrawal_id in (queued.id, released.id, cancelled.id):
        with pytest.raises(NotHeld) as info:
            desk.decide("quinn", withdrawal_id)
        assert info.value.code == "not_held"
    with pytest.raises(NotFound):
        desk.decide("quinn", "00000000-0000-4000-8000-000000000000")
    assert desk.written() == before


def test_an_operator_key_not_in_the_policy_or_a_bad_signature_is_refused_and_writes_nothing(desk):
    w = desk.held("h1")
    before = desk.written()
    with pytest.raises(UnknownOperator) as info:
        desk.decide(SigningKey(b"\x99" * 32), w.id)
    assert info.value.code == "unknown_operator"
    forged = sign_decision(SigningKey(b"\x99" * 32), w.id, "approve", "ok", desk.clock.now())
    olga = OPERATORS["olga"].verify_key.encode().hex()
    genuine = sign_decision(OPERATORS["olga"], w.id, "approve", "ok", desk.clock.now())
    for bad in (
        dataclasses.replace(forged, key=olga),  # someone else's signature under olga's key
        dataclasses.replace(genuine, reason="changed after signing"),
        dataclasses.replace(genuine, decision="reject"),
        dataclasses.replace(genuine, withdrawal=desk.held("h2", destination=UNLISTED_ADDRESSES[1]).id),
        dataclasses.replace(genuine, signature="00" * 64),
        dataclasses.replace(genuine, signature="zz"),
    ):
        before = desk.written()
        with pytest.raises(BadSignature):
            desk.review.decide(bad)
        assert desk.written() == before
    for bad in (dataclasses.replace(genuine, decision="maybe"), dataclasses.replace(genuine, reason="")):
        with pytest.raises(InvalidField):
            desk.review.decide(bad)
    assert desk.written() == before and desk.state(w.id) == State.HELD


def test_release_runs_the_policy_again_a_delay_applies_then(desk):
    for i in range(3):  # alice's history: 1 ETH, three times (whitelisted: no first-payout hold)
        desk.withdrawals.create(WHO, f"p{i}", NewWithdrawal("ETH", "1", OMNIBUS, customer="alice"))
    big = desk.held("big", "10", OMNIBUS)  # ten times her 30-day median
    assert failed(big) == ["hold:median"] and big.eligible_at is None
    desk.decide("olga", big.id)
    desk.clock.advance(600)
    released = desk.decide("piet", big.id)
    assert released.state == State.DELAYED and released.eligible_at == desk.clock.now() + 3600
    assert released.destination_kind == "whitelist"
    desk.clock.advance(3600)
    assert desk.withdrawals.promote_due() == 1 and desk.state(big.id) == State.QUEUED_COLD


def test_release_decides_the_destination_again(desk):
    now = desk.clock.now()
    book(desk.store, "alice", BOOKED, now - 2 * DAY, now - DAY)  # active, but younger than 7 days
    book(desk.store, "bob", BOOKED, now - 2 * DAY, now - DAY)
    moved = desk.held("a1", "0.5", BOOKED)
    refused = desk.held("b1", "0.5", BOOKED, customer="bob")
    assert failed(moved)[-1] == "hold:young_entry" and moved.destination_kind == "address_book"
    with desk.store.transaction() as s:  # both entries are removed while they wait; bob may use his book only
        for entry in s.execute(select(AddressBookEntry)).scalars():
            entry.removed_at = now
        s.add(Customer(id="bob", book_only=True, updated_at=now))
    for w in (moved, refused):
        desk.decide("olga", w.id)
        desk.decide("piet", w.id)
    assert desk.state(moved.id) == State.QUEUED_COLD
    assert desk.review.show(moved.id).withdrawal.destination_kind == "unlisted"  # within the unlisted limits
    assert desk.state(refused.id) == State.REJECTED
    assert scoped(desk.store, "unlisted", now, [DAY]) == {DAY: ETH // 2}  # counted where it now belongs
    assert scoped(desk.store, "customer:alice", now, [DAY]) == {DAY: ETH // 2}
    assert scoped(desk.store, "customer:bob", now, [DAY]) == {DAY: 0}


def test_list_and_show(desk):
    desk.withdrawals.create(WHO, "p0", NewWithdrawal("ETH", "1", OMNIBUS, customer="alice"))
    first = desk.held("h1")
    second = desk.held("h2", destination=UNLISTED_ADDRESSES[1], customer="bob")
    desk.decide("olga", first.id, reason="looks fine")
    assert [w.id for w in desk.review.held()] == [first.id, second.id]
    view: HeldView = desk.review.show(first.id)
    assert [h["rule"] for h in view.holds] == ["hold:first_payout"]
    assert [w.idempotency_key for w in view.history] == ["p0"]
    assert [(a.operator, a.reason) for a in view.approvals] == [("olga", "looks fine")]
    with pytest.raises(NotFound):
        desk.review.show("nope")


def _race(desk: Desk, w_id: str, operators: list[str]) -> list[object]:
    """The operators' approvals of one withdrawal, all at the same moment, each on its own thread."""
    barrier = threading.Barrier(len(operators))
    results: list[object] = [None] * len(operators)

    def run(i: int) -> None:
        decision = sign_decision(OPERATORS[operators[i]], w_id, "approve", "ok", desk.clock.now())
        barrier.wait()
        try:
            results[i] = desk.review.decide(decision).state
        except CustodyError as exc:
            results[i] = exc.code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(operators))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_two_approvals_at_once_release_it_once(desk):
    for round_ in range(4):
        w = desk.held(f"r{round_}", "0.5", UNLISTED_ADDRESSES[round_], customer=f"c{round_}")
        desk.decide("olga", w.id)
        results = _race(desk, w.id, ["piet", "quinn"])  # either one is the second approval; the other is late
        assert sorted(map(str, results)) == ["not_held", "queued_cold"]
        assert desk.kinds(w.id).count("withdrawal.queued_cold") == 1
        assert len(desk.review.show(w.id).approvals) == 2
        both = desk.held(f"s{round_}", "0.5", UNLISTED_ADDRESSES[10 + round_], customer=f"d{round_}")
        results = _race(desk, both.id, ["olga", "piet"])  # the first is recorded, the second releases it
        assert sorted(map(str, results)) == ["held", "queued_cold"]
        assert desk.kinds(both.id).count("withdrawal.queued_cold") == 1 and desk.state(both.id) == State.QUEUED_COLD
    assert scoped(desk.store, "unlisted", desk.clock.now(), [DAY]) == {DAY: 4 * ETH}  # each counted once


# -- the command line --------------------------------------------------------------------------------------------
def test_the_review_commands(desk, tmp_path, db_url):
    config = tmp_path / "custody.toml"
    config.write_text(f'[daemon]\ndata_dir = "{tmp_path}"\ndatabase_url = "{db_url}"\n')
    keys = {}
    for name, key in OPERATORS.items():
        keys[name] = tmp_path / f"{name}.key"
        keys[name].write_text(bytes(key).hex() + "\n")
    w = desk.held("h1")
    other = desk.held("h2", destination=UNLISTED_ADDRESSES[1], customer="bob")
    listed = custody("review", "list", "--config", config).output
    assert w.id in listed and other.id in listed and "held" in listed
    as_json = json.loads(custody("review", "list", "--json", "--config", config).output)
    assert [(h["id"], h["customer"], h["holds"]) for h in as_json] == [
        (w.id, "alice", ["hold:first_payout"]),
        (other.id, "bob", ["hold:first_payout"]),
    ]
    shown = custody("review", "show", w.id, "--config", config).output
    assert "hold:first_payout" in shown and "alice" in shown and "none yet" in shown
    out = custody("review", "approve", w.id, "--reason", "known address", "--key", keys["olga"], "--config", config)
    assert out.output.strip().endswith("it is held")
    again = custody("review", "approve", w.id, "--reason", "again", "--key", keys["olga"], "--config", config, ok=False)
    assert again.exit_code == 1 and "already_decided" in again.output
    out = custody("review", "approve", w.id, "--reason", "confirmed", "--key", keys["piet"], "--config", config)
    assert out.output.strip().endswith("it is queued_cold")
    late = custody("review", "reject", w.id, "--reason", "late", "--key", keys["quinn"], "--config", config, ok=False)
    assert late.exit_code == 1 and "not_held" in late.output
    out = custody("review", "reject", other.id, "--reason", "fraud", "--key", keys["quinn"], "--config", config)
    assert out.output.strip().endswith("it is rejected")
    assert "no held withdrawal" in custody("review", "list", "--config", config).output
    shown = custody("review", "show", w.id, "--config", config).output
    assert "approve olga" in shown and "confirmed" in shown
    stranger = tmp_path / "stranger.key"
    public = custody("review", "keygen", "--out", stranger).output.strip()
    assert len(public) == 64 and public not in stranger.read_text() and stranger.stat().st_mode & 0o077 == 0
    assert "error [io]" in custody("review", "keygen", "--out", stranger, ok=False).output  # never overwritten
    third = desk.held("h3", destination=UNLISTED_ADDRESSES[2], customer="carol")
    refused = custody("review", "approve", third.id, "--reason", "x", "--key", stranger, "--config", config, ok=False)
    assert refused.exit_code == 1 and "unknown_operator" in refused.output
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    bad = custody("review", "approve", third.id, "--reason", "x", "--key", garbage, "--config", config, ok=False)
    assert bad.exit_code == 1 and "invalid_field" in bad.output
    assert desk.state(third.id) == State.HELD


def test_a_release_to_a_customer_destination_without_the_backends_request_is_rejected(desk):
    """Whitelisted when it was asked for (so no backend request was kept), no longer when two operators release
    it: it would now pay an unlisted address that only a backend's signed request may pay, and that signers
    refuse without one. Simulated by marking a held unlisted payout as whitelisted at intake, without request."""
    held = desk.held("w1")
    with desk.store.transaction() as s:
        row = s.execute(select(Withdrawal).where(Withdrawal.id == held.id)).scalar_one()
        row.request, row.destination_kind = None, "whitelist"
    desk.decide("olga", held.id)
    desk.decide("piet", held.id)
    assert desk.state(held.id) == State.REJECTED
    assert failed(desk.review.show(held.id).withdrawal)[-1] == "backend"
