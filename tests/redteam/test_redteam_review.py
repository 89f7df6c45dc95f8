"""A second red-team pass over the two newest signer features: PSBT version 2 batches (BIP-370) and the Bitcoin
proof of reserves (BIP-127). The host writes every file; the signer's review, the signature it produces and the
auditor's verifier must hold anyway.

Reserve proofs (pure, no node): PSBT version 2 fields left out or spelled so that embit would fill them in
(previous txid, amount, transaction version, sequence), fields the signer does not read (proprietary keys, a
redeem script, taproot fields, keys on the OP_TRUE output, a non_witness_utxo saying another amount, a scriptSig
embit drops), every sighash but ALL on every input (input 0 included), and the one that matters most: a
signature the signer produced verifies for the BIP-127 transaction only, never for a transaction without the
commitment input. The verifier: one key counted once (compressed or not), a coin of someone else's script, a
coin counted in the hot and the cold wallet, a malformed PSBT in the statement refused as ProofInvalid.

Batches (the real ``signer sign``): input and output counts that disagree with the maps, a v2 outpoint twice,
sequences embit would sign as another value, a transaction version other than 2, the fee's amounts disagreeing
between the two UTXO fields, proprietary keys, non-minimal integers, and the ledger across versions (a v2 batch
signed, then the same coin or transaction in a version 0 batch).
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from embit import bip32, ec
from embit.descriptor.checksum import checksum
from embit.networks import NETWORKS
from embit.psbt import PSBT
from embit.script import Script
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

from custody.errors import ProofInvalid
from custody.por import btcverify
from signer.btckeys import account_private
from signer.errors import StatementInvalid
from signer.porbtc import (
    Coin,
    ReserveInvalid,
    ReserveWallet,
    check_signed,
    commitment_txid,
    descriptor,
    parse_psbt,
    reserve_psbt,
    to_text,
    unsigned_tx,
)
from signer.porbtcsign import review_reserve, sign_reserve
from signer.porstatement import ReservePsbt, Statement, parse_statement
from tests.custody.test_por_bitcoin import bitcoin_statement
from tests.integration.bitcoin_helpers import faucet_holding, mine
from tests.redteam.conftest import refused_unsigned
from tests.redteam.test_btc_reserve_attacks import (
    ATTACKER,
    COINS,
    NETWORK,
    PINNED,
    SEEDS,
    coin,
    cold_wallet,
    honest,
    statement,
)
from tests.redteam.test_psbt_attacks import FEE, OMNI_SCRIPT, Host, pinned_host, signed_btc
from tests.redteam.test_psbt_v2_attacks import Scopes, join, split, v2
from tests.signer.btcfixtures import SAT, Spec
from tests.signer.btcfixtures import coin as batch_coin

# -- reserve proofs: the signer's review ------------------------------------------------------------------------


def reserve_maps(version: int | None = 2) -> tuple[Statement, ReserveWallet, Scopes]:
    """The honest reserve PSBT of the red-team statement, as raw key-value maps (global, inputs, output)."""
    st, wallet, psbt = honest()
    psbt.version = version
    return st, wallet, split(psbt.serialize())


def _drop(scope: int, key: bytes) -> Callable[[Scopes], None]:
    return lambda m: m[scope].__setitem__(slice(None), [kv for kv in m[scope] if kv[0] != key])


def _set(scope: int, key: bytes, value: bytes, at: int | None = None) -> Callable[[Scopes], None]:
    """``key`` set to ``value`` where it is (embit's order kept, so only the value is the attack), or a new key
    inserted at ``at`` (default: last)."""

    def edit(m: Scopes) -> None:
        keys = [k for k, _ in m[scope]]
        if key in keys:
            m[scope][keys.index(key)] = (key, value)
        else:
            m[scope].insert(len(keys) if at is None else at, (key, value))

    return edit


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


RAW_RESERVE_ATTACKS = [
    # (what, edit of the version 2 maps, code): maps are [global, input 0, input 1, input 2, output]
    ("v2 commitment input without its txid", _drop(1, b"\x0e"), "btc_reserve_invalid"),
    ("v2 coin without its output index", _drop(2, b"\x0f"), "btc_reserve_invalid"),
    ("v2 output without its amount", _drop(4, b"\x03"), "btc_reserve_invalid"),
    ("v2 without a transaction version", _drop(0, b"\x02"), "btc_reserve_invalid"),
    ("v2 transaction version 1", _set(0, b"\x02", _u32(1)), "btc_reserve_form"),
    ("v2 transaction version 0 (embit would sign 2)", _set(0, b"\x02", _u32(0)), "btc_reserve_form"),
    ("v2 sequence 0 (embit would sign 0xffffffff)", _set(2, b"\x10", _u32(0)), "btc_reserve_form"),
    ("v2 sequence with RBF", _set(3, b"\x10", _u32(0xFFFFFFFD)), "btc_reserve_form"),
    ("v2 fallback locktime", _set(0, b"\x03", _u32(800_000)), "btc_reserve_form"),
    ("v2 required height locktime", _set(2, b"\x12", _u32(800_000)), "btc_reserve_form"),
    ("v2 inputs still modifiable", _set(0, b"\x06", b"\x01"), "btc_reserve_form"),
    ("v2 sequence written in 8 bytes", _set(2, b"\x10", (0xFFFFFFFF).to_bytes(8, "little")), "btc_reserve_form"),
    ("v2 output index written in 8 bytes", _set(2, b"\x0f", (0).to_bytes(8, "little")), "btc_reserve_form"),
    ("proprietary global key", _set(0, b"\xfc\x05hosts\x00", b"x"), "btc_reserve_form"),
    ("proprietary key on input 0", _set(1, b"\xfc\x05hosts\x00", b"x"), "btc_reserve_form"),
    ("proprietary key on a coin", _set(2, b"\xfc\x05hosts\x00", b"x"), "btc_reserve_form"),
    ("proprietary key on the output", _set(4, b"\xfc\x05hosts\x00", b"x"), "btc_reserve_form"),
    ("ANYONECANPAY on input 0", _set(1, b"\x03", _u32(SIGHASH.ALL | SIGHASH.ANYONECANPAY), 0), "btc_reserve_sighash"),
    ("one input more than counted", lambda m: m.insert(2, list(m[2])), "btc_reserve_invalid"),
    ("one output more than maps", _set(0, b"\x05", b"\x02"), "btc_reserve_invalid"),
]


@pytest.mark.parametrize(
    ("what", "edit", "code"), RAW_RESERVE_ATTACKS, ids=[a[0].replace(" ", "-") for a in RAW_RESERVE_ATTACKS]
)
def test_a_reserve_psbt_spelled_otherwise_is_refused(what: str, edit: Callable[[Scopes], None], code: str):
    """Before the fix, a version 2 PSBT missing a previous txid or an amount crashed the review (TypeError)
    instead of a refusal, and ANYONECANPAY on input 0 was accepted."""
    st, _, maps = reserve_maps()
    edit(maps)
    with pytest.raises(ReserveInvalid) as refused:
        review_reserve(st, join(maps).encode(), PINNED)
    assert refused.value.code == code, refused.value.message


def _previous_tx_paying(amount: int) -> Callable[[Statement, Any], None]:
    """A non_witness_utxo for input 1 with the coin's script and another amount (the fee-attack shape)."""

    def edit(st: Statement, psbt: Any) -> None:
        c = COINS[0]
        outs = [TransactionOutput(amount, Script(c.script)) for _ in range(c.vout + 1)]
        psbt.inputs[1].non_witness_utxo = Transaction(2, [TransactionInput(bytes(32), 0)], outs, 0)

    return edit


def _sighash_on_every(kind: int) -> Callable[[Statement, Any], None]:
    def edit(st: Statement, psbt: Any) -> None:
        for inp in psbt.inputs[1:]:
            inp.sighash_type = kind

    return edit


def _key_on_output(st: Statement, psbt: Any) -> None:
    psbt.outputs[0].bip32_derivations = dict(psbt.inputs[1].bip32_derivations)


def _script_on_output(st: Statement, psbt: Any) -> None:
    psbt.outputs[0].witness_script = psbt.inputs[1].witness_script


def _redeem_script(st: Statement, psbt: Any) -> None:
    psbt.inputs[1].redeem_script = Script(
        b"\x00\x20" + hashlib.sha256(bytes(psbt.inputs[1].witness_script.data)).digest()
    )


def _taproot_key(st: Statement, psbt: Any) -> None:
    psbt.inputs[2].taproot_internal_key = next(iter(psbt.inputs[2].bip32_derivations))


def _commitment_with_previous_tx(st: Statement, psbt: Any) -> None:
    psbt.inputs[0].non_witness_utxo = Transaction(2, [TransactionInput(bytes(32), 0)], [], 0)


def _coin_twice(st: Statement, psbt: Any) -> None:
    psbt.inputs.append(copy.deepcopy(psbt.inputs[1]))


def _tx_version_1(st: Statement, psbt: Any) -> None:
    psbt.tx_version = 1


def _statement_edited_after(st: Statement, psbt: Any) -> None:
    """The host builds the PSBT for one statement and shows another (same snapshot id, another block)."""
    other = copy.deepcopy(st.claims)
    other["bitcoin"]["block"]["hash"] = "22" * 32
    psbt.inputs[0].txid = bytes.fromhex(commitment_txid(Statement(other).hash))


OBJECT_RESERVE_ATTACKS = [
    (_previous_tx_paying(COINS[0].amount + 1), "btc_reserve_amount_mismatch"),
    (_previous_tx_paying(COINS[0].amount - 1), "btc_reserve_amount_mismatch"),
    (_sighash_on_every(SIGHASH.ALL | SIGHASH.ANYONECANPAY), "btc_reserve_sighash"),
    (_sighash_on_every(SIGHASH.NONE | SIGHASH.ANYONECANPAY), "btc_reserve_sighash"),
    (_sighash_on_every(SIGHASH.SINGLE | SIGHASH.ANYONECANPAY), "btc_reserve_sighash"),
    (_sighash_on_every(0), "btc_reserve_sighash"),
    (_key_on_output, "btc_reserve_form"),
    (_script_on_output, "btc_reserve_form"),
    (_redeem_script, "btc_reserve_form"),
    (_taproot_key, "btc_reserve_form"),
    (_commitment_with_previous_tx, "btc_reserve_spend"),
    (_coin_twice, "btc_reserve_foreign_input"),
    (_tx_version_1, "btc_reserve_form"),
    (_statement_edited_after, "btc_reserve_commitment"),
]


@pytest.mark.parametrize(
    ("attack", "code"),
    OBJECT_RESERVE_ATTACKS,
    ids=[f"{a.__qualname__.split('.')[0].strip('_')}-{i}" for i, (a, _) in enumerate(OBJECT_RESERVE_ATTACKS)],
)
def test_a_reserve_psbt_carrying_what_the_signer_does_not_read_is_refused(
    attack: Callable[[Statement, Any], None], code: str
):
    """Before the fix, a non_witness_utxo with another amount, a redeem script, taproot fields and keys or a
    script on the OP_TRUE output were accepted (and signed past) without being read."""
    st, _, psbt = honest()
    attack(st, psbt)
    with pytest.raises(ReserveInvalid) as refused:
        review_reserve(st, to_text(psbt).encode(), PINNED)
    assert refused.value.code == code, refused.value.message


def test_a_consistent_non_witness_utxo_is_accepted():
    """What a node's wallet adds (the coin's own transaction) is no attack."""
    c = COINS[0]
    prev = Transaction(2, [TransactionInput(bytes(32), 0)], [TransactionOutput(c.amount, Script(c.script))] * 3, 0)
    st2, wallet = statement((type(c)(bytes(prev.txid()).hex(), c.vout, *_rest(c)), COINS[1]))
    psbt = reserve_psbt(st2.hash, wallet)
    psbt.inputs[1].non_witness_utxo = prev
    review_reserve(st2, to_text(psbt).encode(), PINNED)


def _rest(c: Any) -> tuple[Any, ...]:
    return (c.amount, c.script, c.branch, c.index, c.height)


def test_a_script_sig_in_a_version_0_unsigned_transaction_is_refused():
    """embit drops it silently when it builds what it signs: the file would say more than is signed."""
    st, _, psbt = honest()
    raw = bytearray(psbt.serialize())
    tx = bytes(psbt.tx.serialize())
    at = bytes(raw).index(tx)
    bad = tx[: 4 + 1 + 36] + b"\x01\x51" + tx[4 + 1 + 36 + 1 :]  # input 0's scriptSig: OP_TRUE
    assert len(bad) < 253 and raw[at - 1] == len(tx)  # a one-byte length before and after
    crafted = bytes(raw[: at - 1]) + bytes([len(bad)]) + bad + bytes(raw[at + len(tx) :])
    assert PSBT.parse(crafted).tx.serialize() == tx  # embit reads it, and drops the scriptSig
    with pytest.raises(ReserveInvalid) as refused:
        review_reserve(st, base64.b64encode(crafted), PINNED)
    assert refused.value.code == "btc_reserve_form", refused.value.message


def test_a_version_2_reserve_psbt_is_signed_as_the_bip127_transaction_itself():
    """The version 2 spelling carries the same transaction: the signatures made on it verify on the version 0
    PSBT the daemon rebuilds, and the operator sees the same commitment."""
    st, wallet, psbt = honest()
    psbt.version = 2
    _, parsed = review_reserve(st, to_text(psbt).encode(), PINNED)
    for seed in SEEDS[:2]:
        parsed = parse_psbt(sign_reserve(parsed, wallet, account_private(seed, NETWORK), PINNED))
    assert parsed.version == 2
    as_v0 = reserve_psbt(st.hash, wallet)
    for ours, theirs in zip(as_v0.inputs, parsed.inputs, strict=True):
        ours.partial_sigs.update(theirs.partial_sigs)
    assert check_signed(st.hash, wallet, as_v0) == 2


def _verifies(pub: Any, sig: bytes, digest: bytes) -> bool:
    return bool(pub.verify(ec.Signature.parse(sig[:-1]), digest))


def test_no_signature_of_the_signer_spends_a_coin_in_a_transaction_without_the_commitment():
    """The property the whole proof rests on: each signature is SIGHASH_ALL over the BIP-127 transaction, and
    verifies for no transaction that could be mined (the same without input 0, to OP_TRUE or to the host, with
    the coins alone or each alone)."""
    st, wallet, psbt = honest()
    signed = parse_psbt(sign_reserve(psbt, wallet, account_private(SEEDS[0], NETWORK), PINNED))
    desc = descriptor(wallet.descriptor)
    real = unsigned_tx(st.hash, wallet)
    spends = []
    for script in (b"\x51", b"\x00\x14" + ATTACKER[:20]):
        out = [TransactionOutput(wallet.balance, Script(script))]
        spends.append(Transaction(2, real.vin[1:], out, 0))  # the coins alone
        spends += [Transaction(2, [vin], out, 0) for vin in real.vin[1:]]  # each coin alone
    for i, c in enumerate(wallet.coins, 1):
        (pub, sig), *others = signed.inputs[i].partial_sigs.items()
        assert not others and sig[-1] == SIGHASH.ALL
        code = Script(desc.script_code(c.branch, c.index))
        assert _verifies(pub, sig, real.sighash_segwit(i, code, c.amount, SIGHASH.ALL))
        for tx in spends:
            at = [k for k, vin in enumerate(tx.vin) if (vin.txid, vin.vout) == (real.vin[i].txid, c.vout)]
            if not at:
                continue
            j = at[0]
            for kind in (SIGHASH.ALL, SIGHASH.ALL | SIGHASH.ANYONECANPAY, SIGHASH.NONE, SIGHASH.SINGLE):
                if kind == SIGHASH.SINGLE and j >= len(tx.vout):
                    continue
                assert not _verifies(pub, sig[:-1] + bytes([kind]), tx.sighash_segwit(j, code, c.amount, kind))


# -- reserve proofs: the auditor's verifier ---------------------------------------------------------------------
def test_one_key_signing_twice_compressed_and_uncompressed_is_not_two_signers():
    st, wallet, psbt = honest()
    one = parse_psbt(sign_reserve(psbt, wallet, account_private(SEEDS[0], NETWORK), PINNED))
    for inp in one.inputs[1:]:
        (pub, sig), *_ = inp.partial_sigs.items()
        loose = ec.PublicKey.parse(pub.sec())
        loose.compressed = False
        inp.partial_sigs[loose] = sig
    with pytest.raises(ReserveInvalid) as refused:
        check_signed(st.hash, wallet, parse_psbt(to_text(one)))
    assert refused.value.code == "btc_reserve_foreign_input"


def _hot_descriptor(seed: bytes) -> str:
    net = NETWORKS["regtest"]
    root = bip32.HDKey.from_seed(seed, version=net["xprv"])
    account = root.derive("m/84h/1h/0h").to_public()
    body = f"wpkh([{root.my_fingerprint.hex()}/84h/1h/0h]{account.to_base58(version=net['xpub'])}/<0;1>/*)"
    return f"{body}#{checksum(body)}"


def test_the_statement_cannot_claim_someone_elses_coin_or_one_coin_twice():
    st = bitcoin_statement()
    theirs = cold_wallet([ATTACKER, *SEEDS[1:]])
    stolen = coin(theirs, 5, 0, 0, 10**8).body()  # another wallet's coin, at a path ours has
    hot_text = _hot_descriptor(SEEDS[0])
    hot = descriptor(hot_text)
    twice = copy.deepcopy(st.claims)
    ours = twice["bitcoin"]["wallets"][0]["utxos"][0]
    # the cold wallet's coin listed again under the hot wallet, with a hot script so the descriptor check passes
    again = {**ours, "script": hot.script(0, 0).hex(), "path": "0/0"}
    twice["bitcoin"]["wallets"].append(
        {"kind": "hot", "descriptor": hot_text, "balance": again["amount"], "utxos": [again]}
    )
    claimed = copy.deepcopy(st.claims)
    claimed["bitcoin"]["wallets"][0]["utxos"].append(stolen)
    for claims, fragment in (
        (claimed, "the script is not the descriptor's at 0/0"),
        (twice, "is listed twice"),
    ):
        w = claims["bitcoin"]["wallets"][0]
        w["balance"] = str(sum(int(u["amount"]) for u in w["utxos"]))
        with pytest.raises(StatementInvalid, match=fragment):
            parse_statement(Statement(claims, bip127=st.bip127 * len(claims["bitcoin"]["wallets"])).to_bytes())


@pytest.mark.parametrize(
    ("what", "edit"),
    [
        ("v2 without a previous txid", _drop(1, b"\x0e")),
        ("v2 without an output amount", _drop(4, b"\x03")),
    ],
    ids=["no-txid", "no-amount"],
)
def test_the_verifier_refuses_a_malformed_reserve_psbt_instead_of_crashing(what: str, edit: Callable[[Scopes], None]):
    """Before the fix: TypeError / AttributeError out of ``custody por verify``."""
    st = bitcoin_statement()
    psbt = parse_psbt(st.bip127[0].psbt)
    psbt.version = 2
    maps = split(psbt.serialize())
    edit(maps)
    crafted = Statement(st.claims, bip127=(ReservePsbt(st.bip127[0].wallet, join(maps)),))
    with pytest.raises(ProofInvalid, match=r"cold Bitcoin wallet's reserve proof: .* version 2 PSBT lacks"):
        btcverify.check_control(crafted)


def test_a_reserve_proof_signed_by_fewer_than_the_threshold_fails_verify():
    st = bitcoin_statement()
    psbt = parse_psbt(st.bip127[0].psbt)
    for inp in psbt.inputs[1:]:
        first = next(iter(inp.partial_sigs))
        del inp.partial_sigs[first]
    weak = Statement(st.claims, bip127=(ReservePsbt(st.bip127[0].wallet, to_text(psbt)),))
    with pytest.raises(ProofInvalid, match="has 1 valid signatures, it needs 2"):
        btcverify.check_control(weak)


# -- version 2 batches: the real `signer sign` ------------------------------------------------------------------
@pytest.fixture(name="host")
def btc_host(ceremony: Any) -> Host:
    return pinned_host(ceremony)


def two_coin_batch(host: Host, edit: Callable[[Any], None] | None = None) -> tuple[Any, Spec]:
    spec = Spec(
        host.wallet,
        [batch_coin(host.wallet, SAT // 2, 0, 0), batch_coin(host.wallet, SAT // 2, 0, 1)],
        [(OMNI_SCRIPT, SAT // 2)],
        (0, SAT // 2 - FEE),
    )
    psbt = v2(spec.build())
    if edit is not None:
        edit(psbt)
    return host.batch([host.withdrawal(SAT // 2)], psbt), spec


def raw_v2(host: Host, edit: Callable[[Scopes], None]) -> bytes:
    """The two-coin version 2 batch with its PSBT's maps edited: [global, input 0, input 1, output 0, output 1]."""
    batch, _ = two_coin_batch(host)
    maps = split(base64.b64decode(batch.psbt))
    edit(maps)
    return host.edited_body(batch, lambda body: body.__setitem__("psbt", join(maps)))


def _second_input_is_first(m: Scopes) -> None:
    first = dict(m[1])
    for key in (b"\x0e", b"\x0f"):
        _set(2, key, first[key])(m)


RAW_BATCH_ATTACKS = [
    ("input count 1 for two input maps", _set(0, b"\x04", b"\x01"), "btc_batch_invalid"),
    ("input count 3 for two input maps", _set(0, b"\x04", b"\x03"), "btc_batch_invalid"),
    ("output count 3 for two output maps", _set(0, b"\x05", b"\x03"), "btc_batch_invalid"),
    ("no sequence field (read as 0xffffffff)", _drop(1, b"\x10"), "btc_batch_invalid"),
    ("sequence 0 (embit would sign 0xffffffff)", _set(2, b"\x10", _u32(0)), "btc_tx_form_invalid"),
    ("sequence RBF in 8 bytes", _set(1, b"\x10", (0xFFFFFFFD).to_bytes(8, "little")), "btc_batch_invalid"),
    ("transaction version 1", _set(0, b"\x02", _u32(1)), "btc_tx_form_invalid"),
    ("transaction version 0 (embit would sign 2)", _set(0, b"\x02", _u32(0)), "btc_tx_form_invalid"),
    ("proprietary key on a v2 input", _set(2, b"\xfc\x05hosts\x00", b"x"), "btc_batch_invalid"),
    ("the first outpoint twice", _second_input_is_first, "btc_duplicate_input"),
]


@pytest.mark.parametrize(
    ("what", "edit", "code"), RAW_BATCH_ATTACKS, ids=[a[0].replace(" ", "-") for a in RAW_BATCH_ATTACKS]
)
def test_a_version_2_batch_spelled_otherwise_is_refused(host: Host, what: str, edit: Any, code: str):
    refused_unsigned(host.ceremony, raw_v2(host, edit), code)


def test_a_version_2_witness_utxo_that_disagrees_with_the_previous_transaction_is_refused(host: Host):
    """The fee is judged from the previous transaction's amount; a witness_utxo saying less is the segwit fee
    attack, in version 2 too."""

    def understate(psbt: Any) -> None:
        utxo = psbt.inputs[1].witness_utxo
        psbt.inputs[1].witness_utxo = TransactionOutput(utxo.value - 10_000, utxo.script_pubkey)

    batch, _ = two_coin_batch(host, understate)
    refused_unsigned(host.ceremony, host.write(batch), "btc_utxo_mismatch")


def test_a_version_2_batch_signed_then_its_coins_in_a_version_0_batch(host: Host):
    """The ledger keys on the transaction and its outpoints, whatever the PSBT version: the same coins under
    other withdrawals, or the same transaction relabelled, are refused."""
    batch, spec = two_coin_batch(host)
    signed_btc(host.sign(host.write(batch))[0])
    v0 = PSBT.parse(base64.b64decode(batch.psbt))
    v0.version = None
    # the very transaction, as version 0, under another withdrawal id: a relabelling
    relabelled = host.batch([host.withdrawal(SAT // 2)], v0)
    refused_unsigned(host.ceremony, host.write(relabelled), "btc_input_already_signed")
    # another transaction spending one of its coins
    other = Spec(host.wallet, spec.coins[1:], [(OMNI_SCRIPT, SAT // 4)], (0, SAT // 4 - FEE)).build()
    refused_unsigned(
        host.ceremony, host.write(host.batch([host.withdrawal(SAT // 4)], other)), "btc_input_already_signed"
    )
    # the same withdrawals from a fresh coin: another transaction paying them again
    fresh = Spec(host.wallet, [batch_coin(host.wallet, SAT, 0, 2)], [(OMNI_SCRIPT, SAT // 2)], (0, SAT // 2 - FEE))
    again = host.batch(list(batch.withdrawals), fresh.build())
    refused_unsigned(host.ceremony, host.write(again), "withdrawal_already_signed")


@pytest.mark.parametrize("kind", [SIGHASH.ALL | SIGHASH.ANYONECANPAY, SIGHASH.NONE, SIGHASH.SINGLE])
def test_a_version_2_input_asking_for_another_sighash_is_refused(host: Host, kind: int):
    def ask(psbt: Any) -> None:
        psbt.inputs[1].sighash_type = kind

    batch, _ = two_coin_batch(host, ask)
    refused_unsigned(host.ceremony, host.write(batch), "btc_sighash_forbidden")


# -- reserve proofs: the verifier against a real node -----------------------------------------------------------
def test_a_coin_created_after_the_snapshot_block_is_refused_by_the_node_check(bitcoind: Any):
    """The host lists a coin of the wallet's that arrived one block after the snapshot, claiming it older (or
    as of its real block, later than the snapshot): the verifier's own node dates it and refuses either."""
    node = bitcoind.node()
    faucet = faucet_holding(bitcoind, Decimal(2))
    height = int(node.call("getblockcount"))
    snapshot = {"height": height, "hash": str(node.call("getblockhash", height))}
    script = PINNED.script_pubkey(0, 7)
    txid = str(faucet.call("sendtoaddress", Script(script).address(NETWORKS[NETWORK]), Decimal(1)))
    mine(bitcoind, 1)
    vout = next(o["n"] for o in faucet.call("getrawtransaction", txid, True)["vout"] if o["value"] == 1)
    for claimed in (height, height + 1):
        late = Coin(txid, int(vout), SAT, script, 0, 7, claimed)
        wallet = ReserveWallet("cold", PINNED.descriptor, (late,))
        claims = {"bitcoin": {"asset": "BTC", "network": NETWORK, "block": snapshot, "wallets": [wallet.body()]}}
        with pytest.raises(ProofInvalid, match=f"was created in block {height + 1}"):
            btcverify.check_chain(Statement(claims), node)


def test_a_statement_claiming_the_pinned_keys_under_another_descriptor_is_refused():
    """The same three keys at threshold 1: every coin's script differs, and one owner's signature would be a
    'threshold' there. The signer reviews against the descriptor it pinned, text for text."""
    body = PINNED.descriptor.rsplit("#", 1)[0].replace("sortedmulti(2,", "sortedmulti(1,")
    text = f"{body}#{checksum(body)}"
    one = descriptor(text)
    coins = (Coin(COINS[0].txid, COINS[0].vout, COINS[0].amount, one.script(0, 0), 0, 0, COINS[0].height),)
    wallet = ReserveWallet("cold", text, coins)
    st, _ = statement()
    claims = copy.deepcopy(st.claims)
    claims["bitcoin"]["wallets"] = [wallet.body()]
    crafted = Statement(claims)
    with pytest.raises(ReserveInvalid) as refused:
        review_reserve(crafted, to_text(reserve_psbt(crafted.hash, wallet)).encode(), PINNED)
    assert refused.value.code == "btc_reserve_wrong_wallet"
