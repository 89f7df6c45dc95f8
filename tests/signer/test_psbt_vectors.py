"""The published BIP-174 and BIP-370 test vectors (tests/signer/vectors/bip174-*.json, bip370-*.json, copied
byte for byte from bitcoin/bips, each file naming its BIP, section and commit in ``source``) against the
signer's decoder and review, embit, and the node where embit cannot speak for itself.

- invalid PSBTs: refused by the signer's decoder (``signer.btcbatch.decode_psbt``);
- valid PSBTs: parsed by embit and accepted by the decoder once in embit's spelling (the canonical-bytes rule),
  with the same transaction; the two BIP-174 PSBTs with no inputs, which embit 0.8 cannot read (it takes a
  transaction with no inputs for a segwit marker), are read by the node;
- "fails signer checks": well formed, and refused by the review;
- the creator, updater, signer, combiner, finalizer and extractor vectors: reproduced by embit, and by the node
  where embit does not finalize that kind of input (legacy P2SH multisig) or grinds its signatures to a low R
  (embit then signs the same digest: the published signature verifies under embit's sighash);
- BIP-370: the node (Bitcoin Core / Knots 29) reads no version 2 PSBT, so a version 2 vector is checked by
  embit, and its version 0 spelling by the node (same txid). Modifiable flags and required locktimes are valid
  PSBTs that the review refuses (a signer signs a fixed transaction with the locktime it shows).
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from embit import bip32, ec
from embit.finalizer import finalize_psbt
from embit.hashes import hash160
from embit.networks import NETWORKS
from embit.psbt import PSBT, DerivationPath
from embit.script import Script, p2sh, p2wsh
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

from custody.cold import btcpsbt
from signer.btcbatch import canonical_psbt, decode_psbt
from signer.btckeys import BitcoinKey, account_indexes
from signer.btcwallet import parse_btc_cold_wallet
from signer.errors import BtcBatchInvalid, BtcTxFormInvalid, SignerError
from signer.psbtreview import check_fixed, check_form, check_inputs
from tests.signer.btcfixtures import wallet_bytes

VECTORS = Path(__file__).parent / "vectors"
NOW = 1_767_225_600


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text())
    bip = name.split("-")[0][3:]
    assert doc["source"].startswith(f"BIP-{bip}, section "), doc["source"]
    assert f"bip-0{bip}.mediawiki at commit " in doc["source"]
    return doc


def cases(name: str) -> list[Any]:
    return [pytest.param(v, id=v["case"][:90]) for v in load(name)["vectors"]]


def raw(vector: dict[str, Any]) -> bytes:
    return base64.b64decode(vector["base64"])


ZERO_INPUTS = ("PSBT with global unsigned tx that has 0 inputs and 0 outputs", "PSBT with 0 inputs")


def test_every_vector_file_names_its_source():
    names = sorted(p.stem for p in VECTORS.glob("bip[13]7[04]-*.json"))
    assert names == [
        "bip174-invalid",
        "bip174-roles",
        "bip174-signer-checks",
        "bip174-valid",
        "bip370-invalid",
        "bip370-locktime",
        "bip370-valid",
    ]
    counts = {n: len(load(n).get("vectors", [])) for n in names}
    assert counts == {
        "bip174-invalid": 20,
        "bip174-roles": 0,
        "bip174-signer-checks": 4,
        "bip174-valid": 10,
        "bip370-invalid": 24,
        "bip370-locktime": 10,
        "bip370-valid": 14,
    }


# -- invalid -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vector", [*cases("bip174-invalid"), *cases("bip370-invalid")])
def test_an_invalid_psbt_is_refused_by_the_decoder(vector: dict[str, Any]):
    with pytest.raises(BtcBatchInvalid):
        decode_psbt(vector["base64"])


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("PSBTv0 but with PSBT_GLOBAL_TX_MODIFIABLE.", "carries a field of version 2"),
        ("PSBTv0 but with PSBT_IN_REQUIRED_TIME_LOCKTIME.", "carries a field of version 2"),
        ("PSBTv2 missing PSBT_GLOBAL_TX_VERSION.", "no transaction version"),
        ("PSBTv2 missing PSBT_IN_PREVIOUS_TXID.", "lacks its previous txid"),
        ("PSBTv2 missing PSBT_IN_OUTPUT_INDEX.", "lacks its previous txid or output index"),
        ("PSBTv2 missing PSBT_OUT_AMOUNT.", "lacks its amount or script"),
        ("PSBTv2 missing PSBT_OUT_SCRIPT.", "lacks its amount or script"),
        ("PSBTv2 with PSBT_IN_REQUIRED_TIME_LOCKTIME less than 500000000.", "required time locktime"),
        ("PSBTv2 with PSBT_IN_REQUIRED_HEIGHT_LOCKTIME of 0.", "required height locktime"),
    ],
)
def test_bip370_rules_embit_does_not_enforce_are_the_decoders(case: str, why: str):
    """These parse with embit and some are even written back byte for byte: only the decoder's own reading of
    BIP-370's inclusion, exclusion and range rules refuses them."""
    (vector,) = [v for v in load("bip370-invalid")["vectors"] if v["case"] == case]
    PSBT.parse(raw(vector))
    with pytest.raises(BtcBatchInvalid, match=why):
        decode_psbt(vector["base64"])


