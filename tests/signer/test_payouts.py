"""A signer's checks of customer payouts at their edges, with the clock passed in (``signer.payouts``), and
what its ledger remembers of them (requests paid once, unlisted windows)."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest

from policies.decision import Destination
from policies.loader import load_policy_toml
from signer import ledger
from signer.batchfile import Batch, BatchWithdrawal
from signer.errors import (
    ApprovalsMissing,
    BatchPolicyRefused,
    LedgerDamaged,
    RequestMismatch,
    RequestReplayed,
    UnlistedOverLimit,
    UnlistedOverWindow,
    WithdrawalChanged,
)
from signer.payouts import check_withdrawal
from signer.review import assemble, withdrawal_refusal
from signer.safecontracts import MULTISEND_CALL_ONLY
from tests.conftest import ADMINS, DENIED, OMNIBUS
from tests.redteam.conftest import (
    BACKEND,
    CUSTOMER,
    DAY,
    ETH,
    PAYEE,
    approval,
    backend_request,
    book_request,
    payout_policy_text,
    payout_request,
)

BACKEND_KEY = BACKEND.verify_key.encode().hex()
NOW = 2_000_000_000
SAFE = "0x7d0E20C9DCFd305eba30c2198C969993795bEb61"
OTHER_SAFE = "0x5E4036Ef5c2eD0b5Cbe123e57880e770e66385bd"
POLICY = load_policy_toml(
    payout_policy_text([(f"a{i}", k.verify_key.encode().hex()) for i, k in enumerate(ADMINS)], NOW - DAY)
)
T = NOW - 10 * DAY  # when the customer's address was added


def unlisted(amount: int, text: str, **kw) -> BatchWithdrawal:
    return BatchWithdrawal(
        str(uuid.uuid4()),
        "ETH",
        amount,
        18,
        None,
        PAYEE,
        "",
        customer=CUSTOMER,
        kind="unlisted",
        request=payout_request("ETH", text, PAYEE, **kw),
    )


def booked(asset: str, lock_age: int, *, lock: int | None = None, amount: str = "1") -> BatchWithdrawal:
    """A payout requested ``lock_age`` seconds after the address-book entry was signed."""
    book = book_request(asset, PAYEE, "Alice", at=T)
    if lock is not None:
        body = {"asset": asset, "address": PAYEE, "label": "Alice", "lock": lock}
        book = backend_request("POST", f"/v1/customers/{CUSTOMER}/addresses", body, at=T, idempotency_key="")
    rule = POLICY.assets[asset]
    return BatchWithdrawal(
        str(uuid.uuid4()),
        asset,
        int(amount) * 10**rule.decimals,
        rule.decimals,
        rule.contract,
        PAYEE,
        "Alice",
        customer=CUSTOMER,
        kind="address_book",
        request=payout_request(asset, amount, PAYEE, at=T + lock_age),
        book_request=book,
    )


def approved(w: BatchWithdrawal) -> BatchWithdrawal:
    return dataclasses.replace(w, approvals=(approval("olga", w.id), approval("piotr", w.id)))


def batch(items: list[BatchWithdrawal], nonce: int, safe: str = SAFE) -> Batch:
    return assemble(
        batch_id=str(uuid.uuid4()),
        chain_id=31337,
        safe=safe,
        safe_nonce=nonce,
        multisend=MULTISEND_CALL_ONLY,
        policy_version=2,
        policy_hash="00" * 32,
        created_at=NOW,
        expires_at=NOW + 7 * DAY,
        withdrawals=items,
        policy=POLICY,
    )


def sign(state, b: Batch, at: int = NOW) -> None:
    entries = ledger.read(state)
    ledger.check(b, POLICY, entries, at)
    ledger.append(state, entries, b, POLICY, at)


# -- the judgment --------------------------------------------------------------------------------------------
def test_the_lock_exactly_over_proves_the_address_book_and_one_second_short_does_not():
    """USDC allows no unlisted payout, so the judgment decides: signed or refused."""
    assert check_withdrawal(POLICY, approved(booked("USDC", DAY)), NOW).kind == Destination.ADDRESS_BOOK
    assert "[unlisted_refused]" in (withdrawal_refusal(POLICY, booked("USDC", DAY - 1), NOW) or "")
    # a longer lock asked for by the backend counts; a shorter one cannot undercut the policy's
    assert "[unlisted_refused]" in (withdrawal_refusal(POLICY, booked("USDC", 2 * DAY - 1, lock=2 * DAY), NOW) or "")
    assert check_withdrawal(POLICY, approved(booked("USDC", 2 * DAY, lock=2 * DAY)), NOW).kind == "address_book"
    assert "[unlisted_refused]" in (withdrawal_refusal(POLICY, booked("USDC", 3600, lock=60), NOW) or "")


def test_the_young_entry_hold_at_its_edge():
    """holds.young_entry is 3 days: an entry exactly 3 days old at the payout request is not held."""
    assert check_withdrawal(POLICY, booked("USDC", 3 * DAY), NOW).approved_by == ()
    with pytest.raises(ApprovalsMissing, match="less than 3d"):
        check_withdrawal(POLICY, booked("USDC", 3 * DAY - 1), NOW)
    assert check_withdrawal(POLICY, approved(booked("USDC", 3 * DAY - 1)), NOW).approved_by == ("olga", "piotr")


def test_the_unlisted_maximum_at_its_edge():
    w = unlisted(2 * ETH, "2")
    payout = check_withdrawal(POLICY, w, NOW)
    assert w.request is not None  # known by the backend's key, not its name
    assert (payout.kind, payout.request) == (Destination.UNLISTED, (BACKEND_KEY, w.request.idempotency_key))
    with pytest.raises(UnlistedOverLimit):
        check_withdrawal(POLICY, unlisted(2 * ETH + 1, "2.000000000000000001"), NOW)


def test_the_label_is_the_signed_entrys_or_none():
    with pytest.raises(BatchPolicyRefused, match="an unlisted payout has none"):
        check_withdrawal(POLICY, dataclasses.replace(unlisted(ETH, "1"), label="Alice"), NOW)
    with pytest.raises(BatchPolicyRefused, match="signed address-book entry says 'Alice'"):
        check_withdrawal(POLICY, dataclasses.replace(booked("USDC", 4 * DAY), label="Bob"), NOW)


def test_a_denied_destination_is_refused_whatever_the_backend_signed():
    w = dataclasses.replace(unlisted(ETH, "1"), destination=DENIED, request=payout_request("ETH", "1", DENIED))
    assert (withdrawal_refusal(POLICY, w, NOW) or "").startswith("[batch_policy_refused]")


def test_a_customer_payout_to_the_whitelist_needs_no_request_but_any_present_must_hold():
    base = unlisted(ETH, "1")
    to_omnibus = dataclasses.replace(base, destination=OMNIBUS, label="omnibus", kind="whitelist", request=None)
    assert check_withdrawal(POLICY, to_omnibus, NOW).kind == Destination.WHITELIST
    with pytest.raises(RequestMismatch, match="destination"):
        check_withdrawal(POLICY, dataclasses.replace(to_omnibus, request=base.request), NOW)


@pytest.mark.parametrize(
    ("text", "kw", "why"),
    [
        ("1.0000000000000000001", {}, "more than 18 decimal places"),
        ("1", {"idempotency_key": ""}, "no idempotency key"),
        ("-1", {}, "not a plain decimal"),
    ],
)
def test_a_request_that_does_not_say_exactly_this_payout_is_refused(text, kw, why):
    w = dataclasses.replace(unlisted(ETH, "1"), request=payout_request("ETH", text, PAYEE, **kw))
    with pytest.raises(RequestMismatch, match=why):
        check_withdrawal(POLICY, w, NOW)


def test_the_exporters_check_says_the_code():
    w = dataclasses.replace(unlisted(ETH, "1"), request=None)
    assert (withdrawal_refusal(POLICY, w, NOW) or "").startswith("[request_missing] ")
    assert withdrawal_refusal(POLICY, unlisted(ETH, "1"), NOW) is None


# -- the ledger ----------------------------------------------------------------------------------------------
def test_unlisted_windows_slide_and_count_only_unlisted_payouts(tmp_path):
    sign(tmp_path, batch([unlisted(2 * ETH, "2"), unlisted(2 * ETH, "2")], 0))
    sign(tmp_path, batch([BatchWithdrawal(str(uuid.uuid4()), "ETH", 90 * ETH, 18, None, OMNIBUS, "omnibus")], 1))
    entries = ledger.read(tmp_path)
    ledger.check(batch([unlisted(ETH, "1")], 2), POLICY, entries, NOW)  # exactly 5 ETH a day
    with pytest.raises(UnlistedOverWindow, match="4 ETH"):
        ledger.check(batch([unlisted(ETH + 1, "1.000000000000000001")], 2), POLICY, entries, NOW)
    ledger.check(batch([unlisted(2 * ETH, "2")] * 1, 2), POLICY, entries, NOW + DAY)  # a day later


def test_a_request_is_paid_once_whatever_the_safe_or_the_withdrawal_id(tmp_path):
    first = unlisted(ETH, "1")
    sign(tmp_path, batch([first], 0))
    again = dataclasses.replace(first, id=str(uuid.uuid4()))
    with pytest.raises(RequestReplayed, match=first.id):
        ledger.check(batch([again], 0, OTHER_SAFE), POLICY, ledger.read(tmp_path), NOW)
    # a re-export of the same withdrawal at its nonce is fine; with another request it is not the same payment
    ledger.check(batch([first], 0), POLICY, ledger.read(tmp_path), NOW)
    other = dataclasses.replace(first, request=payout_request("ETH", "1", PAYEE))
    with pytest.raises(WithdrawalChanged):
        ledger.check(batch([other], 0), POLICY, ledger.read(tmp_path), NOW)


def test_the_ledger_records_what_the_signer_found_and_older_lines_keep_their_bytes(tmp_path):
    w = unlisted(ETH, "1")
    treasury = BatchWithdrawal(str(uuid.uuid4()), "ETH", ETH, 18, None, OMNIBUS, "omnibus")
    sign(tmp_path, batch([w, treasury], 0))
    line = json.loads((tmp_path / ledger.FILE).read_text())
    assert line["transfers"][0] == {
        "id": w.id,
        "asset": "ETH",
        "amount": str(ETH),
        "destination": PAYEE,
        "hot": False,
        "customer": CUSTOMER,
        "kind": "unlisted",
        "request": {"backend": BACKEND_KEY, "idempotency_key": w.request.idempotency_key if w.request else ""},
    }
    assert set(line["transfers"][1]) == {"id", "asset", "amount", "destination", "hot"}  # as before issue 16
    key = w.request.idempotency_key if w.request else ""
    assert ledger.read(tmp_path)[0].transfers[0].request == (BACKEND_KEY, key)
    # rewriting which request was paid breaks the chain
    path = tmp_path / ledger.FILE
    path.write_text(path.read_text().replace('"idempotency_key":"', '"idempotency_key":"x'))
    with pytest.raises(LedgerDamaged):
        ledger.read(tmp_path)


def test_the_exporters_room_keeps_unlisted_payouts_and_requests_within_one_batch():
    room = ledger.BatchRoom(POLICY)
    first, second = unlisted(2 * ETH, "2"), unlisted(2 * ETH, "2")
    assert room.take(first, check_withdrawal(POLICY, first, NOW)) is None
    assert room.take(second, check_withdrawal(POLICY, second, NOW)) is None
    third = unlisted(2 * ETH, "2")
    assert "unlisted limit" in (room.take(third, check_withdrawal(POLICY, third, NOW)) or "")
    same = dataclasses.replace(unlisted(2 * ETH, "2"), request=first.request)
    assert "already" in (room.take(same, check_withdrawal(POLICY, same, NOW)) or "")


# -- Bitcoin: a destination signed in its all-uppercase QR spelling is the one the daemon stores in lowercase ---
BTC_PAYEE = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"  # BIP-173's first vector
BTC_POLICY = dataclasses.replace(
    POLICY,
    assets={
        **POLICY.assets,
        "BTC": dataclasses.replace(
            POLICY.assets["ETH"], symbol="BTC", decimals=8, contract=None, chain="bitcoin", network="mainnet",
            hot_limit=0, hot_min=None, hot_max=None, hot_min_share=None, hot_max_share=None, auto_freeze=None,
            hot_topup=None, max_fee=100_000, max_fee_rate=50,
        ),
    },
)


def btc_unlisted(signed_destination: str) -> BatchWithdrawal:
    return BatchWithdrawal(
        str(uuid.uuid4()), "BTC", 10**8, 8, None, BTC_PAYEE, "", customer=CUSTOMER, kind="unlisted",
        request=payout_request("BTC", "1", signed_destination),
    )


def test_a_bitcoin_destination_is_compared_in_its_canonical_form():
    assert check_withdrawal(BTC_POLICY, btc_unlisted(BTC_PAYEE.upper()), NOW).kind == Destination.UNLISTED
    assert check_withdrawal(BTC_POLICY, btc_unlisted(BTC_PAYEE), NOW).kind == Destination.UNLISTED
    other = "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3"  # BIP-173's P2WSH vector
    with pytest.raises(RequestMismatch, match="destination"):
        check_withdrawal(BTC_POLICY, btc_unlisted(other), NOW)
    with pytest.raises(RequestMismatch, match="destination"):
        check_withdrawal(BTC_POLICY, btc_unlisted("Bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"), NOW)  # mixed case
