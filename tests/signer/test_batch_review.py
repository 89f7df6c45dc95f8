"""The batch file as the signer sees it: the SafeTx hash against an independent implementation, and every
tampering a compromised online host could try, each refused with its own reason."""

from __future__ import annotations

import copy
import time
import uuid

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from nacl.signing import SigningKey

from policies.bundle import make_bundle, parse_genesis
from policies.loader import load_policy_toml
from signer.batchfile import (
    BatchWithdrawal,
    OwnerSignature,
    parse_batch_file,
    parse_signature_file,
    sign_batch_body,
    write_batch_file,
)
from signer.coldwallet import ColdWallet, parse_cold_wallet
from signer.errors import (
    BatchExpired,
    BatchInvalid,
    BatchMismatch,
    BatchPolicyRefused,
    BatchSignatureInvalid,
    BatchWrongWallet,
)
from signer.review import assemble, describe, review
from signer.safecontracts import MULTISEND_CALL_ONLY, safe_address
from signer.safetx import SafeTx, recover_owner, safe_tx_hash, sign_hash
from tests.conftest import DAY, DENIED, MAKER, OMNIBUS, governance_for_tests, policy_toml

STRANGER = "0x2222222222222222222222222222222222222222"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
DAEMON = SigningKey(bytes([9]) * 32)
OWNER_KEYS = [bytes([0x40 + i]) * 32 for i in range(3)]
OWNERS = tuple(Account.from_key(k).address for k in OWNER_KEYS)
SAFE = safe_address(OWNERS, 2, 0)  # the Safe the canonical factory makes for these owners
MULTISEND = MULTISEND_CALL_ONLY
NOW = int(time.time())


@pytest.fixture(scope="module")
def setup():
    from policies.bundle import genesis_bytes

    genesis = parse_genesis(genesis_bytes(governance_for_tests(), NOW - 4 * DAY))
    bundle = make_bundle(load_policy_toml(policy_toml(NOW)), genesis, NOW - 3 * DAY)
    cold = ColdWallet(
        chain_id=31337,
        safe=SAFE,
        owners=OWNERS,
        threshold=2,
        multisend=MULTISEND,
        daemon_key=DAEMON.verify_key.encode().hex(),
    )
    items = [
        BatchWithdrawal(str(uuid.uuid4()), "ETH", 12 * 10**18, 18, None, OMNIBUS, "omnibus"),
        BatchWithdrawal(str(uuid.uuid4()), "USDC", 250_000 * 10**6, 6, USDC, OMNIBUS, "omnibus"),
        BatchWithdrawal(str(uuid.uuid4()), "ETH", 7 * 10**18 + 1, 18, None, MAKER, "maker"),
    ]
    batch = assemble(
        batch_id=str(uuid.uuid4()),
        chain_id=31337,
        safe=SAFE,
        safe_nonce=4,
        multisend=MULTISEND,
        policy_version=bundle.version,
        policy_hash=bundle.hash,
        created_at=NOW,
        expires_at=NOW + DAY,
        withdrawals=items,
        policy=bundle.policy,
    )
    return bundle, cold, batch, write_batch_file(batch, DAEMON)


def test_an_honest_batch_passes_and_is_described_for_the_operator(setup):
    bundle, cold, batch, raw = setup
    assert review(raw, cold, bundle, NOW) == batch
    text = "\n".join(describe(batch, bundle.policy, bundle.version))
    assert "0x" + batch.safe_tx_hash.hex() in text
    assert "ETH" in text and "19.000000000000000001" in text  # 12 + 7 ETH + 1 wei, in 2 transfers
    assert "250000" in text and "omnibus" in text and "maker" in text
    assert f"v{bundle.version}" in text
    assert parse_cold_wallet(cold.to_bytes()) == cold


