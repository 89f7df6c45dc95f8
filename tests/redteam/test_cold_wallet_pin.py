"""Pinning the cold wallet: the host writes the cold-wallet file, and everything in it is the host's word.

The attacker controls the online host and so the file ``custody cold create`` leaves for the operators. What
it would like the signers to pin: a MultiSendCallOnly of its own (every multi-transfer batch delegatecalls it,
with the Safe's storage: the Bybit attack), a Safe it set up itself (an owner of its own, a lower threshold, a
module, a fallback handler) described with the treasury's owners. The signer derives the Safe's address
offline from the owners, threshold and salt nonce with the canonical Safe 1.4.1 contracts, and refuses any
file whose address does not follow. Pinning is also a ceremony step, with a typed confirmation of the file's
hash, recorded in the transcript.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from signer.coldwallet import ColdWallet
from signer.safecontracts import (
    FALLBACK_HANDLER,
    PROXY_CREATION_CODE,
    PROXY_FACTORY,
    SINGLETON,
    safe_address,
)
from signer.safetx import ZERO_ADDRESS
from tests.cli_helpers import signer
from tests.redteam.conftest import Ceremony, refused

ATTACKER = Account.from_key(bytes([0x66]) * 32).address
# A contract of the attacker's choosing, with MultiSendCallOnly's interface and a payload of its own.
EVIL_MULTISEND = Account.from_key(bytes([0x67]) * 32).address
SETUP_TYPES = ["address[]", "uint256", "address", "bytes", "address", "address", "uint256", "address"]
SETUP = keccak(text="setup(address[],uint256,address,bytes,address,address,uint256,address)")[:4]
ENABLE_ATTACKER_MODULE = keccak(text="enableModule(address)")[:4] + bytes(12) + bytes.fromhex(ATTACKER[2:])


def created_by_factory(initializer: bytes, salt_nonce: int) -> str:
    """The address the canonical factory gives a Safe set up with any initializer the attacker likes: the
    same CREATE2 formula the Safe 1.4.1 SafeProxyFactory applies, computed independently of the signer."""
    salt = keccak(keccak(initializer) + salt_nonce.to_bytes(32, "big"))
    init_code = PROXY_CREATION_CODE + bytes(12) + bytes.fromhex(SINGLETON[2:])
    return to_checksum_address(keccak(b"\xff" + bytes.fromhex(PROXY_FACTORY[2:]) + salt + keccak(init_code))[12:])


def setup_call(owners, threshold, *, to=ZERO_ADDRESS, data=b"", handler=FALLBACK_HANDLER) -> bytes:
    return SETUP + abi_encode(SETUP_TYPES, [list(owners), threshold, to, data, handler, ZERO_ADDRESS, 0, ZERO_ADDRESS])


def transcript(state: Path) -> list[dict[str, str]]:
    path = state / "transcript.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def pin(ceremony: Ceremony, wallet: ColdWallet | bytes, state: Path, *extra: object, stdin: str | None = None):
    """``signer cold pin`` of this file on ``state``; ``--yes`` unless a typed answer is given."""
    raw = wallet if isinstance(wallet, bytes) else wallet.to_bytes()
    yes = () if stdin is not None else ("--yes",)
    return signer("cold", "pin", ceremony.file(raw), *extra, *yes, "--state", state, ok=False, stdin=stdin)


def refused_unpinned(ceremony: Ceremony, wallet: ColdWallet, code: str, tmp_path: Path) -> str:
    """A fresh signer refuses to pin ``wallet`` with ``code``, pins nothing and records the refusal."""
    state = tmp_path / "fresh-state"
    message = refused(pin(ceremony, wallet, state), code)
    assert not (state / "cold-wallet.json").exists()
    last = transcript(state)[-1]
    assert (last["action"], last["decision"]) == ("cold-pin", f"refused: {code}")
    assert last["hash"] == hashlib.sha256(wallet.to_bytes()).hexdigest()
    return message


def test_the_honest_file_is_the_canonical_safe_of_its_owners(ceremony):
    cold = ceremony.cold
    assert cold.safe == safe_address(cold.owners, cold.threshold, cold.salt_nonce)
    assert cold.safe == created_by_factory(setup_call(cold.owners, cold.threshold), cold.salt_nonce)


def test_another_multisend_the_bybit_attack_is_refused(ceremony, tmp_path):
    evil = dataclasses.replace(ceremony.cold, multisend=EVIL_MULTISEND)
    message = refused_unpinned(ceremony, evil, "cold_wallet_not_canonical", tmp_path)
    assert EVIL_MULTISEND in message and "MultiSendCallOnly" in message


def test_an_owner_replaced_by_the_attacker_is_refused(ceremony, tmp_path):
    owners = (*ceremony.cold.owners[:2], ATTACKER)
    refused_unpinned(ceremony, dataclasses.replace(ceremony.cold, owners=owners), "cold_wallet_not_canonical", tmp_path)


def test_owners_reordered_are_another_safe(ceremony, tmp_path):
    owners = tuple(reversed(ceremony.cold.owners))
    refused_unpinned(ceremony, dataclasses.replace(ceremony.cold, owners=owners), "cold_wallet_not_canonical", tmp_path)


def test_the_threshold_lowered_to_one_is_refused(ceremony, tmp_path):
    refused_unpinned(ceremony, dataclasses.replace(ceremony.cold, threshold=1), "cold_wallet_not_canonical", tmp_path)


def test_the_salt_nonce_edited_alone_is_refused(ceremony, tmp_path):
    refused_unpinned(ceremony, dataclasses.replace(ceremony.cold, salt_nonce=1), "cold_wallet_not_canonical", tmp_path)


@pytest.mark.parametrize(
    "attacker_setup",
    [
        pytest.param(lambda owners: setup_call((*owners, ATTACKER), 2), id="an extra owner"),
        pytest.param(lambda owners: setup_call(owners, 1), id="threshold 1"),
        pytest.param(lambda owners: setup_call(owners, 2, handler=ATTACKER), id="the attacker's fallback handler"),
        pytest.param(
            lambda owners: setup_call(owners, 2, to=ATTACKER, data=ENABLE_ATTACKER_MODULE),
            id="a module enabled during setup",
        ),
    ],
)
@pytest.mark.parametrize("salt_nonce", [0, 7])
def test_a_safe_the_attacker_set_up_itself_is_refused_under_the_treasurys_owners(
    ceremony, tmp_path, attacker_setup, salt_nonce
):
    """The attacker really creates a Safe with the canonical factory, singleton and proxy, but sets it up its
    own way, then writes a file naming that Safe with the treasury's owners and threshold."""
    cold = ceremony.cold
    theirs = created_by_factory(attacker_setup(cold.owners), salt_nonce)
    for claimed_salt in {0, salt_nonce}:
        forged = dataclasses.replace(cold, safe=theirs, salt_nonce=claimed_salt)
        message = refused_unpinned(ceremony, forged, "cold_wallet_not_canonical", tmp_path)
        assert theirs in message


