"""docs/batch-protocol.md's worked example is what the reference implementation reads and writes, so a third
party implementing from the page gets the same bytes."""

from __future__ import annotations

import re
from pathlib import Path

from eth_account import Account
from nacl.signing import SigningKey

from signer.batchfile import parse_batch_file, parse_signature_file, write_batch_file
from signer.coldwallet import parse_cold_wallet
from signer.safecontracts import MULTISEND_CALL_ONLY, safe_address
from signer.safetx import multisend_data, safe_tx_hash, sign_hash, transfer_call

DOC = Path(__file__).parents[2] / "docs" / "batch-protocol.md"
DAEMON = SigningKey(bytes([9]) * 32)
OWNER = bytes([0x40]) * 32
OWNERS = tuple(Account.from_key(bytes([0x40 + i]) * 32).address for i in range(3))


def _examples() -> list[bytes]:
    return [block.encode() for block in re.findall(r"```json\n(.*?)\n```", DOC.read_text(), re.S)]


def test_the_worked_example_is_what_the_implementation_writes_and_reads():
    cold_raw, batch_raw, signature_raw = _examples()
    cold = parse_cold_wallet(cold_raw)  # canonical: the Safe's address derives from its owners and threshold
    assert cold.owners == OWNERS and (cold.threshold, cold.salt_nonce) == (2, 0)
    assert cold.safe == safe_address(OWNERS, 2, 0) == "0xba58A45423D8697a7d09a16eeB776593AcCB18c1"
    assert cold.multisend == MULTISEND_CALL_ONLY and cold.daemon_key == DAEMON.verify_key.encode().hex()
    assert cold.safe in DOC.read_text().split("Cold wallet file:")[0]  # the prose names the same Safe

    parsed = parse_batch_file(batch_raw)
    parsed.verify_daemon_signature(DAEMON.verify_key.encode().hex())
    batch = parsed.batch
    assert write_batch_file(batch, DAEMON) == batch_raw
    assert batch.hash_matches() and batch.safe_tx_hash == safe_tx_hash(batch.chain_id, batch.safe, batch.safe_tx)
    calls = [transfer_call(w.token, w.destination, w.amount) for w in batch.withdrawals]
    assert batch.safe_tx.data == multisend_data(calls) and batch.safe_tx.to == batch.multisend
    assert (batch.chain_id, batch.safe, batch.multisend) == (cold.chain_id, cold.safe, cold.multisend)

    sig = parse_signature_file(signature_raw)
    assert sig.owner == Account.from_key(OWNER).address == "0xEe7e767E049143712099F92Bc8A3B6b7F1b40335"
    assert sig.recovered_owner() == sig.owner and sig.signature == sign_hash(OWNER, batch.safe_tx_hash)
    assert (sig.batch_id, sig.safe_tx_hash, sig.safe_nonce) == (batch.id, batch.safe_tx_hash, batch.safe_nonce)
