"""A compromised online host against `signer review` / `signer sign`: every batch it could write to move cold
funds where the policy does not allow, each refused with its own code (docs/batch-protocol.md, "Attacks")."""

from __future__ import annotations

import json

from eth_utils.crypto import keccak

from policies.bundle import make_bundle, sign_bundle
from policies.loader import load_policy_toml
from signer.safetx import address_word, multisend_data, transfer_call, word
from tests.conftest import DENIED, MAKER, OMNIBUS
from tests.redteam.conftest import DAY, ETH, HOT, NOW, STRANGER, USDC_CONTRACT, policy_text, refused, signed


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


# -- 1. the transaction is what the review shows, and only MultiSendCallOnly may be delegatecalled ----------
def test_the_review_shows_the_transaction_decoded_from_the_signed_bytes(ceremony):
    eth, usdc = ceremony.withdrawal("ETH", 10 * ETH, MAKER), ceremony.withdrawal("USDC", 2_500_000)
    out = ceremony.review(ceremony.write(ceremony.batch([eth, usdc])), ok=True).output
    assert "operation  DELEGATECALL to MultiSendCallOnly 0x9641d764fc13c8B624c04430C7356C1C7C8102e2" in out
    assert f"pays 10 ETH ({10 * ETH} base units) to {MAKER}" in out
    assert f"pays 2.5 USDC (2500000 base units) to {OMNIBUS} (ERC-20 transfer on {USDC_CONTRACT})" in out
    assert f"withdrawal {eth.id}" in out and f"withdrawal {usdc.id}" in out
    assert "value      0 wei" in out


def test_delegatecall_to_anything_but_the_canonical_multisend_is_refused(ceremony):
    batch = ceremony.batch([ceremony.withdrawal("ETH", ETH), ceremony.withdrawal("ETH", ETH, MAKER)])
    raw = ceremony.edited(batch, lambda b: b["safe_tx"].update(to=STRANGER))
    assert "not the pinned MultiSendCallOnly" in refused(ceremony.sign(raw), "batch_mismatch")
    raw = ceremony.edited(batch, lambda b: b.update(multisend=STRANGER))
    refused(ceremony.sign(raw), "batch_wrong_wallet")


# -- 2. velocity windows and the hot wallet's top-up cap, offline ------------------------------------------
def test_one_batch_over_the_hourly_window_is_refused(ceremony):
    """500 x 100 ETH, each within the per-transfer maximum, against 250 ETH per hour."""
    items = [ceremony.withdrawal("ETH", 100 * ETH) for _ in range(500)]
    message = refused(ceremony.sign(ceremony.write(ceremony.batch(items))), "batch_over_window")
    assert "ETH" in message and "250" in message


def test_windows_add_up_across_batches_from_the_signers_own_ledger(ceremony):
    signed(ceremony.sign(ceremony.write(ceremony.batch([ceremony.withdrawal("ETH", 100 * ETH)] * 1, nonce=0))))
    two = [ceremony.withdrawal("ETH", 100 * ETH), ceremony.withdrawal("ETH", 50 * ETH, MAKER)]
    signed(ceremony.sign(ceremony.write(ceremony.batch(two, nonce=1))))  # 250: exactly the limit
    one_more = ceremony.batch([ceremony.withdrawal("ETH", 1)], nonce=2)  # one wei over
    refused(ceremony.sign(ceremony.write(one_more)), "batch_over_window")
    # another operator's signer has its own ledger: it has signed nothing yet
    signed(ceremony.sign(ceremony.write(one_more), who=1))


def test_a_top_up_of_the_hot_wallet_beyond_the_policys_cap_is_refused(ceremony):
    """Every top-up lands where the attacker holds the key; the policy caps them at 50 ETH a day."""
    items = [ceremony.withdrawal("ETH", 20 * ETH, HOT) for _ in range(3)]
    assert "hot wallet" in refused(ceremony.sign(ceremony.write(ceremony.batch(items))), "batch_topup_over_limit")
    signed(ceremony.sign(ceremony.write(ceremony.batch(items[:2], nonce=0))))  # 40 ETH
    later = ceremony.batch([ceremony.withdrawal("ETH", 20 * ETH, HOT)], nonce=1)
    refused(ceremony.sign(ceremony.write(later)), "batch_topup_over_limit")
    out = ceremony.review(ceremony.write(ceremony.batch([ceremony.withdrawal("ETH", 5 * ETH, HOT)], nonce=1)), ok=True)
    assert "TOP-UP OF THE HOT WALLET" in out.output


