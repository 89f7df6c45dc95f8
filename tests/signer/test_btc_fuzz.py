"""Fuzzing the Bitcoin readers and the PSBT checks: whatever the bytes (of a file, or of the PSBT inside a
batch), the answer is a parsed file or one of the project's own errors, never a crash of another kind."""

from __future__ import annotations

import base64
import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from signer.btcbatch import (
    BtcSignature,
    decode_psbt,
    parse_btc_batch_file,
    parse_btc_signature_file,
    write_btc_batch_file,
)
from signer.btcwallet import parse_btc_cold_wallet
from signer.psbtreview import check_form, check_inputs, check_outputs
from tests.fuzzing import FUZZ, mutated, only_our_errors
from tests.signer.btcfixtures import wallet_bytes
from tests.signer.test_btc_batch import DAEMON, WALLET, _batch

BATCH = _batch()
BATCH_RAW = write_btc_batch_file(BATCH, DAEMON)
PSBT_RAW = base64.b64decode(BATCH.psbt)
SIGNATURE = BtcSignature(BATCH.id, "00" * 32, "01020304", BATCH.psbt).to_bytes()
COLD = wallet_bytes(WALLET.account_keys(), 2, DAEMON.verify_key.encode().hex())


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(COLD)))
def test_btc_cold_wallet_reader(raw):
    only_our_errors(parse_btc_cold_wallet, raw)


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(BATCH_RAW)))
def test_btc_batch_file_reader(raw):
    only_our_errors(parse_btc_batch_file, raw)


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(SIGNATURE)))
def test_btc_signature_file_reader(raw):
    only_our_errors(parse_btc_signature_file, raw)


@st.composite
def psbt_bytes(draw: st.DrawFn) -> bytes:
    at = draw(st.integers(0, len(PSBT_RAW) - 1))
    how = draw(st.sampled_from(["flip", "cut", "insert"]))
    if how == "flip":
        return PSBT_RAW[:at] + bytes([PSBT_RAW[at] ^ draw(st.integers(1, 255))]) + PSBT_RAW[at + 1 :]
    if how == "cut":
        return PSBT_RAW[:at] + PSBT_RAW[at + draw(st.integers(1, 40)) :]
    return PSBT_RAW[:at] + draw(st.binary(min_size=1, max_size=20)) + PSBT_RAW[at:]


def _review(raw: bytes) -> None:
    text = base64.b64encode(raw).decode()
    decode_psbt(text)
    batch = dataclasses.replace(BATCH, psbt=text)
    psbt = batch.parsed_psbt()
    check_form(psbt, WALLET, BATCH.created_at)
    check_inputs(psbt, WALLET)
    check_outputs(psbt, WALLET, batch)


@FUZZ
@given(psbt_bytes())
def test_psbt_checks(raw):
    only_our_errors(_review, raw)