# -- valid ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vector", [*cases("bip174-valid"), *cases("bip370-valid"), *cases("bip370-locktime")])
def test_a_valid_psbt_parses_and_its_canonical_spelling_decodes(vector: dict[str, Any]):
    if vector["case"] in ZERO_INPUTS:
        with pytest.raises(Exception, match="segwit marker"):  # embit 0.8's limit; the node reads them (below)
            PSBT.parse(raw(vector))
        return
    psbt = PSBT.parse(raw(vector))
    spelled = canonical_psbt(vector["base64"])
    again = PSBT.parse(decode_psbt(spelled))
    assert again.version == psbt.version
    assert again.tx.serialize() == psbt.tx.serialize()
    assert [i.unknown for i in again.inputs] == [i.unknown for i in psbt.inputs]


def test_the_node_reads_every_valid_version_0_vector_with_embits_txid(bitcoind: Any):
    node = bitcoind.node()
    for vector in load("bip174-valid")["vectors"]:
        decoded = node.call("decodepsbt", vector["base64"])
        if vector["case"] not in ZERO_INPUTS:
            assert decoded["tx"]["txid"] == PSBT.parse(raw(vector)).tx.txid().hex(), vector["case"]


def test_version_2_vectors_have_the_txid_of_their_version_0_spelling_on_the_node(bitcoind: Any):
    node = bitcoind.node()
    plain = [v for v in load("bip370-valid")["vectors"] if b"\x06" not in PSBT.parse(raw(v)).unknown]
    plain = [v for v in plain if not any(k in i.unknown for i in PSBT.parse(raw(v)).inputs for k in (b"\x11", b"\x12"))]
    assert len(plain) == 3
    for vector in plain:
        with pytest.raises(Exception, match="Unsupported version number"):
            node.call("decodepsbt", vector["base64"])  # why the daemon converts before combinepsbt
        v0 = btcpsbt.for_node(vector["base64"])
        assert node.call("decodepsbt", v0)["tx"]["txid"] == PSBT.parse(raw(vector)).tx.txid().hex()


@pytest.mark.parametrize("vector", cases("bip370-valid"))
def test_the_review_refuses_modifiable_flags_and_required_locktimes(vector: dict[str, Any]):
    psbt = PSBT.parse(raw(vector))
    flags = psbt.unknown.get(b"\x06", b"\x00")
    required = any(k in i.unknown for i in psbt.inputs for k in (b"\x11", b"\x12"))
    if flags == b"\x00" and not required:
        check_fixed(psbt)
    else:
        with pytest.raises(BtcTxFormInvalid):
            check_fixed(psbt)


