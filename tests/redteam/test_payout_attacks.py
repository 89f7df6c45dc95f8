"""A compromised online host against customer payouts (issue 16): it writes cold batches paying addresses that
are not on the treasury whitelist, and signs them with the daemon key it holds. What it does not hold is the
exchange backend's request key or an operator's review key (both declared in the quorum-signed policy), so
every payout it invents, alters or replays is refused by the real `signer sign`, with its own code, and no
signature file is written (docs/batch-protocol.md, "Attacks")."""

from __future__ import annotations

import dataclasses
import json

import pytest
from eth_utils.address import to_checksum_address

from policies.bundle import make_bundle, sign_bundle
from policies.loader import load_policy_toml
from tests.conftest import DENIED, OMNIBUS
from tests.redteam.conftest import (
    ATTACKER,
    BACKEND,
    CUSTOMER,
    DAY,
    ETH,
    NOW,
    PAYEE,
    accept_payout_policy,
    approval,
    book_request,
    payout,
    payout_policy_text,
    payout_request,
    refused_unsigned,
    signed,
)

ELSEWHERE = "0x3333333333333333333333333333333333333333"  # where the host would rather send it
LOOKALIKE = to_checksum_address("0x" + DENIED[2:6] + "0" * 32 + DENIED[-4:])  # same first and last 4 hex digits
USDC = 10**6


@pytest.fixture
def host(ceremony):
    """The ceremony after the admins accepted the payout policy: one backend, two operators, ETH allowed to
    unlisted addresses up to 2 ETH a transfer and 5 ETH a day, USDC not at all."""
    accept_payout_policy(ceremony)
    return ceremony