def test_safe_tx_hash_and_signature_agree_with_eth_account(setup):
    _, _, batch, _ = setup
    tx = batch.safe_tx
    typed = {
        "types": {
            "EIP712Domain": [{"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
            "SafeTx": [
                {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "data", "type": "bytes"},
                {"name": "operation", "type": "uint8"},
                {"name": "safeTxGas", "type": "uint256"},
                {"name": "baseGas", "type": "uint256"},
                {"name": "gasPrice", "type": "uint256"},
                {"name": "gasToken", "type": "address"},
                {"name": "refundReceiver", "type": "address"},
                {"name": "nonce", "type": "uint256"},
            ],
        },
        "primaryType": "SafeTx",
        "domain": {"chainId": 31337, "verifyingContract": SAFE},
        "message": {
            "to": tx.to,
            "value": tx.value,
            "data": tx.data,
            "operation": tx.operation,
            "safeTxGas": 0,
            "baseGas": 0,
            "gasPrice": 0,
            "gasToken": tx.gas_token,
            "refundReceiver": tx.refund_receiver,
            "nonce": tx.nonce,
        },
    }
    assert bytes(_hash_eip191_message(encode_typed_data(full_message=typed))) == batch.safe_tx_hash
    ours = sign_hash(OWNER_KEYS[0], batch.safe_tx_hash)
    theirs = Account.sign_typed_data(OWNER_KEYS[0], full_message=typed).signature
    assert ours == bytes(theirs)
    assert recover_owner(batch.safe_tx_hash, ours) == Account.from_key(OWNER_KEYS[0]).address


def test_malleable_or_malformed_owner_signatures_are_refused(setup):
    _, _, batch, _ = setup
    sig = sign_hash(OWNER_KEYS[1], batch.safe_tx_hash)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = sig[:32] + (n - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") + bytes([55 - sig[64]])
    with pytest.raises(ValueError, match="low-s"):
        recover_owner(batch.safe_tx_hash, high_s)
    with pytest.raises(ValueError, match="v 27 or 28"):
        recover_owner(batch.safe_tx_hash, sig[:64] + b"\x00")
    # a signature file that names another owner than the one who signed
    file = OwnerSignature(batch.id, 31337, SAFE, 4, batch.safe_tx_hash, STRANGER, sig)
    with pytest.raises(BatchInvalid, match="claims owner"):
        parse_signature_file(file.to_bytes()).recovered_owner()


def _resign(body: dict, key: SigningKey = DAEMON) -> bytes:
    return sign_batch_body(body, key)


def _swap_in_calldata(body: dict) -> None:
    data = body["safe_tx"]["data"]
    body["safe_tx"]["data"] = data.replace(OMNIBUS[2:].lower(), MAKER[2:].lower(), 1)


def _add_withdrawal(body: dict) -> None:
    extra = dict(body["withdrawals"][0], id=str(uuid.uuid4()))
    body["withdrawals"].append(extra)


# Each mutation is made by an attacker who controls the online host, so the file is re-signed with the
# daemon's real key afterwards (except where the signature itself is the target).
MUTATIONS = {
    "amount": (lambda b: b["withdrawals"][0].update(amount=str(13 * 10**18)), BatchMismatch, "calldata"),
    "destination in the list": (
        lambda b: b["withdrawals"][2].update(destination=STRANGER),
        BatchPolicyRefused,
        "not on the whitelist",
    ),
    "destination in the calldata": (_swap_in_calldata, BatchMismatch, "calldata"),
    "denied destination": (lambda b: b["withdrawals"][2].update(destination=DENIED), BatchPolicyRefused, "deny list"),
    "token": (lambda b: b["withdrawals"][1].update(token=STRANGER), BatchPolicyRefused, "token contract"),
    "decimals": (lambda b: b["withdrawals"][1].update(decimals=18), BatchPolicyRefused, "decimals"),
    "label": (lambda b: b["withdrawals"][0].update(label="our exchange"), BatchPolicyRefused, "labels"),
    "over the per-transfer maximum": (
        lambda b: b["withdrawals"][0].update(amount=str(101 * 10**18)),
        BatchPolicyRefused,
        "over the per-transfer maximum",
    ),
    "disabled asset": (
        lambda b: b["withdrawals"][0].update(asset="DAI", token="0x6B175474E89094C44Da98b954EedeAC495271d0F"),
        BatchPolicyRefused,
        "disabled",
    ),
    "calldata": (lambda b: b["safe_tx"].update(data=b["safe_tx"]["data"][:-2] + "ff"), BatchMismatch, "calldata"),
    "operation": (lambda b: b["safe_tx"].update(operation=0), BatchMismatch, "operation"),
    "to": (lambda b: b["safe_tx"].update(to=STRANGER), BatchMismatch, "not the pinned MultiSendCallOnly"),
    "value": (lambda b: b["safe_tx"].update(value="1"), BatchMismatch, "value"),
    "gas refund": (lambda b: b["safe_tx"].update(gas_price="1"), BatchMismatch, "gas_price"),
    "Safe address": (lambda b: b.update(safe=STRANGER), BatchWrongWallet, "Safe"),
    "chain id": (lambda b: b.update(chain_id=1), BatchWrongWallet, "chain 1"),
    "MultiSendCallOnly": (lambda b: b.update(multisend=STRANGER), BatchWrongWallet, "MultiSendCallOnly"),
    "Safe nonce": (lambda b: b.update(safe_nonce=5), BatchMismatch, "nonce"),
    "expiry": (lambda b: b.update(expires_at=NOW - 1), BatchExpired, "expired"),
    "policy hash": (lambda b: b.update(policy_hash="ab" * 32), BatchPolicyRefused, "newest policy"),
    "withdrawal added": (_add_withdrawal, BatchMismatch, "4 listed withdrawals"),
    "withdrawal removed": (lambda b: b["withdrawals"].pop(), BatchMismatch, "2 listed withdrawals"),
    "SafeTx hash": (lambda b: b.update(safe_tx_hash="0x" + "00" * 32), BatchMismatch, "SafeTx hash"),
    "duplicate withdrawal": (
        lambda b: b["withdrawals"].append(dict(b["withdrawals"][0])),
        BatchInvalid,
        "duplicate withdrawal id",
    ),
    "unknown field": (lambda b: b.update(note="trust me"), BatchInvalid, "unknown key"),
    "number written another way": (
        lambda b: b["safe_tx"].update(value="00"),
        BatchInvalid,
        "leading zeros",
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_every_tampering_is_refused_with_its_own_reason(setup, name):
    bundle, cold, batch, _ = setup
    mutate, error, fragment = MUTATIONS[name]
    body = copy.deepcopy(batch.body())
    mutate(body)
    with pytest.raises(error) as info:
        review(_resign(body), cold, bundle, NOW)
    assert fragment in info.value.message, info.value.message


def test_daemon_signature_is_checked_against_the_pinned_key(setup):
    bundle, cold, batch, raw = setup
    forged = bytearray(raw)
    at = raw.index(b'"signature":"') + 13
    forged[at] = ord("0") if forged[at] != ord("0") else ord("1")
    with pytest.raises(BatchSignatureInvalid, match="not valid"):
        review(bytes(forged), cold, bundle, NOW)
    with pytest.raises(BatchSignatureInvalid, match="not the pinned"):
        review(_resign(batch.body(), SigningKey(bytes([7]) * 32)), cold, bundle, NOW)


def test_a_whitelist_entry_not_yet_active_is_refused(setup):
    bundle, cold, batch, _ = setup
    early = NOW - 2 * DAY  # the entries became active a day ago
    body = dict(batch.body(), created_at=early)
    with pytest.raises(BatchPolicyRefused, match="not active until"):
        review(_resign(body), cold, bundle, early)


def test_garbage_is_refused_as_a_batch_file():
    for raw in (b"", b"{}", b"[1]", b'{"kind":"custody-cold-batch","format":2}', b"\xff\xfe"):
        with pytest.raises(BatchInvalid):
            parse_batch_file(raw)


def test_empty_batch_is_a_no_op_on_the_safe_itself(setup):
    bundle, cold, _, _ = setup
    empty = assemble(
        batch_id=str(uuid.uuid4()),
        chain_id=31337,
        safe=SAFE,
        safe_nonce=9,
        multisend=MULTISEND,
        policy_version=bundle.version,
        policy_hash=bundle.hash,
        created_at=NOW,
        expires_at=NOW + DAY,
        withdrawals=[],
        policy=bundle.policy,
    )
    assert empty.safe_tx == SafeTx(to=SAFE, value=0, data=b"", operation=0, nonce=9)
    assert review(write_batch_file(empty, DAEMON), cold, bundle, NOW) == empty
    assert any("cancels an older batch" in line for line in describe(empty, bundle.policy, bundle.version))
    assert empty.safe_tx_hash == safe_tx_hash(31337, SAFE, empty.safe_tx)
