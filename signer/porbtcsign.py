"""``signer por sign-bitcoin``: an owner of the pinned Bitcoin cold wallet signs its BIP-127 reserve PSBT for a
statement, offline. Named steps: ``review_reserve`` (every check, nothing trusted from the host), ``describe``
(what the operator reads), ``sign_reserve`` (this owner's partial signatures).

The host writes the PSBT; a compromised host would like it to be a real spend. So before anything is signed,
in this order (the first failure is the refusal, each with its own code, ``signer.porbtc``):

1. the statement is format 4 and claims the pinned wallet (network and descriptor): ``btc_reserve_wrong_wallet``;
2. input 0 carries nothing and is not one of the statement's coins (``btc_reserve_spend``: a real coin there
   would make every other signature a real payment to the OP_TRUE output, which anyone can take), and it is
   exactly ``commitment_txid(this statement's hash):0``, the hash the operator confirms (``btc_reserve_commitment``);
3. every input (input 0 too) asks for SIGHASH_ALL or nothing (``btc_reserve_sighash``);
4. inputs 1…n are exactly the statement's coins of this wallet in its order, each re-derived from the pinned
   keys at the statement's path (derivations, witness script, script: ``btc_reserve_foreign_input``), its
   witness_utxo (and its non_witness_utxo, if it has one) the statement's amount and script
   (``btc_reserve_amount_mismatch``);
5. one output, the coins' total, to OP_TRUE (``btc_reserve_output``);
6. version 2, locktime 0, final sequences, no unknown or finalized fields, no redeem script or taproot field on
   an input, no keys or scripts on the output, and the unsigned transaction byte for byte the one rebuilt from
   the statement (``btc_reserve_form``).

Before all of these, the file is a PSBT with every field BIP-370 requires of its version
(``btc_reserve_invalid``), written the one way embit writes it back (``btc_reserve_form``): what embit would
fill in, drop or read from a longer integer is refused, so what is reviewed is all the file says.

The statement's figures and assets are checked against the newest verified policy first, as for the Safe
(``signer.porstatement.check_policy``).
"""

from __future__ import annotations

from typing import Any

from embit.script import Script
from embit.transaction import SIGHASH

from policies.text import escape
from policies.units import format_amount
from signer.btcwallet import BtcColdWallet, p2wsh
from signer.porbtc import (
    FINAL_SEQUENCE,
    OP_TRUE,
    VERSION,
    Coin,
    ReserveAmountMismatch,
    ReserveCommitment,
    ReserveForeignInput,
    ReserveForm,
    ReserveInvalid,
    ReserveOutput,
    ReserveSighash,
    ReserveSpend,
    ReserveWallet,
    ReserveWrongWallet,
    commitment_txid,
    parse_psbt,
    to_text,
    unsigned_tx,
    wallets,
)
from signer.porstatement import Statement
from signer.psbtreview import derivation


def review_reserve(statement: Statement, raw_psbt: bytes, pinned: BtcColdWallet) -> tuple[ReserveWallet, Any]:
    """The pinned wallet's entry in the statement and the parsed PSBT, if every check of the module passes."""
    wallet = claimed_wallet(statement, pinned)
    psbt = parse_psbt(raw_psbt)
    if not written_back(raw_psbt, psbt):
        raise ReserveForm(
            "the PSBT is not written the one way this signer writes it back (a field repeated, reordered or "
            "unknown, or a scriptSig in its unsigned transaction that the signature would not cover)"
        )
    if not psbt.inputs:
        raise ReserveCommitment("the PSBT has no inputs: input 0 must be the statement's commitment")
    check_commitment(statement, wallet, psbt)
    for i, inp in enumerate(psbt.inputs):  # input 0 too: no input of a reserve proof asks for another sighash
        if inp.sighash_type not in (None, SIGHASH.ALL):
            raise ReserveSighash(
                f"input {i} asks for sighash {inp.sighash_type:#x}; a reserve proof is signed with SIGHASH_ALL only, "
                "which commits to input 0 (the statement) and the one output"
            )
    check_coins(wallet, psbt, pinned)
    outputs = [(bytes(o.script_pubkey.data), int(o.value)) for o in psbt.tx.vout]
    if outputs != [(OP_TRUE, wallet.balance)]:
        raise ReserveOutput(
            f"the PSBT has {len(outputs)} outputs; a reserve proof has exactly one, of the coins' total "
            f"{format_amount(wallet.balance, 8)} BTC, to OP_TRUE"
        )
    check_form(statement, wallet, psbt)
    return wallet, psbt


