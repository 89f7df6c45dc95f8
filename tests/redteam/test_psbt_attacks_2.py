"""More of the compromised online host against the Bitcoin signer (issue 18), after test_psbt_attacks.py.

The host holds the daemon key, so it signs whatever batch file it writes; these are the PSBTs and ledger games
that test_psbt_attacks.py does not try: fee-bump chains that free the first transaction's coins, a fee bump
that names an Ethereum batch to get past the one-transaction-per-withdrawal rule, scripts that carry the
owners' derivations but are not the wallet's, change with the right derivations and the wrong script, a second
change output, split withdrawal outputs, PSBT fields and encodings outside what the signer reads, amounts out
of range and locktime edges. Each one through the real `signer sign`, refused with its own code and leaving no
signature file.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any

import pytest
from embit import bip32
from embit.hashes import hash160
from embit.psbt import PSBT
from embit.script import Script
from embit.transaction import SIGHASH, TransactionOutput

from signer.btcbatch import BtcBatch
from signer.btckeys import BitcoinKey, account_indexes
from signer.btcwallet import parse_btc_cold_wallet, witness_script
from tests.redteam.conftest import DAEMON, ETH, Ceremony, refused_unsigned
from tests.redteam.test_psbt_attacks import (
    FEE,
    MAKER,
    MAKER_SCRIPT,
    OMNI,
    OMNI_SCRIPT,
    THIEF_SCRIPT,
    Host,
    pinned_host,
    signed_btc,
)
from tests.signer.btcfixtures import SAT, Coin, Spec, coin, derivations, prev_tx, wallet_bytes

TPUB = bytes.fromhex("043587cf")


@pytest.fixture(name="host")
def btc_host(ceremony: Ceremony) -> Host:
    """test_psbt_attacks.py's ceremony: the Bitcoin wallet pinned and a BTC policy accepted by every signer."""
    return pinned_host(ceremony)


def thief_key() -> BitcoinKey:
    account = bip32.HDKey.from_seed(bytes([0x66]) * 64).derive(account_indexes("regtest")).to_public()
    return BitcoinKey("66666666", "m/48h/1h/0h/2h", account.to_base58(version=TPUB))