# -- the payouts that must go through ------------------------------------------------------------------------
def test_a_properly_signed_unlisted_payout_within_limits_is_signed(host):
    w = payout(host, "ETH", 3 * ETH // 2, request=payout_request("ETH", "1.5", PAYEE))
    raw = host.write(host.batch([w]))
    out = host.review(raw, ok=True).output
    assert f"customer {CUSTOMER}: UNLISTED ADDRESS" in out
    assert f"requested by backend backend, idempotency key {w.request.idempotency_key}" in out
    signed(host.sign(raw))
    line = json.loads((host.states[0] / "ledger.jsonl").read_text().splitlines()[-1])
    transfer = line["transfers"][0]
    assert (transfer["kind"], transfer["customer"]) == ("unlisted", CUSTOMER)
    backend = BACKEND.verify_key.encode().hex()  # the ledger knows the backend by its key, not its name
    assert transfer["request"] == {"backend": backend, "idempotency_key": w.request.idempotency_key}


def test_an_address_book_payout_past_its_lock_is_signed_as_one(host):
    """USDC allows no unlisted payout: only the backend's signed address-book entry, older than the lock, lets
    this one through."""
    book = book_request("USDC", PAYEE, "Alice's Ledger", at=NOW - 4 * DAY)
    w = payout(
        host,
        "USDC",
        2500 * USDC,
        kind="address_book",
        request=payout_request("USDC", "2500", PAYEE),
        book=book,
        label="Alice's Ledger",
    )
    raw = host.write(host.batch([w]))
    out = host.review(raw, ok=True).output
    assert f"customer {CUSTOMER}: ADDRESS BOOK" in out and "Alice's Ledger" in out
    signed(host.sign(raw))
    assert "address_book" in (host.states[0] / "ledger.jsonl").read_text()


# -- invented, altered or replayed payouts ---------------------------------------------------------------------
def test_an_unlisted_payout_without_the_backends_request_is_refused(host):
    raw = host.write(host.batch([payout(host, "ETH", ETH)]))
    assert "no request signed by the exchange backend" in refused_unsigned(host, raw, "request_missing")
    # the same destination listed as the treasury's own transfer (no customer) is not whitelisted either
    treasury = host.withdrawal("ETH", ETH, PAYEE)
    refused_unsigned(host, host.write(host.batch([treasury])), "batch_policy_refused")


def test_a_request_signed_by_a_key_not_in_the_policy_is_refused(host):
    as_backend = payout_request("ETH", "1", PAYEE, key=ATTACKER)  # the backend's name, the host's own key
    raw = host.write(host.batch([payout(host, "ETH", ETH, request=as_backend)]))
    refused_unsigned(host, raw, "request_bad_signature")
    own_name = payout_request("ETH", "1", PAYEE, key=ATTACKER, name="mallory")
    raw = host.write(host.batch([payout(host, "ETH", ETH, request=own_name)]))
    assert "'mallory'" in refused_unsigned(host, raw, "request_unknown_backend")


def test_a_payout_of_another_amount_than_the_backend_signed_is_refused(host):
    request = payout_request("ETH", "1", PAYEE)
    raw = host.write(host.batch([payout(host, "ETH", 2 * ETH, request=request)]))
    assert "amount 1 ETH where the withdrawal pays 2 ETH" in refused_unsigned(host, raw, "request_mismatch")
    # or the signed body rewritten to match: the backend's signature no longer holds
    body = json.dumps({"asset": "ETH", "amount": "2", "destination": PAYEE, "customer": CUSTOMER}).encode()
    rewritten = dataclasses.replace(request, body=body)
    raw = host.write(host.batch([payout(host, "ETH", 2 * ETH, request=rewritten)]))
    refused_unsigned(host, raw, "request_bad_signature")


def test_a_payout_to_another_destination_or_customer_than_signed_is_refused(host):
    request = payout_request("ETH", "1", PAYEE)
    raw = host.write(host.batch([payout(host, "ETH", ETH, ELSEWHERE, request=request)]))
    assert f"destination {PAYEE!r}" in refused_unsigned(host, raw, "request_mismatch")
    raw = host.write(host.batch([payout(host, "ETH", ETH, request=request, customer="cust-43")]))
    refused_unsigned(host, raw, "request_mismatch")
    # a signed request for something else (adding an address) passed off as a payout request
    other = book_request("ETH", PAYEE, "mine", at=NOW - 60)
    raw = host.write(host.batch([payout(host, "ETH", ETH, request=other)]))
    assert "not POST /v1/withdrawals" in refused_unsigned(host, raw, "request_mismatch")


def test_the_same_signed_request_in_two_batches_is_paid_once(host):
    request = payout_request("ETH", "1", PAYEE)
    first = payout(host, "ETH", ETH, request=request)
    signed(host.sign(host.write(host.batch([first], nonce=0))))
    again = payout(host, "ETH", ETH, request=request)  # the same request under a new withdrawal id
    message = refused_unsigned(host, host.write(host.batch([again], nonce=1)), "request_replayed")
    assert first.id in message and request.idempotency_key in message
    # the backend's retry (signed anew, same idempotency key) is the same payment
    retry = payout_request("ETH", "1", PAYEE, at=NOW - 30, idempotency_key=request.idempotency_key)
    raw = host.write(host.batch([payout(host, "ETH", ETH, request=retry)], nonce=1))
    refused_unsigned(host, raw, "request_replayed")
    # one request twice in one batch
    fresh = payout_request("ETH", "0.5", PAYEE)
    twice = [payout(host, "ETH", ETH // 2, request=fresh), payout(host, "ETH", ETH // 2, request=fresh)]
    refused_unsigned(host, host.write(host.batch(twice, nonce=1)), "request_replayed")
    # the same withdrawal re-exported at its own nonce (its batch expired) is signed: one transaction at most
    signed(host.sign(host.write(host.batch([first], nonce=0))))


def test_an_address_book_entry_younger_than_the_lock_proves_nothing(host):
    """Signed an hour before the payout request, under a one-day lock: judged unlisted, so refused for USDC
    (no unlisted payouts) and held to ETH's unlisted limits."""
    young = book_request("USDC", PAYEE, "Alice's Ledger", at=NOW - 3600)
    w = payout(
        host,
        "USDC",
        USDC,
        kind="address_book",
        request=payout_request("USDC", "1", PAYEE),
        book=young,
        label="Alice's Ledger",
    )
    refused_unsigned(host, host.write(host.batch([w])), "unlisted_refused")
    young_eth = book_request("ETH", PAYEE, "Alice's Ledger", at=NOW - 3600)
    w = payout(
        host,
        "ETH",
        3 * ETH,
        kind="address_book",
        request=payout_request("ETH", "3", PAYEE),
        book=young_eth,
        label="Alice's Ledger",
    )
    refused_unsigned(host, host.write(host.batch([w])), "unlisted_over_limit")


def test_an_address_book_proof_the_backend_did_not_sign_is_refused(host):
    request = payout_request("USDC", "1", PAYEE)
    for book, why in (
        (book_request("USDC", PAYEE, "Alice", at=NOW - 4 * DAY, key=ATTACKER), "does not verify"),
        (book_request("USDC", ELSEWHERE, "Alice", at=NOW - 4 * DAY), "address"),
        (book_request("USDC", PAYEE, "Alice", "cust-43", at=NOW - 4 * DAY), "customer"),
        (book_request("ETH", PAYEE, "Alice", at=NOW - 4 * DAY), "asset"),
    ):
        w = payout(host, "USDC", USDC, kind="address_book", request=request, book=book, label="Alice")
        assert why in refused_unsigned(host, host.write(host.batch([w])), "book_request_invalid")


def test_unlisted_payouts_add_up_over_the_signers_ledger(host):
    for nonce in range(2):  # 2 + 2 ETH to unlisted addresses, each at the per-transfer maximum
        w = payout(host, "ETH", 2 * ETH, request=payout_request("ETH", "2", PAYEE))
        signed(host.sign(host.write(host.batch([w], nonce=nonce))))
    signed(host.sign(host.write(host.batch([host.withdrawal("ETH", 50 * ETH, OMNIBUS)], nonce=2))))  # whitelisted
    w = payout(host, "ETH", 3 * ETH // 2, request=payout_request("ETH", "1.5", PAYEE))
    assert "unlisted limit of 5 ETH" in refused_unsigned(
        host, host.write(host.batch([w], nonce=3)), "unlisted_over_window"
    )
    w = payout(host, "ETH", ETH, request=payout_request("ETH", "1", PAYEE))
    signed(host.sign(host.write(host.batch([w], nonce=3))))  # exactly 5 ETH


# -- four eyes -----------------------------------------------------------------------------------------------
def test_a_held_payout_without_two_distinct_operators_approvals_is_refused(host):
    request = payout_request("ETH", "1", PAYEE)
    w = payout(host, "ETH", ETH, request=request)
    one = dataclasses.replace(w, approvals=(approval("olga", w.id),))
    assert "valid approvals from olga" in refused_unsigned(host, host.write(host.batch([one])), "approvals_missing")
    # the host drops the approvals of a payout it can see was held: an address like a denied one
    lookalike = payout(host, "ETH", ETH, LOOKALIKE, request=payout_request("ETH", "1", LOOKALIKE))
    message = refused_unsigned(host, host.write(host.batch([lookalike])), "approvals_missing")
    assert f"looks like denied address {DENIED}" in message
    # or an address-book entry younger than the policy's three days
    book = book_request("ETH", PAYEE, "Alice", at=NOW - 2 * DAY)
    young = payout(host, "ETH", ETH, kind="address_book", request=request, book=book, label="Alice")
    assert "less than 3d" in refused_unsigned(host, host.write(host.batch([young])), "approvals_missing")
    # with both operators' approvals each one is signed
    both = [approval("olga", young.id), approval("piotr", young.id)]
    signed(host.sign(host.write(host.batch([dataclasses.replace(young, approvals=tuple(both))], nonce=0))))
    both = [approval("olga", lookalike.id), approval("piotr", lookalike.id)]
    raw = host.write(host.batch([dataclasses.replace(lookalike, approvals=tuple(both))], nonce=1))
    assert "held, approved by olga, piotr" in host.review(raw, ok=True).output
    signed(host.sign(raw))


def test_an_approval_not_signed_by_a_policy_operator_is_refused(host):
    w = payout(host, "ETH", ETH, request=payout_request("ETH", "1", PAYEE))
    olga = approval("olga", w.id)
    for forged, why in (
        (approval("mallory", w.id, key=ATTACKER), "'mallory' is not one of the policy's operators"),
        (approval("piotr", w.id, key=ATTACKER), "not signed with their key"),
        (approval("piotr", "00000000-0000-4000-8000-000000000000"), "not signed with their key"),  # another's
        (approval("piotr", w.id, decision="reject"), "rejected"),
    ):
        both = tuple(sorted((olga, forged), key=lambda a: a.operator))  # as the exporter lists them
        raw = host.write(host.batch([dataclasses.replace(w, approvals=both)]))
        assert why in refused_unsigned(host, raw, "approval_invalid")


def test_a_small_payout_the_hot_wallet_may_have_paid_is_not_signed_from_the_safe(host):
    """The backend asked for 0.1 ETH; the daemon paid it from the hot wallet (it is within the 0.1 ETH hot limit).
    The host lists the same genuine request in a cold batch: the signer cannot see the hot wallet, so it never
    signs a customer payout that could have been paid hot."""
    w = payout(host, "ETH", ETH // 10, request=payout_request("ETH", "0.1", PAYEE))
    raw = host.write(host.batch([w]))
    assert "at or below the hot limit of 0.1 ETH" in refused_unsigned(host, raw, "customer_payout_hot_only")
    just_above = payout(host, "ETH", ETH // 10 + 1, request=payout_request("ETH", "0.100000000000000001", PAYEE))
    signed(host.sign(host.write(host.batch([just_above]))))


def test_a_request_already_paid_is_not_paid_again_under_the_backends_new_name(host):
    """A later bundle gives the backend's key another name. The request's signature does not cover the name, so
    the host relabels a request the Safe already paid: the ledger knows requests by the backend's public key."""
    request = payout_request("ETH", "1.5", PAYEE)
    signed(host.sign(host.write(host.batch([payout(host, "ETH", 3 * ETH // 2, request=request)], nonce=0))))
    admins = [(op.name, op.card["approval_key"]) for op in host.operators]
    active = next(iter(host.bundle.policy.whitelist.values())).active_from  # the entries as they are
    renamed = payout_policy_text(admins, active).replace('name = "backend"', 'name = "exchange"')
    bundle = make_bundle(load_policy_toml(renamed), host.bundle.head(), NOW - 10)
    sigs = [
        host.file(sign_bundle(bundle.hash, op.approval).to_bytes(), f"renamed.{i}.sig")
        for i, op in enumerate(host.operators[:2])
    ]
    host.run("policy", "accept", host.file(bundle.raw, "renamed.json"), *sigs, ok=True)
    host.bundle = bundle
    relabelled = dataclasses.replace(request, key="exchange")  # the name is not signed: it still verifies
    raw = host.write(host.batch([payout(host, "ETH", 3 * ETH // 2, request=relabelled)], nonce=1))
    assert "already signed for withdrawal" in refused_unsigned(host, raw, "request_replayed")