def written_back(raw: bytes, psbt: Any) -> bool:
    """``raw`` (binary, or base64 around which blank space is allowed) is the very bytes embit writes for
    ``psbt``: what is reviewed is all the file says, as for a batch (``signer.btcbatch.decode_psbt``)."""
    if raw[:5] == b"psbt\xff":
        return bytes(psbt.serialize()) == raw
    return to_text(psbt) == raw.decode("ascii").strip()


def claimed_wallet(statement: Statement, pinned: BtcColdWallet) -> ReserveWallet:
    if statement.format != 4:
        raise ReserveWrongWallet("the statement has no Bitcoin wallets (it is not format 4)")
    network = statement.claims["bitcoin"]["network"]
    if network != pinned.network:
        raise ReserveWrongWallet(
            f"the statement is for Bitcoin {escape(network)}, the pinned wallet is {pinned.network}"
        )
    found = [w for w in wallets(statement.claims) if w.descriptor == pinned.descriptor]
    if not found:
        raise ReserveWrongWallet(f"the statement does not claim the pinned Bitcoin wallet …#{pinned.checksum}")
    if found[0].kind != "cold":
        raise ReserveWrongWallet("the statement lists the pinned Bitcoin wallet as a hot wallet")
    return found[0]


def check_commitment(statement: Statement, wallet: ReserveWallet, psbt: Any) -> None:
    first, point = psbt.inputs[0], f"{bytes(psbt.inputs[0].txid).hex()}:{psbt.inputs[0].vout}"
    spend = (first.witness_utxo, first.non_witness_utxo, first.witness_script, first.redeem_script)
    coins = {c.outpoint for w in wallets(statement.claims) for c in w.coins}
    if any(x is not None for x in spend) or first.bip32_derivations or first.partial_sigs or point in coins:
        raise ReserveSpend(
            f"input 0 ({point}) is a coin with what it takes to spend it: a reserve proof's input 0 is the "
            "statement's commitment, which no coin has. Signing this would sign a real payment"
        )
    expected = commitment_txid(statement.hash)
    if point != f"{expected}:0":
        raise ReserveCommitment(
            f"input 0 is {point}, not the commitment to this statement ({expected}:0, from statement hash "
            f"{statement.hash.hex()}): it is for another statement, or not a proof at all"
        )


def check_coins(wallet: ReserveWallet, psbt: Any, pinned: BtcColdWallet) -> None:
    listed = {c.outpoint: c for c in wallet.coins}
    points = [f"{bytes(inp.txid).hex()}:{inp.vout}" for inp in psbt.inputs[1:]]
    for i, (inp, point) in enumerate(zip(psbt.inputs[1:], points, strict=True), 1):
        coin = listed.get(point)
        if coin is None:
            raise ReserveForeignInput(f"input {i} ({point}) is not a coin the statement lists for this wallet")
        if points.count(point) > 1:
            raise ReserveForeignInput(f"input {i} ({point}) is spent twice")
        branch, index = derivation(inp.bip32_derivations, pinned, f"input {i}", ReserveForeignInput)
        script = pinned.witness_script(branch, index)
        if (branch, index) != (coin.branch, coin.index) or p2wsh(script) != coin.script:
            raise ReserveForeignInput(f"input {i} ({point}): its keys are not the wallet's at the statement's path")
        if inp.witness_script is None or bytes(inp.witness_script.data) != script:
            raise ReserveForeignInput(f"input {i} ({point}): its witness script is not the wallet's")
        utxo = inp.witness_utxo
        check_previous_tx(i, point, inp, coin)
        if utxo is None or (int(utxo.value), bytes(utxo.script_pubkey.data)) != (coin.amount, coin.script):
            shown = "nothing" if utxo is None else f"{format_amount(int(utxo.value), 8)} BTC"
            raise ReserveAmountMismatch(
                f"input {i} ({point}) says it holds {shown}; the statement lists {format_amount(coin.amount, 8)} BTC "
                "to the wallet's script"
            )
    if points != [c.outpoint for c in wallet.coins]:
        raise ReserveInvalid("the PSBT's inputs are not every coin the statement lists for this wallet, in its order")