def test_a_safe_of_other_owners_with_another_salt_is_refused(ceremony, tmp_path):
    cold = ceremony.cold
    theirs = safe_address((cold.owners[0], ATTACKER), 1, 12345)  # a canonical Safe, but not of these owners
    refused_unpinned(ceremony, dataclasses.replace(cold, safe=theirs), "cold_wallet_not_canonical", tmp_path)


def test_a_key_that_is_not_an_owner_cannot_pin(ceremony, tmp_path):
    ops = ceremony.operators
    owners = (ops[0].address, ops[1].address)
    wallet = dataclasses.replace(ceremony.cold, owners=owners, threshold=2, safe=safe_address(owners, 2, 0))
    state = tmp_path / "fresh-state"
    message = refused(pin(ceremony, wallet, state, "--keystore", ops[2].keystore), "signer_error")
    assert ops[2].address in message and "not an owner" in message
    assert not (state / "cold-wallet.json").exists()
    assert pin(ceremony, wallet, state, "--keystore", ops[0].keystore).exit_code == 0  # an owner can


def test_a_typed_confirmation_that_does_not_match_pins_nothing(ceremony, tmp_path):
    state = tmp_path / "fresh-state"
    raw = ceremony.cold.to_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    wrong = "00000000" if not digest.startswith("00000000") else "11111111"
    result = pin(ceremony, raw, state, "--keystore", ceremony.operators[0].keystore, stdin=wrong + "\n")
    refused(result, "confirmation_declined")
    assert digest in result.output  # it was shown, to be compared
    assert not (state / "cold-wallet.json").exists()
    last = transcript(state)[-1]
    assert (last["action"], last["subject"], last["hash"], last["decision"]) == (
        "cold-pin",
        ceremony.cold.safe,
        digest,
        "declined",
    )
    refused(signer("cold", "show", "--state", state, ok=False), "signer_state")


def test_a_typed_confirmation_that_does_not_match_pins_no_genesis(ceremony, tmp_path):
    state = tmp_path / "fresh-state"
    genesis = ceremony.file(ceremony.genesis, "genesis.json")
    result = signer("policy", "pin", genesis, "--state", state, ok=False, stdin="beefbeef\n")
    refused(result, "confirmation_declined")
    assert not (state / "genesis.json").exists()
    last = transcript(state)[-1]
    assert (last["action"], last["decision"]) == ("policy-pin", "declined")


def test_a_pin_shows_what_is_pinned_and_is_in_the_transcript(ceremony, tmp_path):
    state = tmp_path / "fresh-state"
    raw = ceremony.cold.to_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    result = pin(ceremony, raw, state, "--keystore", ceremony.operators[1].keystore, stdin=digest[:8].upper() + "\n")
    assert result.exit_code == 0, result.output
    out = result.output
    assert digest in out and ceremony.cold.safe in out and "threshold     2 of 3" in out
    assert all(owner in out for owner in ceremony.cold.owners)
    assert (state / "cold-wallet.json").read_bytes() == raw
    last = transcript(state)[-1]
    assert (last["action"], last["subject"], last["hash"], last["decision"]) == (
        "cold-pin",
        ceremony.cold.safe,
        digest,
        "pinned",
    )
    assert ceremony.cold.safe in signer("cold", "show", "--state", state).output


def test_a_second_different_cold_wallet_is_refused_after_a_pin(ceremony):
    # a perfectly canonical Safe of the same owners, only another one: still not the one pinned
    cold = ceremony.cold
    other = dataclasses.replace(cold, salt_nonce=1, safe=safe_address(cold.owners, cold.threshold, 1))
    state = ceremony.states[0]
    message = refused(pin(ceremony, other, state), "signer_state")
    assert "already pinned" in message
    assert (state / "cold-wallet.json").read_bytes() == cold.to_bytes()
    assert pin(ceremony, cold, state).exit_code == 0  # the same file again is harmless
