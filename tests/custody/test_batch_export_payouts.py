"""The exporter's side of customer payouts (``custody.cold.batches.batch_item``): what it reads from the
withdrawal row, the address book and the approvals table is what a signer then accepts, and what a signer
would refuse is left out with its code (``withdrawal_refusal``), never written into a batch."""

from __future__ import annotations

import uuid

from custody.cold.batches import batch_item
from custody.store.models import AddressBookEntry, Approval, Withdrawal
from policies.canonical import canonical_bytes
from policies.decision import Destination
from policies.loader import load_policy_toml
from signer.apirequest import SignedRequest
from signer.batchfile import withdrawal_problem
from signer.payouts import check_withdrawal
from signer.review import withdrawal_refusal
from tests.conftest import ADMINS, OMNIBUS
from tests.redteam.conftest import (
    CUSTOMER,
    DAY,
    ETH,
    PAYEE,
    approval,
    book_request,
    payout_policy_text,
    payout_request,
)

NOW = 2_000_000_000
POLICY = load_policy_toml(
    payout_policy_text([(f"a{i}", k.verify_key.encode().hex()) for i, k in enumerate(ADMINS)], NOW - DAY)
)


def row(kind: str | None, request: str | None, *, customer: str | None = CUSTOMER, asset: str = "ETH") -> Withdrawal:
    rule = POLICY.assets[asset]
    return Withdrawal(
        id=str(uuid.uuid4()),
        asset=asset,
        amount=10**rule.decimals,
        decimals=rule.decimals,
        destination=PAYEE,
        created_at=NOW - 60,
        customer=customer,
        destination_kind=kind,
        request=request,
    )


def stored(asset: str = "ETH", at: int = NOW - 60) -> str:
    return json_of(payout_request(asset, "1", PAYEE, at=at))


def json_of(request: SignedRequest) -> str:
    """A request as intake stores it (``withdrawals.request``, ``address_book.request``)."""
    return canonical_bytes(request.to_json()).decode()


def test_an_unlisted_payout_goes_out_with_its_request(store):
    w = row("unlisted", stored())
    with store.read() as s:
        item, why = batch_item(s, w, POLICY, NOW)
    assert why is None and withdrawal_problem(item) is None
    assert (item.customer, item.kind, item.label, item.book_request, item.approvals) == (
        CUSTOMER,
        "unlisted",
        "",
        None,
        (),
    )
    assert item.request is not None and item.request.verify(POLICY.backends[0].key)
    assert withdrawal_refusal(POLICY, item, NOW) is None
    assert check_withdrawal(POLICY, item, NOW).kind == Destination.UNLISTED


def test_an_address_book_payout_carries_the_entry_live_when_it_was_requested(store):
    w = row("address_book", stored("USDC"), asset="USDC")
    old = book_request("USDC", PAYEE, "Old", at=NOW - 20 * DAY)
    live = book_request("USDC", PAYEE, "Alice's Ledger", at=NOW - 5 * DAY)
    later = book_request("USDC", PAYEE, "Later", at=NOW - 30)
    with store.transaction() as s:
        for request, added, removed in ((old, NOW - 20 * DAY, NOW - 6 * DAY), (live, NOW - 5 * DAY, None)):
            s.add(_entry(request, added, removed))
        s.add(_entry(later, NOW - 30, None))  # added after the payout was requested
    with store.read() as s:
        item, why = batch_item(s, w, POLICY, NOW)
    assert why is None and item.book_request == live and item.label == "Alice's Ledger"
    assert check_withdrawal(POLICY, item, NOW).kind == Destination.ADDRESS_BOOK


def _entry(request: SignedRequest, added: int, removed: int | None) -> AddressBookEntry:
    return AddressBookEntry(
        customer=CUSTOMER,
        asset="USDC",
        address=PAYEE,
        label="x",
        added_at=added,
        active_at=added + DAY,
        removed_at=removed,
        announced=True,
        added_by="backend",
        request=json_of(request),
    )


def test_a_held_payout_carries_the_operators_decisions_in_name_order(store):
    w = row("unlisted", stored())
    with store.transaction() as s:
        for name in ("piotr", "olga"):
            d = approval(name, w.id)
            s.add(
                Approval(
                    withdrawal_id=w.id,
                    operator=name,
                    decision=d.decision,
                    reason=d.reason,
                    at=d.at,
                    signature=d.signature.hex(),
                )
            )
    with store.read() as s:
        item, _ = batch_item(s, w, POLICY, NOW)
    assert [a.operator for a in item.approvals] == ["olga", "piotr"]
    assert check_withdrawal(POLICY, item, NOW).approved_by == ("olga", "piotr")


def test_what_signers_would_refuse_is_left_out_with_its_code(store):
    with store.read() as s:
        missing, _ = batch_item(s, row("unlisted", None), POLICY, NOW)
        assert (withdrawal_refusal(POLICY, missing, NOW) or "").startswith("[request_missing]")
        _, why = batch_item(s, row("unlisted", '{"key": "backend"}'), POLICY, NOW)
        assert why is not None and "does not parse" in why
        treasury, why = batch_item(s, row(None, None, customer=None), POLICY, NOW)
    assert why is None and treasury.customer is None and treasury.kind is None
    assert (withdrawal_refusal(POLICY, treasury, NOW) or "").startswith("[batch_policy_refused]")


def test_a_treasury_transfer_is_listed_as_before(store):
    w = row(None, None, customer=None)
    w.destination = OMNIBUS
    with store.read() as s:
        item, why = batch_item(s, w, POLICY, NOW)
    assert (
        why is None
        and item.label == "omnibus"
        and set(item.body())
        == {
            "id",
            "asset",
            "amount",
            "decimals",
            "token",
            "destination",
            "label",
        }
    )
    assert withdrawal_refusal(POLICY, item, NOW) is None and item.amount == ETH