# -- 3. one withdrawal, two transactions --------------------------------------------------------------------
def test_a_withdrawal_signed_at_one_nonce_is_refused_at_another(ceremony):
    w = ceremony.withdrawal("ETH", 3 * ETH)
    signed(ceremony.sign(ceremony.write(ceremony.batch([w], nonce=7))))
    message = refused(ceremony.sign(ceremony.write(ceremony.batch([w], nonce=8))), "withdrawal_already_signed")
    assert w.id in message and "nonce 7" in message
    # a re-export at the same nonce (the first batch expired) is signed: only one of the two can execute
    signed(ceremony.sign(ceremony.write(ceremony.batch([w], nonce=7))))


def test_the_ledger_is_hash_chained_and_an_edited_ledger_stops_signing(ceremony):
    signed(ceremony.sign(ceremony.write(ceremony.batch([ceremony.withdrawal("ETH", ETH)], nonce=0))))
    path = ceremony.states[0] / "ledger.jsonl"
    entry = json.loads(path.read_text())
    assert entry["seq"] == 1 and entry["safe_nonce"] == 0 and entry["transfers"][0]["amount"] == str(ETH)
    path.write_text(path.read_text().replace(str(ETH), str(2 * ETH)))
    batch = ceremony.batch([ceremony.withdrawal("ETH", ETH)], nonce=1)
    refused(ceremony.sign(ceremony.write(batch)), "signer_ledger_damaged")


# -- 4. nonces and times the signer bounds -------------------------------------------------------------------
def test_a_far_future_nonce_for_stockpiled_signatures_is_refused(ceremony):
    batch = ceremony.batch([ceremony.withdrawal("ETH", ETH)], nonce=1_000_000)
    refused(ceremony.sign(ceremony.write(batch)), "batch_nonce_too_far")
    signed(ceremony.sign(ceremony.write(ceremony.batch([ceremony.withdrawal("ETH", ETH)], nonce=16))))
    signed(ceremony.sign(ceremony.write(ceremony.batch([ceremony.withdrawal("ETH", ETH)], nonce=32))))
    refused(
        ceremony.sign(ceremony.write(ceremony.batch([ceremony.withdrawal("ETH", ETH)], nonce=49))),
        "batch_nonce_too_far",
    )


def test_batches_that_live_too_long_or_come_from_the_future_are_refused(ceremony):
    w = ceremony.withdrawal("ETH", ETH)
    year_9999 = 253402300799
    refused(ceremony.sign(ceremony.write(ceremony.batch([w], lifetime=year_9999 - NOW))), "batch_time_invalid")
    refused(ceremony.sign(ceremony.write(ceremony.batch([w], lifetime=7 * DAY + 1))), "batch_time_invalid")
    refused(ceremony.sign(ceremony.write(ceremony.batch([w], created_at=NOW + 30 * DAY))), "batch_time_invalid")
    signed(ceremony.sign(ceremony.write(ceremony.batch([w], lifetime=7 * DAY))))


def test_a_date_that_cannot_be_displayed_is_refused_without_a_traceback(ceremony):
    batch = ceremony.batch([ceremony.withdrawal("ETH", ETH)])
    result = ceremony.review(ceremony.edited(batch, lambda b: b.update(expires_at=2**40)))
    refused(result, "batch_invalid")
    assert "Traceback" not in result.output


# -- what the signer refused before the ledger existed: kept, each with its code ------------------------------
def _safe_self_call(selector: str, *args: bytes) -> bytes:
    return _selector(selector) + b"".join(args)


