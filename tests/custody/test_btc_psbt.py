"""The daemon's own checks of Bitcoin PSBTs (``custody.cold.btcpsbt``), on PSBTs built here with embit the way the
node builds them, then broken one rule at a time: what a misbehaving node could hand the exporter, or what an
altered signature file could hold."""

from __future__ import annotations

import dataclasses

import pytest
from embit import bip32
from embit.descriptor import Descriptor
from embit.networks import NETWORKS
from embit.psbt import PSBT, DerivationPath
from embit.script import p2pkh, p2wsh
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

from custody.cold import btcpsbt
from custody.errors import BatchRefused, BitcoinNodeError, PartialSignatureInvalid, SignatureForAnotherBatch
from policies.addresses import bitcoin_script
from signer.btcbatch import canonical_psbt
from signer.btckeys import BitcoinKey
from signer.btcwallet import descriptor_text

NET = NETWORKS["regtest"]
ROOTS = [bip32.HDKey.from_seed(bytes([i + 1]) * 32, version=NET["xprv"]) for i in range(4)]  # the 4th: no owner
ACCOUNT = [48 + 2**31, 1 + 2**31, 2**31, 2 + 2**31]
DESCRIPTOR = descriptor_text(
    "regtest",
    2,
    [
        BitcoinKey(r.my_fingerprint.hex(), "m/48h/1h/0h/2h", r.derive(ACCOUNT).to_public().to_base58(NET["xpub"]))
        for r in ROOTS[:3]
    ],
)
OWNERS = [r.my_fingerprint.hex() for r in ROOTS[:3]]
WALLET = Descriptor.from_string(DESCRIPTOR.rsplit("#", 1)[0])
ALICE = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
BOB = p2wsh(p2pkh(ROOTS[3].key.get_public_key())).address(NET)  # a P2WSH someone else holds
FEE = 2_000
MAX_FEE = 100_000


def derivations(branch: int, index: int, roots: list[bip32.HDKey] = ROOTS[:3]) -> dict:
    return {
        r.derive([*ACCOUNT, branch, index]).key.get_public_key(): DerivationPath(
            r.my_fingerprint, [*ACCOUNT, branch, index]
        )
        for r in roots
    }


def funded(coin: int = 10**8, pays: list[tuple[str, int]] | None = None, fee: int = FEE) -> PSBT:
    """A PSBT as the node's walletcreatefundedpsbt writes it: one coin of the wallet (receive 0), the payments,
    change to branch 1 index 3, RBF on, every input with its previous transaction and derivations."""
    pays = pays if pays is not None else [(ALICE, 5_000_000), (BOB, 7_000_000)]
    prev = Transaction(
        vin=[TransactionInput(bytes(32), 0)],
        vout=[TransactionOutput(coin, WALLET.derive(0, branch_index=0).script_pubkey())],
    )
    change = coin - sum(a for _, a in pays) - fee
    outs = [TransactionOutput(a, _script(addr)) for addr, a in pays]
    outs.append(TransactionOutput(change, WALLET.derive(3, branch_index=1).script_pubkey()))
    psbt = PSBT(Transaction(vin=[TransactionInput(prev.txid(), 0, sequence=0xFFFFFFFD)], vout=outs))
    inp = psbt.inputs[0]
    inp.non_witness_utxo, inp.witness_utxo = prev, prev.vout[0]
    inp.witness_script = WALLET.derive(0, branch_index=0).witness_script()
    inp.bip32_derivations = derivations(0, 0)
    psbt.outputs[-1].witness_script = WALLET.derive(3, branch_index=1).witness_script()
    psbt.outputs[-1].bip32_derivations = derivations(1, 3)
    return psbt


def _script(address: str):
    from embit.script import Script

    return Script(bitcoin_script("regtest", address))


