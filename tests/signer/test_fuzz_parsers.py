"""Fuzzing the readers of everything that crosses the air gap: whatever the bytes, the answer is a parsed file
or one of the project's own errors (a CustodyError with its code), never a crash of another kind."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from signer.batchfile import BatchWithdrawal, OwnerSignature, parse_batch_file, parse_signature_file, write_batch_file
from signer.coldwallet import ColdWallet, parse_cold_wallet
from signer.porstatement import parse_signature_file as parse_por_signature
from signer.porstatement import parse_statement
from signer.review import assemble
from signer.safecontracts import MULTISEND_CALL_ONLY, safe_address
from tests.custody.test_por_inputs import statement
from tests.fuzzing import FUZZ, mutated, only_our_errors
from tests.policies.helpers import policy

USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
OMNIBUS = "0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"
SAFE = safe_address((OMNIBUS,), 1, 0)


def _batch_raw() -> bytes:
    batch = assemble(
        batch_id=str(uuid.UUID(int=1)),
        chain_id=31337,
        safe=SAFE,
        safe_nonce=3,
        multisend=MULTISEND_CALL_ONLY,
        policy_version=1,
        policy_hash="ab" * 32,
        created_at=1,
        expires_at=2,
        withdrawals=[
            BatchWithdrawal(str(uuid.UUID(int=2)), "ETH", 10**18, 18, None, OMNIBUS, "omnibus"),
            BatchWithdrawal(str(uuid.UUID(int=3)), "USDC", 5 * 10**6, 6, USDC, OMNIBUS, "omnibus"),
        ],
        policy=policy(),
    )
    return write_batch_file(batch, SigningKey(bytes([9]) * 32))


BATCH = _batch_raw()
SIGNATURE = OwnerSignature(str(uuid.UUID(int=1)), 31337, OMNIBUS, 3, bytes(32), OMNIBUS, bytes(65)).to_bytes()
COLD = ColdWallet(31337, SAFE, (OMNIBUS,), 1, MULTISEND_CALL_ONLY, "cd" * 32).to_bytes()
STATEMENT = statement().to_bytes()


@FUZZ
@given(st.one_of(st.binary(max_size=400), mutated(BATCH)))
def test_batch_file_reader(raw):
    only_our_errors(parse_batch_file, raw)


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(SIGNATURE)))
def test_batch_signature_file_reader(raw):
    only_our_errors(parse_signature_file, raw)


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(COLD)))
def test_cold_wallet_file_reader(raw):
    only_our_errors(parse_cold_wallet, raw)


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(STATEMENT)))
def test_statement_reader(raw):
    only_our_errors(parse_statement, raw)


@FUZZ
@given(st.binary(max_size=300))
def test_statement_signature_reader(raw):
    only_our_errors(parse_por_signature, raw)