def one_batch(host: Host, spec: Spec, amounts: list[int] | None = None, **kw: Any) -> bytes:
    amounts = amounts or [SAT // 2]
    return host.write(host.batch([host.withdrawal(a) for a in amounts], spec.build(), **kw))


# -- the ledger: fee-bump chains ------------------------------------------------------------------------------
def test_a_bump_of_a_bump_that_no_longer_conflicts_with_the_first_transaction_is_refused(host: Host) -> None:
    """A spends coin X; B bumps A with X and a fresh coin Z; C bumps B with Z alone. B conflicts with A and C
    with B, but C does not conflict with A: the host broadcasts A and C and the withdrawal is paid twice."""
    x, z = coin(host.wallet, SAT, 0, 1), coin(host.wallet, SAT, 0, 2)
    pays = [(OMNI_SCRIPT, SAT // 2)]
    w = host.withdrawal(SAT // 2)
    a = host.batch([w], Spec(host.wallet, [x], pays, (0, SAT // 2 - FEE)).build())
    signed_btc(host.sign(host.write(a))[0])
    b = host.batch([w], Spec(host.wallet, [x, z], pays, (1, 3 * SAT // 2 - 3 * FEE)).build(), replaces=a.id)
    signed_btc(host.sign(host.write(b))[0])
    c = host.batch([w], Spec(host.wallet, [z], pays, (2, SAT // 2 - 4 * FEE)).build(), replaces=b.id)
    refused_unsigned(host.ceremony, host.write(c), "btc_replacement_invalid")


def test_a_bump_of_a_bump_that_still_conflicts_with_every_earlier_one_is_signed(host: Host) -> None:
    x, z = coin(host.wallet, SAT, 0, 1), coin(host.wallet, SAT, 0, 2)
    pays = [(OMNI_SCRIPT, SAT // 2)]
    w = host.withdrawal(SAT // 2)
    a = host.batch([w], Spec(host.wallet, [x], pays, (0, SAT // 2 - FEE)).build())
    signed_btc(host.sign(host.write(a))[0])
    b = host.batch([w], Spec(host.wallet, [x, z], pays, (1, 3 * SAT // 2 - 3 * FEE)).build(), replaces=a.id)
    signed_btc(host.sign(host.write(b))[0])
    c = host.batch([w], Spec(host.wallet, [x, z], pays, (1, 3 * SAT // 2 - 5 * FEE)).build(), replaces=b.id)
    signed_btc(host.sign(host.write(c))[0])


def test_a_bump_that_names_an_ethereum_batch_does_not_excuse_a_withdrawal_signed_there(host: Host) -> None:
    """The withdrawal was signed into a Safe transaction; the host sends it again in a Bitcoin batch that says
    it "replaces" that Safe batch, hoping the fee-bump exception skips the Safe entry."""
    ceremony = host.ceremony
    ceremony.run("cold", "pin", ceremony.file(ceremony.cold.to_bytes(), "cold-wallet.json"), "--yes", ok=True)
    eth = ceremony.withdrawal("ETH", ETH)
    safe_batch = ceremony.batch([eth])
    assert ceremony.sign(ceremony.write(safe_batch)).exit_code == 0
    w = dataclasses.replace(host.withdrawal(SAT // 2), id=eth.id)
    raw = host.write(host.batch([w], host.spec([SAT // 2]).build(), replaces=safe_batch.id))
    refused_unsigned(ceremony, raw, "withdrawal_already_signed")


def test_a_batch_id_reused_for_another_transaction_does_not_widen_a_bump(host: Host) -> None:
    """Two transactions recorded under one batch id (A: coin X, A2: coin Y, another withdrawal); a bump chain
    of that id must still conflict with both."""
    x, y, z = (coin(host.wallet, SAT, 0, i) for i in (1, 2, 3))
    pays = [(OMNI_SCRIPT, SAT // 2)]
    w1, w2 = host.withdrawal(SAT // 2), host.withdrawal(SAT // 2)
    a = host.batch([w1], Spec(host.wallet, [x], pays, (0, SAT // 2 - FEE)).build())
    signed_btc(host.sign(host.write(a))[0])
    a2 = dataclasses.replace(host.batch([w2], Spec(host.wallet, [y], pays, (1, SAT // 2 - FEE)).build()), id=a.id)
    signed_btc(host.sign(host.write(a2))[0])
    b = host.batch([w2], Spec(host.wallet, [y, z], pays, (2, 3 * SAT // 2 - 3 * FEE)).build(), replaces=a.id)
    refused_unsigned(host.ceremony, host.write(b), "btc_replacement_invalid")


# -- inputs ----------------------------------------------------------------------------------------------------
def test_a_previous_transaction_without_the_outpoints_output_is_refused(host: Host) -> None:
    """The txid matches, but the outpoint's index is past its outputs (embit would read whatever it finds)."""
    spec = host.spec([SAT // 2])
    psbt = spec.build()
    psbt.tx.vin[0].vout = 5
    psbt.inputs[0].vout = 5
    raw = host.write(host.batch([host.withdrawal(SAT // 2)], psbt))
    refused_unsigned(host.ceremony, raw, "btc_utxo_mismatch")


@pytest.mark.parametrize("which", ["1-of-3 of the owners", "2-of-3 with the host's key", "2-of-2 of two owners"])
def test_an_input_with_the_owners_derivations_and_another_script_is_refused(host: Host, which: str) -> None:
    """The coin really pays the script in the PSBT, and the derivations are the owners' real ones at 0/7:
    only the script differs from the wallet's (a 1-of-3 the host's signer satisfies, or one with its key)."""
    keys = list(host.wallet.account_keys())
    threshold, script_keys = {
        "1-of-3 of the owners": (1, keys),
        "2-of-3 with the host's key": (2, [*keys[:2], thief_key()]),
        "2-of-2 of two owners": (2, keys[:2]),
    }[which]
    script = witness_script("regtest", threshold, script_keys, 0, 7)
    prev = prev_tx([(b"\x00\x20" + hashlib.sha256(script).digest(), SAT)])
    spec = host.spec([SAT // 2])
    spec.coins = [Coin(0, 7, SAT, prev)]
    psbt = spec.build()
    psbt.inputs[0].witness_script = Script(script)
    refused_unsigned(host.ceremony, host.write(host.batch([host.withdrawal(SAT // 2)], psbt)), "btc_foreign_input")


def test_an_input_spending_a_legacy_output_is_refused(host: Host) -> None:
    """The previous output is a bare P2SH of the wallet's witness script hash: not a native P2WSH coin."""
    wscript = host.wallet.witness_script(0, 0)
    p2sh = b"\xa9\x14" + hash160(b"\x00\x20" + hashlib.sha256(wscript).digest()) + b"\x87"
    spec = host.spec([SAT // 2])
    spec.coins = [Coin(0, 0, SAT, prev_tx([(p2sh, SAT)]))]
    refused_unsigned(host.ceremony, one_batch(host, spec), "btc_foreign_input")


@pytest.mark.parametrize(
    "sighash",
    [SIGHASH.NONE | SIGHASH.ANYONECANPAY, SIGHASH.SINGLE | SIGHASH.ANYONECANPAY, 0x41, 0x101],
    ids=["none-acp", "single-acp", "forkid-all", "all-high-bits"],
)
def test_an_input_asking_for_a_sighash_with_extra_flags_is_refused(host: Host, sighash: int) -> None:
    refused_unsigned(
        host.ceremony,
        host.crafted([SAT // 2], lambda p: setattr(p.inputs[0], "sighash_type", sighash)),
        "btc_sighash_forbidden",
    )


def test_an_input_already_carrying_a_signature_is_refused(host: Host) -> None:
    """A partial signature made elsewhere (say, for SIGHASH_NONE): a batch carries an unsigned PSBT."""

    def add(psbt: Any) -> None:
        pub = next(iter(psbt.inputs[0].bip32_derivations))
        psbt.inputs[0].partial_sigs[pub] = bytes(71) + b"\x02"

    refused_unsigned(host.ceremony, host.crafted([SAT // 2], add), "btc_batch_invalid")


# -- outputs ---------------------------------------------------------------------------------------------------
def test_change_with_the_right_derivations_and_the_hosts_script_is_refused(host: Host) -> None:
    def swap(psbt: Any) -> None:
        psbt.tx.vout[1].script_pubkey = Script(THIEF_SCRIPT)
        psbt.outputs[1].script_pubkey = Script(THIEF_SCRIPT)

    refused_unsigned(host.ceremony, host.crafted([SAT // 2], swap), "btc_change_invalid")


def test_change_whose_witness_script_field_is_not_its_scripts_is_refused(host: Host) -> None:
    def lie(psbt: Any) -> None:
        psbt.outputs[1].witness_script = Script(host.wallet.witness_script(1, 5))

    refused_unsigned(host.ceremony, host.crafted([SAT // 2], lie), "btc_change_invalid")


def test_change_at_the_last_index_of_the_gap_limit_is_signed_and_past_it_refused(host: Host) -> None:
    for index, ok in ((999, True), (1000, False)):
        spec = host.spec([SAT // 2])
        spec.change = (index, SAT // 2 - FEE)
        raw = one_batch(host, spec)
        if ok:
            signed_btc(host.sign(raw)[0])
        else:
            refused_unsigned(host.ceremony, raw, "btc_change_invalid")


def test_a_second_change_output_is_refused(host: Host) -> None:
    """Two outputs to the wallet's own change branch: each passes on its own; together one of them is not
    a withdrawal and not the one change."""
    spec = host.spec([SAT // 2])
    spec.change = (0, SAT // 4 - FEE)
    spec.extra = [(host.wallet.script_pubkey(1, 1), SAT // 4)]
    psbt = spec.build()
    psbt.outputs[2].witness_script = Script(host.wallet.witness_script(1, 1))
    psbt.outputs[2].bip32_derivations = derivations(host.wallet, 1, 1)
    refused_unsigned(host.ceremony, host.write(host.batch([host.withdrawal(SAT // 2)], psbt)), "btc_outputs_mismatch")


def test_a_withdrawal_split_over_two_outputs_to_its_address_is_refused(host: Host) -> None:
    spec = host.spec([SAT // 2])
    spec.pays = [(OMNI_SCRIPT, SAT // 4), (OMNI_SCRIPT, SAT // 4)]
    refused_unsigned(host.ceremony, one_batch(host, spec), "btc_outputs_mismatch")


def test_a_withdrawal_listed_twice_is_refused(host: Host) -> None:
    spec = host.spec([SAT // 4, SAT // 4])
    w = host.withdrawal(SAT // 4)
    refused_unsigned(host.ceremony, host.write(host.batch([w, w], spec.build())), "btc_batch_invalid")


def test_two_withdrawals_to_two_addresses_with_their_outputs_swapped_are_refused(host: Host) -> None:
    spec = host.spec([SAT // 4, SAT // 8])
    spec.pays = [(OMNI_SCRIPT, SAT // 8), (MAKER_SCRIPT, SAT // 4)]
    batch = host.batch([host.withdrawal(SAT // 4, OMNI), host.withdrawal(SAT // 8, MAKER)], spec.build())
    refused_unsigned(host.ceremony, host.write(batch), "btc_outputs_mismatch")


@pytest.mark.parametrize("value", [2**63, 2**64 - 1], ids=["2^63", "2^64-1"])
def test_an_output_worth_more_than_all_bitcoin_is_refused(host: Host, value: int) -> None:
    """Change of 2^63 sat or more: out of consensus's money range, refused before the fee is even computed."""
    spec = host.spec([SAT // 2])
    spec.change = (0, value)
    refused_unsigned(host.ceremony, one_batch(host, spec), "btc_tx_form_invalid")


def test_a_made_up_coin_worth_2_64_sat_does_not_hide_an_overflowing_change(host: Host) -> None:
    """The previous transaction (invented, txid consistent) holds 2^64-1 sat; the change takes all but the
    withdrawal and a small fee. The signer judges Python integers, so the fee is what it is; a transaction
    whose amounts are out of the money range is refused rather than signed."""
    big = 2**64 - 1
    spec = Spec(host.wallet, [coin(host.wallet, big)], [(OMNI_SCRIPT, SAT // 2)], (0, big - SAT // 2 - FEE))
    refused_unsigned(host.ceremony, one_batch(host, spec), "btc_tx_form_invalid")


# -- the PSBT's encoding ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["global", "input", "output"])
def test_a_proprietary_field_is_refused(host: Host, where: str) -> None:
    def add(psbt: Any) -> None:
        scope = {"global": psbt, "input": psbt.inputs[0], "output": psbt.outputs[0]}[where]
        # a new dict: embit's scopes share a mutable default ``unknown``
        scope.unknown = {**scope.unknown, b"\xfc\x05hosts\x00": b"pay me"}

    refused_unsigned(host.ceremony, host.crafted([SAT // 2], add), "btc_batch_invalid")


def test_a_psbt_version_2_is_signed_like_version_0(host: Host) -> None:
    """Accepted since BIP-370 support; its attacks are in test_psbt_v2_attacks.py."""
    psbt = host.spec([SAT // 2]).build()
    v2 = PSBT.parse(psbt.serialize())
    v2.version = 2
    raw = host.write(dataclasses.replace(host.batch([host.withdrawal(SAT // 2)], psbt), psbt=v2.to_base64()))
    signed_btc(host.sign(raw)[0])


def test_an_unsigned_transaction_with_a_script_sig_is_refused(host: Host) -> None:
    """BIP-174 wants empty scriptSigs in the unsigned transaction; embit drops one silently (and its txid
    with it): the bytes do not survive the round trip."""
    psbt = host.spec([SAT // 2]).build()
    raw = bytearray(psbt.serialize())
    tx = psbt.tx.serialize()
    at = bytes(raw).index(tx)
    # version(4) | count(1) | txid(32) | vout(4) | script length (0): write a 1-byte OP_TRUE scriptSig
    cut = at + 4 + 1 + 36
    assert raw[cut] == 0
    bad_tx = tx[: 4 + 1 + 36] + b"\x01\x51" + tx[4 + 1 + 36 + 1 :]
    raw[at - 1] = len(bad_tx)  # the compact length of the transaction (under 253 bytes)
    raw[at : at + len(tx)] = bad_tx
    batch = host.batch([host.withdrawal(SAT // 2)], psbt)
    crafted = dataclasses.replace(batch, psbt=base64.b64encode(raw).decode())
    refused_unsigned(host.ceremony, host.write(crafted), "btc_batch_invalid")


def test_taproot_fields_on_a_p2wsh_input_are_refused(host: Host) -> None:
    def add(psbt: Any) -> None:
        psbt.inputs[0].taproot_internal_key = next(iter(psbt.inputs[0].bip32_derivations))

    refused_unsigned(host.ceremony, host.crafted([SAT // 2], add), "btc_foreign_input")


# -- locktime edges ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("locktime", "ok"),
    [(499_999_999, False), (500_000_000, True), (5_000_001, False), (5_000_000, True)],
    ids=["last-height", "first-time", "past-sanity-bound", "at-sanity-bound"],
)
def test_locktime_edges(host: Host, locktime: int, ok: bool) -> None:
    spec = host.spec([SAT // 2])
    spec.locktime = locktime
    raw = one_batch(host, spec)
    if ok:
        signed_btc(host.sign(raw)[0])
    else:
        refused_unsigned(host.ceremony, raw, "btc_tx_form_invalid")


# -- a second wallet file never replaces the pinned one, even a valid one -----------------------------------
def test_a_batch_for_a_wallet_with_the_same_keys_and_another_threshold_is_refused(host: Host) -> None:
    other = parse_btc_cold_wallet(wallet_bytes(host.wallet.account_keys(), 1, DAEMON.verify_key.encode().hex()))
    spec = Spec(other, [coin(other, SAT)], [(OMNI_SCRIPT, SAT // 2)], (0, SAT // 2 - FEE))
    batch: BtcBatch = dataclasses.replace(
        host.batch([host.withdrawal(SAT // 2)], spec.build()), descriptor=other.descriptor
    )
    refused_unsigned(host.ceremony, host.write(batch), "btc_wrong_wallet")


def test_an_input_whose_witness_utxo_overstates_the_coin_is_refused(host: Host) -> None:
    """The other direction of the segwit fee attack: the PSBT claims more than the coin holds."""

    def overstate(psbt: Any) -> None:
        psbt.inputs[0].witness_utxo = TransactionOutput(2 * SAT, psbt.inputs[0].witness_utxo.script_pubkey)

    refused_unsigned(host.ceremony, host.crafted([SAT // 2], overstate), "btc_utxo_mismatch")


def test_a_signed_transaction_relabelled_as_other_withdrawals_is_refused(host: Host) -> None:
    """The same PSBT again under a new batch, its output now listed as another withdrawal id with the same amount
    and destination: signed, the signer would count two withdrawals paid by one output."""
    batch, spec = host.honest()
    signed_btc(host.sign(host.write(batch))[0])
    relabelled = host.batch([host.withdrawal(SAT // 2)], spec.build())
    assert relabelled.psbt == batch.psbt
    refused_unsigned(host.ceremony, host.write(relabelled), "btc_input_already_signed")
    # the same withdrawals under another batch id are still a second signature of the same transaction
    signed_btc(host.sign(host.write(dataclasses.replace(batch, id=relabelled.id)))[0])
