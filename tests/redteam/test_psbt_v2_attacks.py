"""The compromised online host against the Bitcoin signer with PSBT version 2 (BIP-370) batches.

A version 2 PSBT spells the transaction in per-input and per-output fields (previous txid, output index,
sequence, amount, script) and adds fields a version 0 PSBT has no room for: flags that leave inputs or outputs
open to be added after signing, and per-input required locktimes that override the fallback locktime. The
signer must check the same things whatever the version, and sign only a fixed transaction it has shown. Each
attack goes through the real `signer sign` and is refused with its own code, leaving no signature file; the
signature file coming back in another version than the batch's is refused by the daemon's import checks
(``custody.cold.btcpsbt``, which `custody batch import` runs on every file).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from embit import compact
from embit.finalizer import finalize_psbt
from embit.psbt import PSBT

from custody.cold import btcpsbt
from custody.errors import BatchRefused, SignatureForAnotherBatch
from signer.btcbatch import parse_btc_signature_file
from tests.redteam.conftest import NOW, Ceremony, refused_unsigned
from tests.redteam.test_psbt_attacks import Host, pinned_host, signed_btc
from tests.signer.btcfixtures import SAT, prev_tx

Scopes = list[list[tuple[bytes, bytes]]]


@pytest.fixture(name="host")
def btc_host(ceremony: Ceremony) -> Host:
    """test_psbt_attacks.py's ceremony: the Bitcoin wallet pinned and a BTC policy accepted by every signer."""
    return pinned_host(ceremony)


def v2(psbt: Any) -> Any:
    """The same PSBT, written as version 2 from now on (embit keeps its fields, moves the transaction's)."""
    psbt.version = 2
    return psbt


