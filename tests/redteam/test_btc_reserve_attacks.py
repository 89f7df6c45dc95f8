"""The compromised host plays the Bitcoin proof of reserves: it writes the reserve PSBT the cold wallet's owners
sign offline, and would like their signatures on a real spend. Each attack is refused by the signer's review
(``signer.porbtcsign.review_reserve``) with its own code, before any key is touched; and signatures the host
forges or weakens are refused by the verifier (``signer.porbtc.check_signed``)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from embit.psbt import InputScope, OutputScope
from embit.script import Script
from embit.transaction import SIGHASH, TransactionInput, TransactionOutput

from signer.btckeys import account_key, account_private
from signer.btcwallet import BtcColdWallet, make_btc_cold_wallet
from signer.errors import StatementInvalid
from signer.porbtc import (
    OP_TRUE,
    Coin,
    ReserveInvalid,
    ReserveWallet,
    check_signed,
    commitment_txid,
    parse_psbt,
    reserve_psbt,
    to_text,
)
from signer.porbtcsign import review_reserve, sign_reserve
from signer.porstatement import Statement

NETWORK = "regtest"
SEEDS = [hashlib.sha256(f"reserve owner {i}".encode()).digest() for i in range(3)]
ATTACKER = hashlib.sha256(b"attacker").digest()


def cold_wallet(seeds: list[bytes]) -> BtcColdWallet:
    owners = [(f"op{i}", account_key(seed, NETWORK)) for i, seed in enumerate(seeds)]
    return make_btc_cold_wallet(NETWORK, 2, owners, "00" * 32)


PINNED = cold_wallet(SEEDS)


def coin(wallet: BtcColdWallet, n: int, branch: int, index: int, amount: int) -> Coin:
    txid = hashlib.sha256(f"funding {n}".encode()).hexdigest()
    return Coin(txid, n % 3, amount, wallet.script_pubkey(branch, index), branch, index, 100 + n)


COINS = (coin(PINNED, 0, 0, 0, 5 * 10**8), coin(PINNED, 1, 1, 3, 125_000_000))


def statement(coins: tuple[Coin, ...] = COINS, tag: str = "snapshot 1") -> tuple[Statement, ReserveWallet]:
    """Claims with the Bitcoin part the review reads (the rest of a statement is checked by its own tests)."""
    wallet = ReserveWallet("cold", PINNED.descriptor, coins)
    claims = {
        "snapshot_id": hashlib.sha256(tag.encode()).hexdigest(),
        "bitcoin": {
            "asset": "BTC",
            "network": NETWORK,
            "block": {"height": 200, "hash": "11" * 32},
            "wallets": [wallet.body()],
        },
    }
    return Statement(claims), wallet


def honest() -> tuple[Statement, ReserveWallet, Any]:
    st, wallet = statement()
    return st, wallet, reserve_psbt(st.hash, wallet)


def review(st: Statement, psbt: Any) -> None:
    review_reserve(st, to_text(psbt).encode(), PINNED)


def test_the_honest_reserve_psbt_passes_and_two_owners_signatures_verify():
    st, wallet, psbt = honest()
    found, parsed = review_reserve(st, to_text(psbt).encode(), PINNED)
    assert found == wallet
    one = parse_psbt(sign_reserve(parsed, wallet, account_private(SEEDS[0], NETWORK), PINNED))
    with pytest.raises(ReserveInvalid, match=r"missing signature: coin .* has 1 valid signatures, it needs 2"):
        check_signed(st.hash, wallet, one)
    two = parse_psbt(sign_reserve(one, wallet, account_private(SEEDS[2], NETWORK), PINNED))
    assert check_signed(st.hash, wallet, two) == 2
    # the same signatures prove nothing for another statement: its commitment differs
    other, _ = statement(tag="snapshot 2")
    with pytest.raises(ReserveInvalid) as refused:
        check_signed(other.hash, wallet, two)
    assert refused.value.code == "btc_reserve_commitment"


def _real_coin_first(st: Statement, psbt: Any) -> None:
    """A spend in disguise: input 0 is one of the wallet's own coins, with everything needed to sign it."""
    first, spend = psbt.inputs[0], psbt.inputs[1]
    first.txid, first.vout = spend.txid, spend.vout
    first.witness_utxo, first.witness_script = spend.witness_utxo, spend.witness_script
    first.bip32_derivations = dict(spend.bip32_derivations)