def check(psbt: PSBT, pays: list[tuple[str, int]] | None = None, max_fee: int = MAX_FEE) -> btcpsbt.Funded:
    pays = pays if pays is not None else [(ALICE, 5_000_000), (BOB, 7_000_000)]
    payments = [(bitcoin_script("regtest", a), n) for a, n in pays]
    return btcpsbt.check_funded(psbt.to_string(), payments, DESCRIPTOR, max_fee, _no_lookup)


def _no_lookup(txid: str) -> str:
    raise AssertionError(f"looked up {txid}")


def test_the_node_s_psbt_passes():
    psbt = funded()
    result = check(psbt)
    assert result.fee == FEE and result.txid == psbt.tx.txid().hex()
    assert [(o.vout, o.amount) for o in result.inputs] == [(0, 10**8)]


def test_a_missing_previous_transaction_is_added():
    psbt = funded()
    prev = psbt.inputs[0].non_witness_utxo
    psbt.inputs[0].non_witness_utxo = None
    result = btcpsbt.check_funded(
        psbt.to_string(),
        [(bitcoin_script("regtest", ALICE), 5_000_000), (bitcoin_script("regtest", BOB), 7_000_000)],
        DESCRIPTOR,
        MAX_FEE,
        lambda txid: prev.to_string() if txid == prev.txid().hex() else "",
    )
    assert PSBT.from_string(result.psbt).inputs[0].non_witness_utxo.txid() == prev.txid()


def test_a_wrong_previous_transaction_is_refused():
    psbt = funded()
    psbt.inputs[0].non_witness_utxo = funded(coin=2 * 10**8).inputs[0].non_witness_utxo
    with pytest.raises(BatchRefused, match="previous transaction"):
        check(psbt)


@pytest.mark.parametrize(
    ("pays", "why"),
    [
        ([(ALICE, 5_000_001), (BOB, 7_000_000)], "neither a withdrawal nor change"),  # an amount changed
        ([(ALICE, 5_000_000)], "neither a withdrawal nor change"),  # an output the batch does not list
        ([(ALICE, 5_000_000), (BOB, 7_000_000), (ALICE, 1)], "leaves out 1"),  # a withdrawal left out
    ],
)
def test_outputs_must_be_exactly_the_withdrawals(pays, why):
    psbt = funded()
    with pytest.raises(BatchRefused, match=why):
        check(psbt, pays)


def test_change_must_be_the_wallet_s_own_branch_1():
    psbt = funded()
    psbt.outputs[-1].bip32_derivations = derivations(0, 3)  # claims the receive branch
    with pytest.raises(BatchRefused, match="neither a withdrawal nor change"):
        check(psbt)
    psbt = funded()
    psbt.outputs[-1].script_pubkey = _script(ALICE)  # derivations say change, the script pays someone else
    with pytest.raises(BatchRefused, match="neither a withdrawal nor change"):
        check(psbt, [(ALICE, 5_000_000), (BOB, 7_000_000)])


def test_exactly_one_change_output():
    psbt = funded(pays=[(ALICE, 5_000_000), (BOB, 7_000_000)])
    psbt.outputs.pop()  # the change: the node gave it all to the fee
    with pytest.raises(BatchRefused, match="0 change outputs"):
        check(psbt, max_fee=10**8)


def test_fee_above_the_policy_is_refused():
    with pytest.raises(BatchRefused, match="fee is 150000"):
        check(funded(fee=150_000))
    assert check(funded(fee=MAX_FEE)).fee == MAX_FEE


def test_an_input_that_is_not_the_wallet_s_is_refused():
    psbt = funded()
    foreign = Transaction(vin=[TransactionInput(bytes(32), 1)], vout=[TransactionOutput(10**8, _script(BOB))])
    psbt.inputs[0].txid = foreign.txid()
    psbt.inputs[0].non_witness_utxo, psbt.inputs[0].witness_utxo = foreign, foreign.vout[0]
    with pytest.raises(BatchRefused, match="is not the cold wallet's"):
        check(psbt)  # its derivations claim the wallet's receive 0; its script is someone else's


