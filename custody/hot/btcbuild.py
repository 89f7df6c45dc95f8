"""Building and signing the hot wallet's Bitcoin payments: pure functions, no node and no database, so each rule
can be tested alone.

A payment spends P2WPKH coins of the hot wallet's BIP-84 account, pays many withdrawals (one output each) and
sends what is left to one change output on branch 1. Every input signals replaceability (BIP-125), so a stuck
payment can be replaced by a version that spends exactly the same coins, pays exactly the same outputs, and
gives more to the fee out of the change: whichever version is mined, the other can never be.

Sizes are counted with the largest signature (72 bytes), so the fee paid is never below the rate asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from embit.script import Script, Witness, p2pkh, p2wpkh
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

RBF_SEQUENCE = 0xFFFFFFFD  # below 0xfffffffe: replaceable (BIP-125), and no relative lock time
DUST = 546  # satoshis: a change output below this is not made (it goes to the fee)
# weight units: an input's outpoint, empty scriptSig and sequence (41 bytes), and its witness at most
# (item count, a 72-byte signature with its sighash byte, a 33-byte key)
INPUT_WEIGHT = 41 * 4 + (1 + 1 + 72 + 1 + 33)
OVERHEAD_WEIGHT = (4 + 4) * 4 + 2  # version, locktime; the segwit marker and flag
P2WPKH_SCRIPT_LEN = 22


@dataclass(frozen=True)
class Coin:
    """A coin of the hot wallet: its outpoint, amount and the derivation of its key under the account."""

    txid: str  # display order
    vout: int
    amount: int  # satoshis
    branch: int
    index: int


@dataclass(frozen=True)
class Plan:
    coins: tuple[Coin, ...]
    outputs: tuple[tuple[bytes, int], ...]  # (scriptPubKey, satoshis), the withdrawals' in order
    change: int  # satoshis to the change script (0: no change output)
    fee: int
    fee_rate: int  # sat/vB asked for
    vsize: int  # the largest the signed transaction can be


@dataclass(frozen=True)
class Signed:
    txid: str
    raw: str  # hex
    vsize: int  # of this signed transaction


def _varint_len(n: int) -> int:
    return 1 if n < 0xFD else 3 if n <= 0xFFFF else 5


def vsize(inputs: int, output_scripts: Sequence[int]) -> int:
    """The largest vsize of a transaction spending ``inputs`` P2WPKH coins to outputs of these script lengths."""
    outs = sum(8 + _varint_len(n) + n for n in output_scripts)
    weight = OVERHEAD_WEIGHT + (_varint_len(inputs) + _varint_len(len(output_scripts)) + outs) * 4
    return math.ceil((weight + inputs * INPUT_WEIGHT) / 4)


def plan(coins: Sequence[Coin], outputs: Sequence[tuple[bytes, int]], fee_rate: int, max_fee: int) -> Plan | None:
    """The fewest of ``coins`` (largest first) that pay ``outputs`` at ``fee_rate``, with change when it is not
    dust; None if the coins do not suffice or the fee would pass ``max_fee``."""
    want = sum(amount for _, amount in outputs)
    scripts = [len(script) for script, _ in outputs]
    chosen: list[Coin] = []
    total = 0
    for coin in sorted(coins, key=lambda c: (-c.amount, c.txid, c.vout)):
        chosen.append(coin)
        total += coin.amount
        size = vsize(len(chosen), [*scripts, P2WPKH_SCRIPT_LEN])
        fee = fee_rate * size
        if total >= want + fee + DUST:
            return _capped(Plan(tuple(chosen), tuple(outputs), total - want - fee, fee, fee_rate, size), max_fee)
        bare = vsize(len(chosen), scripts)
        if total >= want + fee_rate * bare:  # no change: what is left over is the fee
            return _capped(Plan(tuple(chosen), tuple(outputs), 0, total - want, fee_rate, bare), max_fee)
    return None


def _capped(p: Plan, max_fee: int) -> Plan | None:
    return p if 0 < p.fee <= max_fee else None


def bumped(old: Plan, fee_rate: int, incremental: int, max_fee: int) -> Plan | None:
    """The replacement of ``old`` at ``fee_rate``: the same coins and outputs, the change smaller by the extra
    fee. BIP-125 asks that it pay more in total, and more by at least ``incremental`` sat/vB of its own size;
    None if that needs more than the change holds (it stays dust-free) or more than ``max_fee``."""
    fee = max(fee_rate * old.vsize, old.fee + incremental * old.vsize)
    if old.change == 0 or fee <= old.fee or fee > max_fee:
        return None
    change = old.change - (fee - old.fee)
    if change < DUST:
        return None
    return Plan(old.coins, old.outputs, change, fee, fee_rate, old.vsize)


def sign(p: Plan, change_script: bytes, key_of: Callable[[int, int], Any]) -> Signed:
    """Sign every input of ``p`` with its key (``key_of(branch, index)``: an embit private key), SIGHASH_ALL.
    The caller has checked that each coin's script is its key's (``coin_script``)."""
    vin = [TransactionInput(bytes.fromhex(c.txid), c.vout, sequence=RBF_SEQUENCE) for c in p.coins]
    vout = [TransactionOutput(amount, _script(script)) for script, amount in p.outputs]
    if p.change:
        vout.append(TransactionOutput(p.change, _script(change_script)))
    tx = Transaction(version=2, vin=vin, vout=vout, locktime=0)
    for i, coin in enumerate(p.coins):
        key = key_of(coin.branch, coin.index)
        pub = key.get_public_key()
        digest = tx.sighash_segwit(i, p2pkh(pub), coin.amount, SIGHASH.ALL)
        signature = key.sign(digest).serialize() + bytes([SIGHASH.ALL])
        tx.vin[i].witness = Witness([signature, pub.sec()])
    raw = bytes(tx.serialize())
    return Signed(str(tx.txid().hex()), raw.hex(), _signed_vsize(tx, raw))


def coin_script(key: Any) -> bytes:
    """The P2WPKH scriptPubKey of an embit private key."""
    return bytes(p2wpkh(key.get_public_key()).data)


def _script(data: bytes) -> Script:
    return Script(data)


def _signed_vsize(tx: Transaction, raw: bytes) -> int:
    stripped = len(_without_witness(tx))
    return math.ceil((stripped * 3 + len(raw)) / 4)


def _without_witness(tx: Transaction) -> bytes:
    bare = Transaction(
        version=tx.version,
        vin=[TransactionInput(i.txid, i.vout, sequence=i.sequence) for i in tx.vin],
        vout=list(tx.vout),
        locktime=tx.locktime,
    )
    return bytes(bare.serialize())