def _listed_coin_first(st: Statement, psbt: Any) -> None:
    """The same, with input 0 stripped of its data: still one of the statement's coins."""
    psbt.inputs[0].txid, psbt.inputs[0].vout = psbt.inputs[2].txid, psbt.inputs[2].vout


def _other_statement(st: Statement, psbt: Any) -> None:
    other, _ = statement(tag="last month")
    psbt.inputs[0].txid = bytes.fromhex(commitment_txid(other.hash))


def _commitment_vout(st: Statement, psbt: Any) -> None:
    psbt.inputs[0].vout = 1


def _attacker_output(st: Statement, psbt: Any) -> None:
    script = PINNED.script_pubkey(0, 0)[:2] + hashlib.sha256(ATTACKER).digest()
    psbt.outputs.append(OutputScope(vout=TransactionOutput(10**8, Script(script))))


def _output_to_attacker(st: Statement, psbt: Any) -> None:
    psbt.outputs[0] = OutputScope(vout=TransactionOutput(psbt.tx.vout[0].value, Script(b"\x00\x14" + ATTACKER[:20])))


def _output_less(st: Statement, psbt: Any) -> None:
    psbt.outputs[0] = OutputScope(vout=TransactionOutput(psbt.tx.vout[0].value - 1, Script(OP_TRUE)))


def _foreign_input(st: Statement, psbt: Any) -> None:
    """An input of the attacker's own wallet appended: its signature would be asked for under our keys."""
    theirs = cold_wallet([ATTACKER, *SEEDS[1:]])
    extra = reserve_psbt(st.hash, ReserveWallet("cold", theirs.descriptor, (coin(theirs, 7, 0, 1, 10**8),)))
    psbt.inputs.append(extra.inputs[1])


def _unlisted_coin_of_ours(st: Statement, psbt: Any) -> None:
    extra = reserve_psbt(st.hash, ReserveWallet("cold", PINNED.descriptor, (coin(PINNED, 9, 0, 5, 10**8),)))
    psbt.inputs.append(extra.inputs[1])


def _foreign_derivation(st: Statement, psbt: Any) -> None:
    """A listed outpoint whose keys are another wallet's: the signer would sign at a path the host chose."""
    theirs = cold_wallet([ATTACKER, *SEEDS[1:]])
    other = reserve_psbt(st.hash, ReserveWallet("cold", theirs.descriptor, (coin(theirs, 0, 0, 0, 5 * 10**8),)))
    psbt.inputs[1].bip32_derivations = dict(other.inputs[1].bip32_derivations)


def _sighash(kind: int) -> Callable[[Statement, Any], None]:
    def attack(st: Statement, psbt: Any) -> None:
        psbt.inputs[2].sighash_type = kind

    return attack


def _amount(st: Statement, psbt: Any) -> None:
    psbt.inputs[1].witness_utxo = TransactionOutput(6 * 10**8, psbt.inputs[1].witness_utxo.script_pubkey)


def _locktime(st: Statement, psbt: Any) -> None:
    psbt.locktime = 800_000


def _missing_coin(st: Statement, psbt: Any) -> None:
    del psbt.inputs[2]
    psbt.outputs[0] = OutputScope(vout=TransactionOutput(COINS[0].amount, Script(OP_TRUE)))


