"""The hot wallet's Bitcoin payments, built and signed without a node: coin choice, change, the policy's fee cap,
fee bumps under BIP-125, and signatures that verify for the coin's own key."""

from __future__ import annotations

from embit import bip32, ec
from embit.script import p2pkh
from embit.transaction import SIGHASH, Transaction

from custody.hot import btcbuild
from custody.hot.btcbuild import DUST, Coin, bumped, plan, sign, vsize

ROOT = bip32.HDKey.from_seed(bytes(range(32)))
ACCOUNT = ROOT.derive("m/84h/1h/0h")
P2WPKH = bytes.fromhex("0014" + "11" * 20)
P2WSH = bytes.fromhex("0020" + "22" * 32)
TXID = "ab" * 32


def key_of(branch: int, index: int) -> ec.PrivateKey:
    return ACCOUNT.derive([branch, index]).key


def coin(amount: int, vout: int = 0) -> Coin:
    return Coin(TXID, vout, amount, 0, vout)


def test_the_largest_coins_pay_with_change_to_one_output():
    coins = [coin(10_000, 0), coin(500_000, 1), coin(200_000, 2)]
    p = plan(coins, [(P2WPKH, 300_000), (P2WSH, 100_000)], 10, 100_000)
    assert p is not None and [c.vout for c in p.coins] == [1]
    assert p.vsize == vsize(1, [22, 34, 22]) and p.fee == 10 * p.vsize
    assert p.change == 500_000 - 400_000 - p.fee


def test_a_dust_change_goes_to_the_fee_and_the_cap_holds():
    size = vsize(1, [22])
    exact = 50_000 + 10 * size + DUST - 1  # one satoshi short of a change output
    p = plan([coin(exact)], [(P2WPKH, 50_000)], 10, 100_000)
    assert p is not None and p.change == 0 and p.fee == exact - 50_000
    assert plan([coin(exact)], [(P2WPKH, 50_000)], 10, p.fee - 1) is None  # over max_fee: not paid
    assert plan([coin(1_000)], [(P2WPKH, 50_000)], 10, 100_000) is None  # not enough coins


def test_signatures_verify_and_the_size_bound_holds():
    coins = [Coin(TXID, 0, 400_000, 0, 3), Coin("cd" * 32, 1, 300_000, 1, 7)]
    p = plan(coins, [(P2WPKH, 600_000)], 5, 100_000)
    assert p is not None and len(p.coins) == 2
    change = btcbuild.coin_script(key_of(1, 0))
    signed = sign(p, change, key_of)
    tx = Transaction.from_string(signed.raw)
    assert signed.vsize <= p.vsize and tx.txid().hex() == signed.txid
    assert [v.sequence for v in tx.vin] == [btcbuild.RBF_SEQUENCE] * 2
    assert bytes(tx.vout[-1].script_pubkey.data) == change and tx.vout[-1].value == p.change
    for i, c in enumerate(p.coins):
        sig, pub = tx.vin[i].witness.items
        assert sig[-1] == SIGHASH.ALL and ec.PublicKey.parse(pub) == key_of(c.branch, c.index).get_public_key()
        digest = tx.sighash_segwit(i, p2pkh(ec.PublicKey.parse(pub)), c.amount, SIGHASH.ALL)
        assert ec.PublicKey.parse(pub).verify(ec.Signature.parse(sig[:-1]), digest)


def test_a_bump_keeps_coins_and_outputs_and_pays_the_incremental_fee():
    p = plan([coin(1_000_000)], [(P2WPKH, 200_000), (P2WSH, 300_000)], 10, 100_000)
    assert p is not None
    b = bumped(p, 13, 1, 100_000)
    assert b is not None and (b.coins, b.outputs) == (p.coins, p.outputs)
    assert b.fee == 13 * p.vsize and b.fee - p.fee >= p.vsize and b.change == p.change - (b.fee - p.fee)
    # a rate barely above the old one still pays the incremental relay fee on the whole size
    assert (small := bumped(p, 11, 5, 100_000)) is not None and small.fee == p.fee + 5 * p.vsize
    assert bumped(p, 13, 1, p.fee + 1) is None  # over the policy's max_fee
    no_change = plan([coin(500_000 + 10 * vsize(1, [22]))], [(P2WPKH, 500_000)], 10, 100_000)
    assert no_change is not None and no_change.change == 0 and bumped(no_change, 20, 1, 100_000) is None