SELF_CALLS = {
    "addOwnerWithThreshold": _safe_self_call("addOwnerWithThreshold(address,uint256)", address_word(STRANGER), word(1)),
    "changeThreshold": _safe_self_call("changeThreshold(uint256)", word(1)),
    "enableModule": _safe_self_call("enableModule(address)", address_word(STRANGER)),
    "setGuard": _safe_self_call("setGuard(address)", address_word(STRANGER)),
    "setFallbackHandler": _safe_self_call("setFallbackHandler(address)", address_word(STRANGER)),
}


def test_self_calls_that_change_the_safe_are_refused(ceremony):
    batch = ceremony.batch([ceremony.withdrawal("ETH", ETH)])
    for name, data in SELF_CALLS.items():
        raw = ceremony.edited(
            batch, lambda b, d=data: b["safe_tx"].update(to=ceremony.cold.safe, value="0", data="0x" + d.hex())
        )
        assert refused(ceremony.sign(raw), "batch_mismatch"), name
        # hidden among real transfers inside the MultiSendCallOnly call
        calls = [transfer_call(None, OMNIBUS, ETH), transfer_call(None, ceremony.cold.safe, 0)._replace(data=data)]
        two = ceremony.batch([ceremony.withdrawal("ETH", ETH), ceremony.withdrawal("ETH", ETH, MAKER)])
        raw = ceremony.edited(two, lambda b, c=calls: b["safe_tx"].update(data="0x" + multisend_data(c).hex()))
        refused(ceremony.sign(raw), "batch_mismatch")


def test_approve_or_transfer_from_instead_of_transfer_is_refused(ceremony):
    batch = ceremony.batch([ceremony.withdrawal("USDC", 10**6)])
    for signature in ("approve(address,uint256)", "transferFrom(address,address,uint256)"):
        data = _selector(signature) + address_word(STRANGER) + word(2**256 - 1)
        raw = ceremony.edited(batch, lambda b, d=data: b["safe_tx"].update(data="0x" + d.hex()))
        refused(ceremony.sign(raw), "batch_mismatch")


ALREADY_REFUSED = {
    "gas refund to the host": (
        lambda b: b["safe_tx"].update(gas_price="1", refund_receiver=STRANGER),
        "batch_mismatch",
    ),
    "token swapped in the list": (lambda b: b["withdrawals"][0].update(token=STRANGER), "batch_policy_refused"),
    "recipient swapped in the calldata": (
        lambda b: b["safe_tx"].update(data=b["safe_tx"]["data"].replace(OMNIBUS[2:].lower(), STRANGER[2:].lower())),
        "batch_mismatch",
    ),
    "another chain": (lambda b: b.update(chain_id=1), "batch_wrong_wallet"),
    "another Safe": (lambda b: b.update(safe=STRANGER), "batch_wrong_wallet"),
    "nonce differs from the SafeTx's": (lambda b: b.update(safe_nonce=b["safe_nonce"] + 1), "batch_mismatch"),
    "SafeTx hash of something else": (lambda b: b.update(safe_tx_hash="0x" + "ab" * 32), "batch_mismatch"),
    "expired": (lambda b: b.update(created_at=NOW - 2 * DAY, expires_at=NOW - 1), "batch_expired"),
    "denied destination": (lambda b: b["withdrawals"][0].update(destination=DENIED), "batch_policy_refused"),
    "destination not whitelisted": (lambda b: b["withdrawals"][0].update(destination=STRANGER), "batch_policy_refused"),
    "label that rewrites the screen": (lambda b: b["withdrawals"][0].update(label="omni\u202ebus"), "batch_invalid"),
    "label not the policy's": (lambda b: b["withdrawals"][0].update(label="cold storage"), "batch_policy_refused"),
}


def test_every_tampering_already_refused_stays_refused(ceremony):
    batch = ceremony.batch([ceremony.withdrawal("USDC", 10**6)])
    for name, (edit, code) in ALREADY_REFUSED.items():
        assert refused(ceremony.sign(ceremony.edited(batch, edit)), code), name
    assert not (ceremony.states[0] / "ledger.jsonl").exists()  # nothing refused was recorded as signed


