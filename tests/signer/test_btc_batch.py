"""The Bitcoin batch file and signature file: one spelling each, every key required and no other, the PSBT in
the one form embit writes back, destinations canonical for the batch's network."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from embit.psbt import PSBT
from nacl.signing import SigningKey

from policies.canonical import canonical_bytes
from signer.batchfile import BatchWithdrawal
from signer.btcbatch import (
    BtcBatch,
    BtcSignature,
    canonical_psbt,
    parse_btc_batch_file,
    parse_btc_signature_file,
    sign_btc_batch_body,
    withdrawal_problem,
    write_btc_batch_file,
)
from signer.btckeys import account_key
from signer.btcwallet import parse_btc_cold_wallet
from signer.errors import BatchSignatureInvalid, BtcBatchInvalid
from tests.signer.btcfixtures import SAT, Spec, address_script, coin, wallet_bytes

DAEMON = SigningKey(bytes([9]) * 32)
KEYS = [account_key(bytes([0x50 + i]) * 64, "regtest") for i in range(3)]
WALLET = parse_btc_cold_wallet(wallet_bytes(KEYS, 2, DAEMON.verify_key.encode().hex()))
PAYEE, PAYEE_SCRIPT = address_script(0x71)
COIN = coin(WALLET, SAT)


def _batch(**changes: Any) -> BtcBatch:
    spec = Spec(WALLET, [COIN], [(PAYEE_SCRIPT, SAT // 2)], (0, SAT // 2 - 2000))
    w = BatchWithdrawal("00000000-0000-4000-8000-0000000000b1", "BTC", SAT // 2, 8, None, PAYEE, "omnibus")
    fields: dict[str, Any] = {
        "id": "00000000-0000-4000-8000-0000000000bb",
        "network": "regtest",
        "descriptor": WALLET.descriptor,
        "policy_version": 1,
        "policy_hash": "ab" * 32,
        "created_at": 1767225600,
        "expires_at": 1767225600 + 86400,
        "withdrawals": (w,),
        "psbt": spec.build().to_base64(),
    }
    fields.update(changes)
    return BtcBatch(**fields)


def _edited(edit: Any) -> bytes:
    body = json.loads(canonical_bytes(_batch().body()))
    edit(body)
    return sign_btc_batch_body(body, DAEMON)


def test_the_batch_round_trips_and_its_signature_verifies():
    raw = write_btc_batch_file(_batch(), DAEMON)
    parsed = parse_btc_batch_file(raw)
    assert parsed.batch == _batch() and write_btc_batch_file(parsed.batch, DAEMON) == raw
    parsed.verify_daemon_signature(DAEMON.verify_key.encode().hex())
    with pytest.raises(BatchSignatureInvalid):
        parsed.verify_daemon_signature(SigningKey(bytes([8]) * 32).verify_key.encode().hex())
    bumped = parse_btc_batch_file(write_btc_batch_file(_batch(replaces="00000000-0000-4000-8000-0000000000aa"), DAEMON))
    assert bumped.batch.replaces == "00000000-0000-4000-8000-0000000000aa"


def test_a_body_altered_after_signing_fails_the_daemon_signature():
    raw = write_btc_batch_file(_batch(), DAEMON)
    doc = json.loads(raw)
    doc["batch"]["withdrawals"][0]["amount"] = str(SAT)
    with pytest.raises(BatchSignatureInvalid):
        parse_btc_batch_file(canonical_bytes(doc)).verify_daemon_signature(DAEMON.verify_key.encode().hex())


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda b: b.update(extra=1), "unknown key"),
        (lambda b: b.pop("replaces"), "replaces"),
        (lambda b: b.update(replaces=b["id"]), "cannot replace itself"),
        (lambda b: b.update(network="litecoin"), "not a Bitcoin network"),
        (lambda b: b.update(withdrawals=[]), "1 to 500"),
        (lambda b: b["withdrawals"][0].update(token="0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"), "token null"),
        (lambda b: b["withdrawals"][0].update(decimals=18), "decimals 8"),
        (lambda b: b["withdrawals"][0].update(destination=PAYEE.upper()), "write the address as"),
        (lambda b: b["withdrawals"][0].update(destination="0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"), "Ethereum"),
        (lambda b: b["withdrawals"][0].update(destination=address_script(0x71)[0].replace("bcrt", "tb")), "batch"),
        (lambda b: b.update(psbt=b["psbt"].rstrip("=")), "base64"),
        (lambda b: b.update(psbt=base64.b64encode(b"not a psbt").decode()), "does not parse"),
        (lambda b: b.update(psbt=base64.b64encode(base64.b64decode(b["psbt"]) + b"\x00").decode()), "parse|written"),
    ],
)
def test_malformed_batches_are_refused(edit: Any, match: str):
    with pytest.raises(BtcBatchInvalid, match=match):
        parse_btc_batch_file(_edited(edit))


def test_a_non_canonical_document_is_refused():
    raw = write_btc_batch_file(_batch(), DAEMON)
    with pytest.raises(BtcBatchInvalid):
        parse_btc_batch_file(json.dumps(json.loads(raw), indent=1).encode())


def test_canonical_psbt_normalises_and_the_parser_then_accepts():
    psbt = PSBT.from_base64(_batch().psbt)
    assert canonical_psbt(_batch().psbt) == _batch().psbt == psbt.to_base64()


def test_withdrawal_problem_names_what_the_parser_would_refuse():
    (w,) = _batch().withdrawals
    assert withdrawal_problem(w, "regtest") is None
    assert withdrawal_problem(w, "mainnet") is not None
    assert withdrawal_problem(BatchWithdrawal(w.id, "BTC", 1, 18, None, PAYEE, ""), "regtest") is not None


def test_the_signature_file_round_trips_and_names_its_transaction():
    batch = _batch()
    txid = bytes(batch.parsed_psbt().tx.txid()).hex()
    sig = BtcSignature(batch.id, txid, KEYS[0].fingerprint, batch.psbt)
    assert parse_btc_signature_file(sig.to_bytes()) == sig
    with pytest.raises(BtcBatchInvalid, match="txid names"):
        parse_btc_signature_file(BtcSignature(batch.id, "00" * 32, KEYS[0].fingerprint, batch.psbt).to_bytes())
    doc = json.loads(sig.to_bytes())
    doc["extra"] = 1
    with pytest.raises(BtcBatchInvalid):
        parse_btc_signature_file(canonical_bytes(doc))