def test_replaceability_is_required():
    psbt = funded()
    psbt.inputs[0].sequence = 0xFFFFFFFF
    with pytest.raises(BatchRefused, match="replaceab"):
        check(psbt)


def test_signed_by_names_the_owners_whose_signatures_verify():
    psbt = funded()
    assert btcpsbt.signed_by(psbt, OWNERS) == set()
    assert psbt.sign_with(ROOTS[0]) == 1
    assert btcpsbt.signed_by(psbt, OWNERS) == {OWNERS[0]}
    assert psbt.sign_with(ROOTS[2]) == 1
    assert btcpsbt.signed_by(psbt, OWNERS) == {OWNERS[0], OWNERS[2]}


def test_an_altered_signature_is_refused():
    psbt = funded()
    psbt.sign_with(ROOTS[0])
    [(pub, sig)] = psbt.inputs[0].partial_sigs.items()
    psbt.inputs[0].partial_sigs[pub] = sig[:10] + bytes([sig[10] ^ 1]) + sig[11:]
    with pytest.raises(PartialSignatureInvalid, match="does not verify"):
        btcpsbt.signed_by(psbt, OWNERS)


def test_a_signature_over_another_transaction_is_refused():
    other = funded(pays=[(ALICE, 5_000_000), (BOB, 6_000_000)])
    other.sign_with(ROOTS[1])
    psbt = funded()
    psbt.inputs[0].partial_sigs = dict(other.inputs[0].partial_sigs)
    with pytest.raises(PartialSignatureInvalid, match="does not verify"):
        btcpsbt.signed_by(psbt, OWNERS)


def test_a_signature_by_a_key_that_is_no_owner_s_is_refused():
    psbt = funded()
    psbt.sign_with(ROOTS[0])
    with pytest.raises(PartialSignatureInvalid, match="not an owner"):
        btcpsbt.signed_by(psbt, OWNERS[1:])


def test_only_sighash_all():
    psbt = funded()
    psbt.sign_with(ROOTS[0], sighash=SIGHASH.NONE)
    with pytest.raises(PartialSignatureInvalid, match="SIGHASH_ALL"):
        btcpsbt.signed_by(psbt, OWNERS)


def test_the_unsigned_transaction_is_what_copies_share():
    psbt = funded()
    signed = PSBT.from_string(psbt.to_string())
    signed.sign_with(ROOTS[0])
    assert btcpsbt.unsigned_tx(signed) == btcpsbt.unsigned_tx(psbt)
    other = funded(fee=FEE + 1)
    assert btcpsbt.unsigned_tx(other) != btcpsbt.unsigned_tx(psbt)
    assert dataclasses.asdict(btcpsbt.Outpoint("ab", 1, 2)) == {"txid": "ab", "vout": 1, "amount": 2}


def test_only_the_signatures_of_a_signed_copy_are_taken():
    """A signature file whose PSBT claims another amount for the coin, signed over that amount (a signer fooled,
    or a file edited with a key that is an owner's): its signature does not verify against what the batch
    exported, so it is refused before anything is combined."""
    batch = funded()
    copy = PSBT.from_string(batch.to_string())
    copy.inputs[0].witness_utxo.value = 10**8 + 1
    copy.sign_with(ROOTS[1])
    merged = btcpsbt.signatures_onto(batch.to_string(), copy.to_string())
    assert merged.inputs[0].witness_utxo.value == 10**8
    with pytest.raises(PartialSignatureInvalid, match="does not verify"):
        btcpsbt.signed_by(merged, OWNERS)
    honest = PSBT.from_string(batch.to_string())
    honest.sign_with(ROOTS[1])
    assert btcpsbt.signed_by(btcpsbt.signatures_onto(batch.to_string(), honest.to_string()), OWNERS) == {OWNERS[1]}
    with pytest.raises(BatchRefused, match="not for the batch's transaction"):
        btcpsbt.signatures_onto(batch.to_string(), funded(fee=FEE + 1).to_string())