def test_a_batch_not_signed_by_the_pinned_daemon_key_is_refused(ceremony):
    raw = bytearray(ceremony.write(ceremony.batch([ceremony.withdrawal("ETH", ETH)])))
    at = raw.index(b'"signature":"') + 13
    raw[at] = ord("0") if raw[at] != ord("0") else ord("1")
    refused(ceremony.sign(bytes(raw)), "batch_daemon_signature_invalid")


def test_a_batch_under_an_older_policy_is_refused_after_a_newer_one(ceremony):
    """Rollback: the host keeps citing bundle v1 after admins tightened the policy in v2."""
    admins = [(op.name, op.card["approval_key"]) for op in ceremony.operators]
    created = NOW - 30
    v2 = make_bundle(load_policy_toml(policy_text(admins, created)), ceremony.bundle.head(), created)
    path = ceremony.file(v2.raw, "bundle-2.json")
    sigs = [
        ceremony.file(sign_bundle(v2.hash, op.approval).to_bytes(), f"v2.{i}.sig")
        for i, op in enumerate(ceremony.operators[:2])
    ]
    ceremony.run("policy", "accept", path, *sigs, ok=True)
    old = ceremony.batch([ceremony.withdrawal("ETH", ETH)])
    assert "newest policy" in refused(ceremony.sign(ceremony.write(old)), "batch_policy_refused")
    v1_sig = ceremony.file(sign_bundle(ceremony.bundle.hash, ceremony.operators[0].approval).to_bytes())
    refused(ceremony.run("policy", "accept", ceremony.file(ceremony.bundle.raw), v1_sig), "bundle_rollback")


# -- found by the red-team review -------------------------------------------------------------------------------
def test_a_re_export_at_the_same_nonce_must_pay_exactly_what_was_signed(ceremony):
    """A 1-wei "anchor" re-exported at its nonce as a 40 ETH top-up would be counted at 1 wei for ever."""
    anchor = ceremony.withdrawal("ETH", 1, HOT)
    signed(ceremony.sign(ceremony.write(ceremony.batch([anchor], nonce=0))))
    big = ceremony.withdrawal("ETH", 40 * ETH, HOT, wid=anchor.id)
    refused(ceremony.sign(ceremony.write(ceremony.batch([big], nonce=0))), "withdrawal_changed")
    elsewhere = ceremony.withdrawal("ETH", 1, MAKER, wid=anchor.id)
    refused(ceremony.sign(ceremony.write(ceremony.batch([elsewhere], nonce=0))), "withdrawal_changed")


def test_the_same_safetx_relabelled_binds_its_new_withdrawal_ids(ceremony):
    x = ceremony.withdrawal("ETH", 3 * ETH, MAKER)
    signed(ceremony.sign(ceremony.write(ceremony.batch([x], nonce=7))))
    y = ceremony.withdrawal("ETH", 3 * ETH, MAKER)
    relabelled = ceremony.batch([y], nonce=7)
    signed(ceremony.sign(ceremony.write(relabelled)))  # the same transaction: harmless, but y is now bound to 7
    refused(ceremony.sign(ceremony.write(ceremony.batch([y], nonce=8))), "withdrawal_already_signed")


CRAFTED = {
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "a 5000-digit number": b'{"format":' + b"1" * 5000 + b"}",
    "a lone surrogate": b'{"format":1,"kind":"\\ud800"}',
}


def test_crafted_json_is_refused_with_a_code_not_a_traceback(ceremony):
    for name, raw in CRAFTED.items():
        path = ceremony.file(raw)
        for command in (("review",), ("policy", "review"), ("policy", "pin", "--yes"), ("cold", "pin", "--yes")):
            result = (
                ceremony.run(*command[:2], path, *command[2:]) if len(command) > 1 else ceremony.run("review", path)
            )
            assert result.exit_code == 1 and "error [" in result.output, (name, command, result.output)


def test_text_quoted_from_a_file_in_an_error_is_escaped(ceremony):
    batch = ceremony.batch([ceremony.withdrawal("ETH", ETH)])
    message = refused(
        ceremony.review(ceremony.edited(batch, lambda b: b.update({"omni\u202ebus": 1}))), "batch_invalid"
    )
    assert "\u202e" not in message and "\\u202e" in message