ATTACKS = [
    (_real_coin_first, "btc_reserve_spend"),
    (_listed_coin_first, "btc_reserve_spend"),
    (_other_statement, "btc_reserve_commitment"),
    (_commitment_vout, "btc_reserve_commitment"),
    (_attacker_output, "btc_reserve_output"),
    (_output_to_attacker, "btc_reserve_output"),
    (_output_less, "btc_reserve_output"),
    (_foreign_input, "btc_reserve_foreign_input"),
    (_unlisted_coin_of_ours, "btc_reserve_foreign_input"),
    (_foreign_derivation, "btc_reserve_foreign_input"),
    (_sighash(SIGHASH.NONE), "btc_reserve_sighash"),
    (_sighash(SIGHASH.ALL | SIGHASH.ANYONECANPAY), "btc_reserve_sighash"),
    (_sighash(SIGHASH.SINGLE), "btc_reserve_sighash"),
    (_amount, "btc_reserve_amount_mismatch"),
    (_locktime, "btc_reserve_form"),
    (_missing_coin, "btc_reserve_invalid"),
]


@pytest.mark.parametrize(("attack", "code"), ATTACKS, ids=[a.__name__.strip("_") for a, _ in ATTACKS])
def test_the_signer_refuses(attack: Callable[[Statement, Any], None], code: str):
    st, _, psbt = honest()
    attack(st, psbt)
    with pytest.raises(ReserveInvalid) as refused:
        review(st, psbt)
    assert refused.value.code == code, refused.value.message


def test_a_statement_that_misdescribes_the_pinned_wallet_is_refused():
    st, wallet, psbt = honest()
    for claims_edit in (
        lambda c: c["bitcoin"].update(network="testnet"),
        lambda c: c["bitcoin"]["wallets"][0].update(kind="hot"),
        lambda c: c["bitcoin"].update(wallets=[]),
    ):
        claims = {**st.claims, "bitcoin": {**st.claims["bitcoin"], "wallets": [dict(wallet.body())]}}
        claims_edit(claims)
        with pytest.raises(StatementInvalid) as refused:
            review(Statement(claims), psbt)
        assert refused.value.code in ("btc_reserve_wrong_wallet", "statement_invalid")


def test_the_verifier_refuses_weakened_or_forged_signatures():
    st, wallet, psbt = honest()
    for seed in SEEDS[:2]:
        psbt = parse_psbt(sign_reserve(psbt, wallet, account_private(seed, NETWORK), PINNED))
    assert check_signed(st.hash, wallet, psbt) == 2
    (pub, sig), *_ = psbt.inputs[1].partial_sigs.items()
    weakened = parse_psbt(to_text(psbt))
    weakened.inputs[1].partial_sigs[pub] = sig[:-1] + bytes([SIGHASH.ALL | SIGHASH.ANYONECANPAY])
    with pytest.raises(ReserveInvalid) as refused:
        check_signed(st.hash, wallet, weakened)
    assert refused.value.code == "btc_reserve_sighash"
    forged = parse_psbt(to_text(psbt))
    forged.inputs[1].partial_sigs[pub] = sig[:8] + bytes([sig[8] ^ 1]) + sig[9:]
    with pytest.raises(ReserveInvalid, match="does not verify"):
        check_signed(st.hash, wallet, forged)
    stranger = parse_psbt(to_text(psbt))
    theirs = account_private(ATTACKER, NETWORK).derive([0, 0]).key
    stranger.inputs[1].partial_sigs[theirs.get_public_key()] = sig
    with pytest.raises(ReserveInvalid) as refused:
        check_signed(st.hash, wallet, stranger)
    assert refused.value.code == "btc_reserve_foreign_input"


def test_an_extra_input_in_the_psbt_does_not_verify_either():
    st, wallet, psbt = honest()
    psbt.inputs.append(InputScope(vin=TransactionInput(bytes(32), 0)))
    with pytest.raises(ReserveInvalid) as refused:
        check_signed(st.hash, wallet, psbt)
    assert refused.value.code == "btc_reserve_commitment"