@pytest.mark.parametrize("vector", cases("bip370-locktime"))
def test_a_locktime_other_than_the_fallback_is_refused_never_guessed(vector: dict[str, Any]):
    """BIP-370's locktime determination: where it gives the fallback (0 here), embit's transaction has it and
    the review goes on; where required locktimes decide it (or cannot), the review refuses."""
    psbt = PSBT.parse(raw(vector))
    if vector["locktime"] == 0:
        check_fixed(psbt)
        assert psbt.tx.locktime == 0
    else:
        with pytest.raises(BtcTxFormInvalid, match="requires a"):
            check_fixed(psbt)


def wallet() -> Any:
    net = NETWORKS["regtest"]
    roots = [bip32.HDKey.from_seed(bytes([i + 1]) * 32, version=net["xprv"]) for i in range(3)]
    account = account_indexes("regtest")
    keys = [
        BitcoinKey(r.my_fingerprint.hex(), "m/48h/1h/0h/2h", r.derive(account).to_public().to_base58(net["xpub"]))
        for r in roots
    ]
    return parse_btc_cold_wallet(wallet_bytes(keys, 2, "00" * 32))


@pytest.mark.parametrize("vector", cases("bip174-signer-checks"))
def test_a_psbt_a_signer_must_not_sign_is_well_formed_and_refused_by_the_review(vector: dict[str, Any]):
    psbt = PSBT.parse(decode_psbt(vector["base64"]))
    with pytest.raises(SignerError):
        check_form(psbt, wallet(), NOW)
    with pytest.raises(SignerError):  # and, whatever its form, its inputs are not the wallet's coins
        check_inputs(psbt, wallet())


# -- the roles -----------------------------------------------------------------------------------------------
ROLES = load("bip174-roles")


def test_embit_creates_the_creators_psbt():
    c = ROLES["creator"]
    tx = Transaction(
        version=2,
        vin=[TransactionInput(bytes.fromhex(i["txid"]), i["vout"], sequence=0xFFFFFFFF) for i in c["inputs"]],
        vout=[
            TransactionOutput(int(Decimal(o["amount_btc"]) * 10**8), Script(bytes.fromhex(o["script_pubkey"])))
            for o in c["outputs"]
        ],
    )
    assert PSBT(tx, unknown={}).to_base64() == c["psbt"]


def updated() -> PSBT:
    """The updater's role with embit: scripts and UTXOs where the scripts say they belong, derivations in the
    keys' byte order (as Bitcoin Core writes a map)."""
    u = ROLES["updater"]
    root = bip32.HDKey.from_base58(ROLES["master_xprv"])
    previous = {bytes(t.txid()): t for t in map(Transaction.from_string, u["previous_transactions"])}
    redeem = [Script(bytes.fromhex(s)) for s in u["redeem_scripts"]]
    witness = [Script(bytes.fromhex(s)) for s in u["witness_scripts"]]
    psbt = PSBT.from_base64(ROLES["creator"]["psbt"])
    for inp in psbt.inputs:
        prev = previous[bytes(inp.txid)]
        inp.redeem_script = next(r for r in redeem if p2sh(r) == prev.vout[inp.vout].script_pubkey)
        inner = next((w for w in witness if p2wsh(w) == inp.redeem_script), None)
        if inner is None:
            inp.non_witness_utxo = prev
        else:
            inp.witness_utxo, inp.witness_script = prev.vout[inp.vout], inner
    for k in sorted(u["public_keys"], key=lambda k: k["key"]):
        pub = ec.PublicKey.parse(bytes.fromhex(k["key"]))
        assert root.derive(k["path"]).key.get_public_key() == pub
        path = DerivationPath(root.my_fingerprint, bip32.parse_path(k["path"]))
        for inp in psbt.inputs:
            if pub.sec() in (inp.witness_script or inp.redeem_script).data:
                inp.bip32_derivations[pub] = path
        for out in psbt.outputs:
            if hash160(pub.sec()) in out.script_pubkey.data:
                out.bip32_derivations[pub] = path
    return psbt