# -- PSBT version 2 (BIP-370) --------------------------------------------------------------------------------
def as_v2(psbt: PSBT) -> str:
    again = PSBT.from_string(psbt.to_string())
    again.version = 2
    return str(again.to_string())


def test_a_psbt_changes_version_and_back_byte_for_byte_with_its_txid():
    v0 = funded().to_string()
    v2 = btcpsbt.with_version(v0, 2)
    assert PSBT.from_string(v2).version == 2 and v2 != v0
    assert btcpsbt.txid_of(PSBT.from_string(v2)) == btcpsbt.txid_of(PSBT.from_string(v0))
    assert btcpsbt.with_version(v2, 0) == btcpsbt.for_node(v2) == v0
    assert btcpsbt.with_version(v2, 2) == v2
    assert btcpsbt.for_node(v0) == v0  # a version 0 batch goes to the node as it always did
    with pytest.raises(BatchRefused, match="versions 0 and 2"):
        btcpsbt.with_version(v0, 1)


@pytest.mark.parametrize(("scope", "key"), [("global", b"\x06"), ("input", b"\x11"), ("input", b"\x12")])
def test_a_v2_psbt_still_modifiable_or_with_a_required_locktime_has_no_v0_spelling(scope: str, key: bytes):
    psbt = PSBT.from_string(as_v2(funded()))
    holder = psbt if scope == "global" else psbt.inputs[0]
    holder.unknown = {key: b"\x01" if scope == "global" else (600_000_000).to_bytes(4, "little")}
    with pytest.raises(BatchRefused, match="no version 0 spelling"):
        btcpsbt.for_node(psbt.to_string())


def test_signatures_of_a_v2_batch_are_taken_onto_it_and_another_version_is_refused():
    batch = as_v2(funded())
    signed = PSBT.from_string(batch)
    assert signed.sign_with(ROOTS[1]) == 1
    onto = btcpsbt.signatures_onto(batch, signed.to_string())
    assert onto.version == 2 and btcpsbt.signed_by(onto, OWNERS) == {OWNERS[1]}
    with pytest.raises(SignatureForAnotherBatch, match="version 0; the batch's PSBT is version 2"):
        btcpsbt.signatures_onto(batch, btcpsbt.for_node(signed.to_string()))
    with pytest.raises(SignatureForAnotherBatch, match="version 2; the batch's PSBT is version 0"):
        btcpsbt.signatures_onto(btcpsbt.for_node(batch), signed.to_string())


def test_the_node_combines_and_finalizes_a_v2_batch_converted_to_v0_into_the_same_txid(bitcoind):
    """Bitcoin Core / Knots 29 reads no PSBT version 2: the daemon hands it the version 0 spelling
    (``btcpsbt.for_node``, as ``custody.cold.btcexecution.finalize`` does); the final transaction is the batch's."""
    batch = as_v2(funded())
    node = bitcoind.node()
    with pytest.raises(BitcoinNodeError, match="Unsupported version number"):
        node.call("decodepsbt", batch)
    files = []
    for root in (ROOTS[0], ROOTS[2]):
        signed = PSBT.from_string(batch)
        assert signed.sign_with(root) == 1
        files.append(canonical_psbt(btcpsbt.signatures_onto(batch, signed.to_string()).to_string()))
    combined = node.call("combinepsbt", [btcpsbt.for_node(p) for p in [batch, *files]])
    final = node.call("finalizepsbt", combined, True)
    assert final["complete"] is True
    assert Transaction.from_string(final["hex"]).txid().hex() == btcpsbt.txid_of(PSBT.from_string(batch))
    assert node.call("decodepsbt", btcpsbt.for_node(batch))["tx"]["txid"] == btcpsbt.txid_of(PSBT.from_string(batch))