def check_previous_tx(i: int, point: str, inp: Any, coin: Coin) -> None:
    """A non_witness_utxo is optional (BIP-143 signs the amount itself), but one that is given must be the coin's
    transaction with the statement's output: a PSBT that says two things about a coin is refused, not signed."""
    prev = inp.non_witness_utxo
    if prev is None:
        return
    if bytes(prev.txid()) != bytes(inp.txid) or inp.vout >= len(prev.vout):
        raise ReserveAmountMismatch(f"input {i} ({point}): its previous transaction (non_witness_utxo) is another")
    out = prev.vout[inp.vout]
    if (int(out.value), bytes(out.script_pubkey.data)) != (coin.amount, coin.script):
        raise ReserveAmountMismatch(
            f"input {i} ({point}): its previous transaction pays {format_amount(int(out.value), 8)} BTC or to another "
            f"script; the statement lists {format_amount(coin.amount, 8)} BTC to the wallet's script"
        )


def check_form(statement: Statement, wallet: ReserveWallet, psbt: Any) -> None:
    if psbt.tx_version != VERSION or int(psbt.locktime or 0) != 0:
        raise ReserveForm("a reserve proof is a version 2 transaction with locktime 0")
    if any(inp.sequence != FINAL_SEQUENCE for inp in psbt.inputs):
        raise ReserveForm("a reserve proof's inputs have final sequences (0xffffffff)")
    if psbt.unknown or any(x.unknown for x in [*psbt.inputs, *psbt.outputs]) or psbt.xpubs:
        raise ReserveForm("the PSBT carries fields this signer does not expect")
    for i, inp in enumerate(psbt.inputs):
        if inp.final_scriptwitness is not None or inp.final_scriptsig is not None:
            raise ReserveForm(f"input {i} is finalized")
        taproot = (inp.taproot_bip32_derivations, inp.taproot_scripts, inp.taproot_sigs)
        if inp.redeem_script is not None or any(taproot) or inp.taproot_internal_key or inp.taproot_merkle_root:
            raise ReserveForm(f"input {i} carries a redeem script or taproot field: not a P2WSH coin of the wallet")
    for n, out in enumerate(psbt.outputs):
        # The OP_TRUE output is nobody's: a derivation or script on it would be the host's claim to it
        if out.bip32_derivations or out.witness_script is not None or out.redeem_script is not None:
            raise ReserveForm(f"output {n} carries keys or scripts; the OP_TRUE output has none")
        if out.taproot_bip32_derivations or out.taproot_internal_key is not None:
            raise ReserveForm(f"output {n} carries keys or scripts; the OP_TRUE output has none")
    if bytes(psbt.tx.serialize()) != bytes(unsigned_tx(statement.hash, wallet).serialize()):
        raise ReserveForm("the transaction is not the one rebuilt from the statement")


def describe(statement: Statement, wallet: ReserveWallet) -> list[str]:
    """What the owner reads before typing the start of the statement hash."""
    b = statement.claims["bitcoin"]
    return [
        "",
        f"bitcoin reserve proof (BIP-127) of the cold wallet …#{escape(wallet.descriptor[-8:])}",
        f"  at {escape(b['network'])} block {b['block']['height']} ({escape(b['block']['hash'])})",
        f"  {len(wallet.coins)} coins, {format_amount(wallet.balance, 8)} {escape(b['asset'])}",
        f"  input 0 commits to statement hash {statement.hash.hex()}",
        f"  (txid {commitment_txid(statement.hash)}, which no coin has: it can never be mined)",
    ]


def sign_reserve(psbt: Any, wallet: ReserveWallet, account: Any, pinned: BtcColdWallet) -> str:
    """This owner's SIGHASH_ALL partial signature on every coin (BIP-143); the PSBT in base64. ``account`` is the
    owner's BIP-48 account private key."""
    for i, coin in enumerate(wallet.coins, 1):
        child = account.derive([coin.branch, coin.index])
        pub = child.key.get_public_key()
        script = pinned.witness_script(coin.branch, coin.index)
        if bytes(pub.sec()) not in script:
            raise ReserveForeignInput(f"this key is not one of input {i}'s keys; nothing was signed")
        digest = psbt.sighash_segwit(i, Script(script), coin.amount, sighash=SIGHASH.ALL)
        psbt.inputs[i].partial_sigs[pub] = bytes(child.key.sign(digest).serialize()) + bytes([SIGHASH.ALL])
    return to_text(psbt)