def v2_batch(host: Host, amounts: list[int] | None = None, edit: Any = None) -> tuple[Any, bytes]:
    """An honest batch whose PSBT is version 2, optionally edited by the host (as embit objects)."""
    amounts = amounts or [SAT // 2]
    psbt = v2(host.spec(amounts).build())
    if edit is not None:
        edit(psbt)
    batch = host.batch([host.withdrawal(a) for a in amounts], psbt)
    return batch, host.write(batch)


def global_field(key: bytes, value: bytes) -> Any:
    # A new dict: embit's scopes share a mutable default for ``unknown``, which must not be written into.
    return lambda p: setattr(p, "unknown", {**p.unknown, key: value})


def input_field(key: bytes, value: bytes) -> Any:
    return lambda p: setattr(p.inputs[0], "unknown", {**p.inputs[0].unknown, key: value})


def split(raw: bytes) -> Scopes:
    """A PSBT's key-value maps (global, then each input, then each output), as raw (key, value) pairs: to write
    what embit would never write (a key twice, a field out of place)."""
    stream, maps = io.BytesIO(raw[5:]), [[]]
    while stream.tell() < len(raw) - 5:
        key = stream.read(compact.read_from(stream))
        if not key:
            maps.append([])
            continue
        maps[-1].append((key, stream.read(compact.read_from(stream))))
    return maps[:-1]


def join(maps: Scopes) -> str:
    out = bytearray(b"psbt\xff")
    for pairs in maps:
        for key, value in pairs:
            out += compact.to_bytes(len(key)) + key + compact.to_bytes(len(value)) + value
        out += b"\x00"
    return base64.b64encode(bytes(out)).decode()


def raw_batch(host: Host, edit: Any) -> bytes:
    """The honest version 2 batch with its PSBT's bytes edited by the host, signed with the daemon key."""
    batch, _ = v2_batch(host)
    maps = split(base64.b64decode(batch.psbt))
    edit(maps)
    return host.edited_body(batch, lambda body: body.__setitem__("psbt", join(maps)))


# -- what must go through ------------------------------------------------------------------------------------
def test_a_version_2_batch_is_shown_signed_and_answered_in_version_2(host: Host):
    batch, raw = v2_batch(host, [SAT // 2, SAT // 4])
    shown = host.ceremony.review(raw, ok=True).output
    txid = bytes(PSBT.from_base64(batch.psbt).tx.txid()).hex()
    for needed in ("psbt         version 2 (BIP-370)", f"txid         {txid}", "locktime     none", "0.25"):
        assert needed in shown, needed
    files = []
    for who in (0, 2):
        result, out = host.sign(raw, who)
        signed_btc(result)
        files.append(parse_btc_signature_file(out.read_bytes()))
    for sig in files:
        assert PSBT.from_base64(sig.psbt).version == 2 and sig.txid == txid
        # The daemon's import: only the signatures are taken, onto the batch's own version 2 PSBT.
        assert btcpsbt.signed_by(btcpsbt.signatures_onto(batch.psbt, sig.psbt), [sig.fingerprint])
    combined = PSBT.from_base64(btcpsbt.for_node(files[0].psbt))
    for inp, other in zip(combined.inputs, PSBT.from_base64(btcpsbt.for_node(files[1].psbt)).inputs, strict=True):
        inp.partial_sigs.update(other.partial_sigs)
    tx = finalize_psbt(combined)
    assert tx is not None and bytes(tx.txid()).hex() == txid


def test_a_tx_modifiable_field_with_every_flag_clear_is_accepted(host: Host):
    _, raw = v2_batch(host, edit=global_field(b"\x06", b"\x00"))
    signed_btc(host.sign(raw)[0])


# -- a transaction that is not fixed -------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [b"\x01", b"\x02", b"\x03", b"\x04", b"\x08", b"\xff"], ids=lambda f: f"0x{f.hex()}")
def test_a_psbt_whose_inputs_or_outputs_are_still_modifiable_is_refused(host: Host, flags: bytes):
    """Inputs (bit 0) or outputs (bit 1) that may still be added, a SIGHASH_SINGLE pairing (bit 2), or flags the
    BIP does not define: the transaction signed would not be the one shown."""
    _, raw = v2_batch(host, edit=global_field(b"\x06", flags))
    assert "still modifiable" in refused_unsigned(host.ceremony, raw, "btc_tx_form_invalid")


# -- the per-input prevout -----------------------------------------------------------------------------------
def test_a_prevout_txid_that_is_not_its_previous_transactions_is_refused(host: Host):
    """PSBT_IN_PREVIOUS_TXID names another coin than the previous transaction given (whose amount the fee is
    judged by): the version 0 check, on the version 2 field."""
    other = prev_tx([(b"\x00\x14" + bytes(20), SAT)])
    _, raw = v2_batch(host, edit=lambda p: setattr(p.inputs[0], "txid", bytes(other.txid())))
    refused_unsigned(host.ceremony, raw, "btc_utxo_mismatch")


def test_a_prevout_index_past_the_previous_transactions_outputs_is_refused(host: Host):
    _, raw = v2_batch(host, edit=lambda p: setattr(p.inputs[0], "vout", 7))
    refused_unsigned(host.ceremony, raw, "btc_utxo_mismatch")


def test_a_sequence_without_replace_by_fee_in_the_input_field_is_refused(host: Host):
    _, raw = v2_batch(host, edit=lambda p: setattr(p.inputs[0], "sequence", 0xFFFFFFFF))
    refused_unsigned(host.ceremony, raw, "btc_tx_form_invalid")


def test_an_output_amount_field_paying_the_host_more_is_refused(host: Host):
    _, raw = v2_batch(host, edit=lambda p: setattr(p.outputs[0], "value", p.outputs[0].value + 1))
    refused_unsigned(host.ceremony, raw, "btc_outputs_mismatch")


# -- locktimes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value"),
    [(b"\x11", NOW - 3600), (b"\x11", NOW + 86_400), (b"\x12", 100), (b"\x12", 4_000_000)],
    ids=["time-past", "time-future", "height-low", "height-far"],
)
def test_a_required_locktime_on_an_input_is_refused(host: Host, key: bytes, value: int):
    """BIP-370 makes the transaction's locktime the largest required one, not the fallback shown: refused, even
    one that would be harmless, since the signer shows and checks the fallback locktime only."""
    _, raw = v2_batch(host, edit=input_field(key, value.to_bytes(4, "little")))
    assert "requires a" in refused_unsigned(host.ceremony, raw, "btc_tx_form_invalid")


def test_a_fallback_locktime_in_the_future_is_refused(host: Host):
    _, raw = v2_batch(host, edit=lambda p: setattr(p, "locktime", NOW + 86_400))
    refused_unsigned(host.ceremony, raw, "btc_tx_form_invalid")


def test_a_fallback_locktime_height_is_shown_as_a_version_0_locktime_is(host: Host):
    _, raw = v2_batch(host, edit=lambda p: setattr(p, "locktime", 1234))
    assert "locktime     block 1234" in host.ceremony.review(raw, ok=True).output


# -- the encoding --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("what", "edit"),
    [
        ("the previous txid twice, the second another coin", lambda m: m[1].append((b"\x0e", bytes(32)))),
        ("the output index twice", lambda m: m[1].append((b"\x0f", (1).to_bytes(4, "little")))),
        ("the sequence twice", lambda m: m[1].append((b"\x10", (0xFFFFFFFF).to_bytes(4, "little")))),
        ("the output amount twice", lambda m: m[2].append((b"\x03", (1).to_bytes(8, "little")))),
        ("the fallback locktime twice", lambda m: m[0].insert(2, (b"\x03", (1).to_bytes(4, "little")))),
        ("the PSBT version twice", lambda m: m[0].append((b"\xfb", (2).to_bytes(4, "little")))),
        ("the version 0 global transaction too", lambda m: m[0].insert(0, (b"\x00", bytes(10)))),
        ("no transaction version", lambda m: m[0].pop(0)),
        ("an output without its script", lambda m: m[2].pop()),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_duplicated_or_missing_version_2_fields_are_refused(host: Host, what: str, edit: Any):
    """Two values for one key would let two readers see two transactions; the decoder refuses the file."""
    refused_unsigned(host.ceremony, raw_batch(host, edit), "btc_batch_invalid")


@pytest.mark.parametrize("version", [0, 1, 3])
def test_a_psbt_global_version_other_than_2_is_refused(host: Host, version: int):
    """PSBT_GLOBAL_VERSION 0 is written by no one (version 0 has no such field), 1 does not exist, 3 is not
    known: the per-field reading of version 2 would not apply."""
    refused_unsigned(
        host.ceremony,
        raw_batch(host, lambda m: m[0].__setitem__(-1, (b"\xfb", version.to_bytes(4, "little")))),
        "btc_batch_invalid",
    )


# -- the signature file's version ----------------------------------------------------------------------------
def test_a_signature_file_in_another_version_than_the_batch_is_refused_by_the_daemon(host: Host):
    """A v2 batch answered in v0 (same transaction, or another), or a v0 batch answered in v2: not what a signer
    wrote, refused before its signatures are looked at."""
    batch, raw = v2_batch(host)
    result, out = host.sign(raw)
    signed_btc(result)
    sig = parse_btc_signature_file(out.read_bytes())
    as_v0 = btcpsbt.with_version(sig.psbt, 0)
    assert parse_btc_signature_file(out.read_bytes().replace(sig.psbt.encode(), as_v0.encode())).txid == sig.txid
    with pytest.raises(SignatureForAnotherBatch, match="version 0; the batch's PSBT is version 2") as caught:
        btcpsbt.signatures_onto(batch.psbt, as_v0)
    assert caught.value.code == "signature_for_another_batch"
    other, _ = host.honest([SAT // 3])  # another transaction, version 0
    with pytest.raises(SignatureForAnotherBatch) as caught:
        btcpsbt.signatures_onto(batch.psbt, other.psbt)
    assert caught.value.code == "signature_for_another_batch"
    v0_batch = btcpsbt.with_version(batch.psbt, 0)
    with pytest.raises(SignatureForAnotherBatch, match="version 2; the batch's PSBT is version 0"):
        btcpsbt.signatures_onto(v0_batch, sig.psbt)
    # The same file in the batch's version goes through, and a different transaction in it does not.
    assert btcpsbt.signed_by(btcpsbt.signatures_onto(batch.psbt, sig.psbt), [sig.fingerprint])
    with pytest.raises(BatchRefused):
        btcpsbt.signatures_onto(batch.psbt, btcpsbt.with_version(other.psbt, 2))