def test_embit_updates_as_the_updater_and_adds_sighash_all():
    psbt = updated()
    assert psbt.to_base64() == ROLES["updater"]["psbt"]
    for inp in psbt.inputs:
        inp.sighash_type = SIGHASH.ALL
    assert psbt.to_base64() == ROLES["updater_sighash_all"]["psbt"]


@pytest.mark.parametrize("who", ["signer_1", "signer_2"])
def test_embit_signs_what_the_signers_signed(who: str):
    """Byte for byte where the published signature has a low R; else embit grinds another nonce (low R), and the
    published signature must still verify under embit's own sighash for that input."""
    psbt = PSBT.from_base64(ROLES["updater_sighash_all"]["psbt"])
    for k in ROLES[who]["keys"]:
        assert psbt.sign_with(ec.PrivateKey.from_wif(k["wif"]), sighash=None) == 1
    published = PSBT.from_base64(ROLES[who]["psbt"])
    for i, (mine, theirs) in enumerate(zip(psbt.inputs, published.inputs, strict=True)):
        assert list(mine.partial_sigs) == list(theirs.partial_sigs)
        for pub, sig in theirs.partial_sigs.items():
            if sig[3] <= 0x20:  # low R: at most 32 bytes, no padding byte
                assert mine.partial_sigs[pub] == sig
            inp = published.inputs[i]
            if inp.witness_script is not None:
                digest = published.sighash_segwit(i, inp.witness_script, inp.witness_utxo.value, sighash=SIGHASH.ALL)
            else:
                digest = published.sighash_legacy(i, inp.redeem_script, sighash=SIGHASH.ALL)
            assert pub.verify(ec.Signature.parse(sig[:-1]), digest)
            assert pub.verify(ec.Signature.parse(mine.partial_sigs[pub][:-1]), digest)
    if all(s[3] <= 0x20 for inp in published.inputs for s in inp.partial_sigs.values()):
        assert psbt.to_base64() == ROLES[who]["psbt"]


def test_embit_and_the_node_combine_as_the_combiner(bitcoind: Any):
    combined = PSBT.from_base64(ROLES["signer_1"]["psbt"])
    for mine, other in zip(combined.inputs, PSBT.from_base64(ROLES["signer_2"]["psbt"]).inputs, strict=True):
        mine.update(other)
    assert combined.to_base64() == ROLES["combiner"]["psbt"]
    node = bitcoind.node()
    assert node.call("combinepsbt", [ROLES["signer_1"]["psbt"], ROLES["signer_2"]["psbt"]]) == ROLES["combiner"]["psbt"]
    u = ROLES["combiner_unknowns"]
    assert node.call("combinepsbt", u["inputs"]) == u["psbt"]


def test_the_node_finalizes_and_extracts_and_embit_finalizes_the_multisig_witness(bitcoind: Any):
    node = bitcoind.node()
    assert node.call("finalizepsbt", ROLES["combiner"]["psbt"], False)["psbt"] == ROLES["input_finalizer"]["psbt"]
    assert node.call("finalizepsbt", ROLES["combiner"]["psbt"], True)["hex"] == ROLES["transaction_extractor"]["tx_hex"]
    tx = finalize_psbt(PSBT.from_base64(ROLES["combiner"]["psbt"]))
    published = Transaction.from_string(ROLES["transaction_extractor"]["tx_hex"])
    # Input 1 is a P2SH-P2WSH 2-of-2, the kind of spend a batch's inputs are (P2WSH): embit's witness is the
    # published one. Input 0 is a legacy P2SH multisig, which embit's finalizer does not build.
    assert tx is not None and tx.vin[1].witness.serialize() == published.vin[1].witness.serialize()
    assert tx.vin[1].script_sig == published.vin[1].script_sig
