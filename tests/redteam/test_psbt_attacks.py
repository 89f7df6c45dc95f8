"""A compromised online host against the Bitcoin cold wallet (issue 18). It holds the daemon's key, so it can sign
any Bitcoin batch file it likes, and it hands the signers whatever PSBT and previous transactions it wants.
What it cannot do is make the real `signer sign` sign anything but the listed withdrawals from the pinned
descriptor's coins, with change back to the wallet and a bounded fee: every crafted batch below is refused with
its own code and leaves no signature file (docs/batch-protocol.md, section 9)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from embit import bip32, ec
from embit.finalizer import finalize_psbt
from embit.networks import NETWORKS
from embit.psbt import PSBT, DerivationPath
from embit.script import Script
from embit.transaction import SIGHASH, Transaction, TransactionOutput

from policies.bundle import Bundle, make_bundle, parse_genesis, sign_bundle
from policies.loader import load_policy_toml
from signer.batchfile import BatchWithdrawal
from signer.btcbatch import BtcBatch, parse_btc_signature_file, sign_btc_batch_body, write_btc_batch_file
from signer.btckeys import BitcoinKey, account_indexes
from signer.btcwallet import BtcColdWallet, descriptor_text, parse_btc_cold_wallet
from signer.keystore import create_keystore, mnemonic_from_entropy
from signer.psbtreview import vsize
from signer.sealed import MIN_SCRYPT_N
from tests.redteam.conftest import (
    ATTACKER,
    DAEMON,
    DAY,
    NOW,
    Ceremony,
    policy_text,
    refused,
    refused_unsigned,
    stamp,
)
from tests.signer.btcfixtures import SAT, Coin, Spec, address_script, coin, derivations, prev_tx, wallet_bytes

OMNI, OMNI_SCRIPT = address_script(0x71)  # the treasury's whitelisted Bitcoin omnibus
MAKER, MAKER_SCRIPT = address_script(0x72)  # a second whitelisted destination
THIEF, THIEF_SCRIPT = address_script(0x66)  # where the host would rather send it
FEE = 2_000  # sat: about 11 sat/vB for one input and two outputs


def btc_policy(admins: list[tuple[str, str]], active: int, created: int) -> str:
    extra = f"""
[assets.BTC]
chain = "bitcoin"
network = "regtest"
decimals = 8
max_per_transfer = "10"
hot_limit = "0"
max_fee = "0.0005"
max_fee_rate = 50
windows = [{{ period = "24h", limit = "12" }}]
[[whitelist]]
address = "{OMNI}"
assets = ["BTC"]
label = "btc omnibus"
active_from = {stamp(created)}
[[whitelist]]
address = "{MAKER}"
assets = ["BTC"]
label = "btc maker"
active_from = {stamp(created)}
"""
    return policy_text(admins, active, extra)


@dataclass
class Host:
    """The ceremony with the Bitcoin wallet pinned and a policy with BTC accepted; the host's pen."""

    ceremony: Ceremony
    wallet: BtcColdWallet
    bundle: Bundle

    def withdrawal(self, amount: int, destination: str = OMNI, *, wid: str | None = None) -> BatchWithdrawal:
        label = {OMNI: "btc omnibus", MAKER: "btc maker"}.get(destination, "")
        return BatchWithdrawal(wid or str(uuid.uuid4()), "BTC", amount, 8, None, destination, label)

    def spec(self, amounts: list[int], *, value: int = SAT, fee: int = FEE, index: int = 0) -> Spec:
        """The honest PSBT: one coin of ``value`` at 0/``index``, a withdrawal output per amount to the omnibus,
        change to 1/0."""
        pays = [(OMNI_SCRIPT, a) for a in amounts]
        change = value - sum(amounts) - fee
        return Spec(self.wallet, [coin(self.wallet, value, 0, index)], pays, (0, change) if change else None)

    def batch(
        self,
        withdrawals: list[BatchWithdrawal],
        psbt: Any,
        *,
        replaces: str | None = None,
        created: int = NOW,
        lifetime: int = DAY,
    ) -> BtcBatch:
        return BtcBatch(
            id=str(uuid.uuid4()),
            network="regtest",
            descriptor=self.wallet.descriptor,
            policy_version=self.bundle.version,
            policy_hash=self.bundle.hash,
            created_at=created,
            expires_at=created + lifetime,
            withdrawals=tuple(withdrawals),
            psbt=psbt.to_base64(),
            replaces=replaces,
        )

    def honest(self, amounts: list[int] | None = None) -> tuple[BtcBatch, Spec]:
        amounts = amounts or [SAT // 2]
        spec = self.spec(amounts)
        return self.batch([self.withdrawal(a) for a in amounts], spec.build()), spec

    def write(self, batch: BtcBatch) -> bytes:
        return write_btc_batch_file(batch, DAEMON)

    def crafted(self, amounts: list[int], edit: Callable[[Any], None], spec: Spec | None = None) -> bytes:
        """The honest batch with its PSBT edited by the host, signed with the daemon key it holds."""
        spec = spec or self.spec(amounts)
        psbt = spec.build()
        edit(psbt)
        return self.write(self.batch([self.withdrawal(a) for a in amounts], psbt))

    def edited_body(self, batch: BtcBatch, edit: Callable[[dict[str, Any]], None]) -> bytes:
        body = json.loads(json.dumps(batch.body()))
        edit(body)
        return sign_btc_batch_body(body, DAEMON)

    def sign(self, raw: bytes, who: int = 0) -> tuple[Any, Path]:
        path = self.ceremony.file(raw)
        out = self.ceremony.tmp / f"{path.stem}.{who}.sig"
        return self.ceremony.signing(("sign",), path, out, who), out


def bitcoin_keys(ceremony: Ceremony) -> list[BitcoinKey]:
    return [BitcoinKey(op.card["fingerprint"], "m/48h/1h/0h/2h", op.card["bitcoin_tpub"]) for op in ceremony.operators]


@pytest.fixture
def host(ceremony: Ceremony) -> Host:
    return pinned_host(ceremony)


def pinned_host(ceremony: Ceremony) -> Host:
    """Fresh signer states: every operator pinned the genesis, accepted bundle v1 (ETH, USDC and BTC on regtest,
    two whitelisted Bitcoin addresses) and pinned the 2-of-3 Bitcoin wallet over their own keys."""
    admins = [(op.name, op.card["approval_key"]) for op in ceremony.operators]
    created = NOW - 30
    v1 = make_bundle(load_policy_toml(btc_policy(admins, created, created)), parse_genesis(ceremony.genesis), created)
    genesis = ceremony.file(ceremony.genesis, "genesis.json")
    path = ceremony.file(v1.raw, "bundle-btc.json")
    sigs = [
        ceremony.file(sign_bundle(v1.hash, op.approval).to_bytes(), f"btc.{i}.sig")
        for i, op in enumerate(ceremony.operators[:2])
    ]
    raw = wallet_bytes(bitcoin_keys(ceremony), 2, DAEMON.verify_key.encode().hex())
    wallet_file = ceremony.file(raw, "btc-cold-wallet.json")
    ceremony.states = [ceremony.tmp / f"btc-state-{who}" for who in range(3)]
    for who in range(3):
        ceremony.run("policy", "pin", genesis, "--yes", who=who, ok=True)
        ceremony.run("policy", "accept", path, *sigs, who=who, ok=True)
        keystore = ceremony.operators[who].keystore
        ceremony.run("cold", "pin", wallet_file, "--yes", "--keystore", keystore, who=who, ok=True)
    ceremony.bundle = v1
    return Host(ceremony, parse_btc_cold_wallet(raw), v1)


def signed_btc(result: Any) -> None:
    assert result.exit_code == 0, result.output
    assert "signed txid " in result.output, result.output


# -- what must go through ------------------------------------------------------------------------------------
def test_a_well_formed_batch_is_shown_and_signed(host: Host):
    batch, spec = host.honest([SAT // 2, SAT // 4])
    raw = host.write(batch)
    shown = host.ceremony.review(raw, ok=True).output
    psbt = spec.build()
    txid = bytes(psbt.tx.txid()).hex()
    for needed in (
        "0.5",
        "0.25",
        OMNI,
        "btc omnibus",
        f"txid         {txid}",
        "BTC to the wallet's change address 1/0",
        "sat/vB",
        "locktime     none",
    ):
        assert needed in shown, needed
    result, out = host.sign(raw)
    signed_btc(result)
    sig = parse_btc_signature_file(out.read_bytes())
    assert (sig.batch_id, sig.txid, sig.fingerprint) == (batch.id, txid, host.wallet.owners[0].key.fingerprint)
    signed_psbt = PSBT.from_base64(sig.psbt)
    assert all(len(inp.partial_sigs) == 1 for inp in signed_psbt.inputs)
    line = json.loads((host.ceremony.states[0] / "ledger.jsonl").read_text().splitlines()[-1])
    assert (line["chain"], line["txid"], line["inputs"]) == (
        "bitcoin",
        txid,
        [f"{bytes(spec.coins[0].tx.txid()).hex()}:0"],
    )


def test_global_xpubs_equal_to_the_pinned_ones_are_accepted(host: Host):
    def add_xpubs(psbt: Any) -> None:
        for k in host.wallet.account_keys():
            psbt.xpubs[bip32.HDKey.from_base58(k.xpub)] = DerivationPath(
                bytes.fromhex(k.fingerprint), account_indexes("regtest")
            )

    signed_btc(host.sign(host.crafted([SAT // 2], add_xpubs))[0])


def test_two_of_three_signature_files_combine_and_finalize(host: Host):
    batch, spec = host.honest([SAT // 2])
    raw = host.write(batch)
    files = []
    for who in (0, 2):
        result, out = host.sign(raw, who)
        signed_btc(result)
        files.append(parse_btc_signature_file(out.read_bytes()))
    combined = PSBT.from_base64(files[0].psbt)
    for inp, other in zip(combined.inputs, PSBT.from_base64(files[1].psbt).inputs, strict=True):
        inp.partial_sigs.update(other.partial_sigs)
    tx = finalize_psbt(combined)
    assert tx is not None and bytes(tx.txid()).hex() == files[0].txid
    witness = tx.vin[0].witness.items
    assert len(witness) == 4 and witness[0] == b""
    script = Script(witness[3])
    digest = combined.sighash_segwit(0, script, spec.coins[0].value, sighash=SIGHASH.ALL)
    for pub, sig in combined.inputs[0].partial_sigs.items():
        assert sig[-1] == SIGHASH.ALL and pub.verify(ec.Signature.parse(sig[:-1]), digest)


def test_the_real_node_accepts_two_signature_files_combined(host: Host, bitcoind: Any):
    """Coins really sent to the descriptor's first address; the node combines, finalizes and accepts the spend."""
    address = Script(host.wallet.script_pubkey(0, 0)).address(NETWORKS["regtest"])
    funder = bitcoind.funded_wallet(f"btc-redteam-{uuid.uuid4().hex[:8]}")
    txid = funder.call("sendtoaddress", address, Decimal("1.0"))
    bitcoind.mine(1)
    prev = Transaction.parse(bytes.fromhex(bitcoind.node().call("getrawtransaction", txid)))
    vout = next(i for i, o in enumerate(prev.vout) if bytes(o.script_pubkey.data) == host.wallet.script_pubkey(0, 0))
    spec = Spec(host.wallet, [Coin(0, 0, SAT, prev, vout)], [(OMNI_SCRIPT, SAT // 2)], (0, SAT // 2 - FEE))
    raw = host.write(host.batch([host.withdrawal(SAT // 2)], spec.build()))
    psbts = []
    for who in (1, 2):
        result, out = host.sign(raw, who)
        signed_btc(result)
        psbts.append(parse_btc_signature_file(out.read_bytes()).psbt)
    node = bitcoind.node()
    final = node.call("finalizepsbt", node.call("combinepsbt", psbts))
    assert final["complete"] is True
    (accepted,) = node.call("testmempoolaccept", [final["hex"]])
    assert accepted["allowed"] is True, accepted


# -- the batch file and the wallet ---------------------------------------------------------------------------
def test_a_batch_signed_by_another_key_is_refused(host: Host):
    batch, _ = host.honest()
    raw = write_btc_batch_file(batch, ATTACKER)
    refused_unsigned(host.ceremony, raw, "batch_daemon_signature_invalid")


def test_a_batch_for_another_descriptor_is_refused(host: Host):
    batch, _ = host.honest()
    one_of_three = descriptor_text("regtest", 1, host.wallet.account_keys())
    refused_unsigned(host.ceremony, host.write(dataclasses.replace(batch, descriptor=one_of_three)), "btc_wrong_wallet")


def test_a_batch_under_an_older_policy_is_refused(host: Host):
    batch, _ = host.honest()
    old = dataclasses.replace(batch, policy_hash="ab" * 32, policy_version=1)
    refused_unsigned(host.ceremony, host.write(old), "batch_policy_refused")


def test_a_treasury_withdrawal_to_an_address_off_the_whitelist_is_refused(host: Host):
    spec = host.spec([SAT // 2])
    spec.pays = [(THIEF_SCRIPT, SAT // 2)]
    batch = host.batch([host.withdrawal(SAT // 2, THIEF)], spec.build())
    refused_unsigned(host.ceremony, host.write(batch), "batch_policy_refused")


def test_an_ethereum_asset_in_a_bitcoin_batch_is_refused(host: Host):
    batch, _ = host.honest()
    raw = host.edited_body(batch, lambda b: b["withdrawals"][0].update(asset="ETH"))
    refused_unsigned(host.ceremony, raw, "batch_policy_refused")


def test_an_expired_batch_is_refused(host: Host):
    batch, _ = host.honest()
    refused_unsigned(host.ceremony, host.write(dataclasses.replace(batch, expires_at=NOW - 1)), "batch_expired")


def test_an_unknown_psbt_field_is_refused(host: Host):
    refused_unsigned(
        host.ceremony,
        host.crafted([SAT // 2], lambda p: setattr(p.inputs[0], "unknown", {b"\xfc": b"x"})),
        "btc_batch_invalid",
    )


# -- inputs --------------------------------------------------------------------------------------------------
def test_an_input_that_is_not_the_wallets_is_refused(host: Host):
    """A coin of the host's own, dressed with the owners' real derivations: the script is not the wallet's."""
    spec = host.spec([SAT // 2])
    foreign = prev_tx([(THIEF_SCRIPT, SAT)])
    spec.coins = [Coin(0, 0, SAT, foreign)]
    refused_unsigned(
        host.ceremony, host.write(host.batch([host.withdrawal(SAT // 2)], spec.build())), "btc_foreign_input"
    )


@pytest.mark.parametrize(
    ("what", "edit"),
    [
        (
            "a foreign fingerprint",
            lambda d, pub: d.__setitem__(pub, DerivationPath(b"\xde\xad\xbe\xef", d[pub].derivation)),
        ),
        (
            "branch 2",
            lambda d, pub: d.__setitem__(pub, DerivationPath(d[pub].fingerprint, [*d[pub].derivation[:4], 2, 0])),
        ),
        (
            "index past the gap limit",
            lambda d, pub: d.__setitem__(pub, DerivationPath(d[pub].fingerprint, [*d[pub].derivation[:4], 0, 1000])),
        ),
        ("one owner left out", lambda d, pub: d.pop(pub)),
    ],
)
def test_derivations_that_do_not_re_derive_the_script_are_refused(host: Host, what: str, edit: Any):
    def change(psbt: Any) -> None:
        d = psbt.inputs[0].bip32_derivations
        edit(d, next(iter(d)))

    refused_unsigned(host.ceremony, host.crafted([SAT // 2], change), "btc_foreign_input")


def test_a_coin_far_past_the_gap_limit_is_refused(host: Host):
    spec = host.spec([SAT // 2], index=1000)
    refused_unsigned(
        host.ceremony, host.write(host.batch([host.withdrawal(SAT // 2)], spec.build())), "btc_foreign_input"
    )


@pytest.mark.parametrize("field", ["non_witness_utxo", "witness_utxo"])
def test_an_input_without_both_utxos_is_refused(host: Host, field: str):
    refused_unsigned(
        host.ceremony, host.crafted([SAT // 2], lambda p: setattr(p.inputs[0], field, None)), "btc_utxo_missing"
    )


def test_a_previous_transaction_that_is_not_the_outpoints_is_refused(host: Host):
    other = prev_tx([(host.wallet.script_pubkey(0, 0), 2 * SAT)])
    refused_unsigned(
        host.ceremony,
        host.crafted([SAT // 2], lambda p: setattr(p.inputs[0], "non_witness_utxo", other)),
        "btc_utxo_mismatch",
    )


def test_the_segwit_fee_attack_a_witness_utxo_understating_the_coin_is_refused(host: Host):
    """The host claims the coin holds 0.6 BTC where it holds 1: signed, 0.4 BTC more would go to the miners."""

    def understate(psbt: Any) -> None:
        psbt.inputs[0].witness_utxo = TransactionOutput(SAT * 6 // 10, psbt.inputs[0].witness_utxo.script_pubkey)

    spec = host.spec([SAT // 2], fee=SAT * 4 // 10 + FEE)
    refused_unsigned(host.ceremony, host.crafted([SAT // 2], understate, spec), "btc_utxo_mismatch")


def test_one_outpoint_spent_twice_is_refused(host: Host):
    spec = host.spec([SAT // 2], fee=FEE - SAT)
    spec.coins = [spec.coins[0], spec.coins[0]]
    refused_unsigned(
        host.ceremony, host.write(host.batch([host.withdrawal(SAT // 2)], spec.build())), "btc_duplicate_input"
    )


@pytest.mark.parametrize("sighash", [SIGHASH.NONE, SIGHASH.SINGLE, SIGHASH.ALL | SIGHASH.ANYONECANPAY, 0])
def test_an_input_asking_for_another_sighash_is_refused(host: Host, sighash: int):
    refused_unsigned(
        host.ceremony,
        host.crafted([SAT // 2], lambda p: setattr(p.inputs[0], "sighash_type", sighash)),
        "btc_sighash_forbidden",
    )


# -- outputs -------------------------------------------------------------------------------------------------
def test_a_withdrawal_paid_elsewhere_or_another_amount_is_refused(host: Host):
    for pays in ([(THIEF_SCRIPT, SAT // 2)], [(OMNI_SCRIPT, SAT // 2 + 1000)], [(OMNI_SCRIPT, SAT // 2 - 1000)]):
        spec = host.spec([SAT // 2])
        spec.pays = pays
        batch = host.batch([host.withdrawal(SAT // 2)], spec.build())
        refused_unsigned(host.ceremony, host.write(batch), "btc_outputs_mismatch")


def test_an_extra_output_or_a_missing_withdrawal_is_refused(host: Host):
    spec = host.spec([SAT // 2], fee=FEE + SAT // 10)
    spec.extra = [(THIEF_SCRIPT, SAT // 10)]
    refused_unsigned(
        host.ceremony, host.write(host.batch([host.withdrawal(SAT // 2)], spec.build())), "btc_outputs_mismatch"
    )
    spec = host.spec([SAT // 2, SAT // 4])
    spec.pays = spec.pays[:1]
    spec.change = (0, SAT // 2 - FEE)
    batch = host.batch([host.withdrawal(SAT // 2), host.withdrawal(SAT // 4)], spec.build())
    refused_unsigned(host.ceremony, host.write(batch), "btc_outputs_mismatch")


def test_one_output_for_two_identical_withdrawals_is_refused(host: Host):
    spec = host.spec([SAT // 4, SAT // 4])
    spec.pays = spec.pays[:1]
    spec.change = (0, 3 * SAT // 4 - FEE)
    batch = host.batch([host.withdrawal(SAT // 4), host.withdrawal(SAT // 4)], spec.build())
    refused_unsigned(host.ceremony, host.write(batch), "btc_outputs_mismatch")


def test_change_on_the_receive_branch_or_past_the_gap_limit_is_refused(host: Host):
    for branch, index in ((0, 0), (1, 1000)):

        def move(psbt: Any, branch: int = branch, index: int = index) -> None:
            out = psbt.outputs[1]
            out.bip32_derivations = derivations(host.wallet, branch, index)
            out.witness_script = Script(host.wallet.witness_script(branch, index))
            psbt.outputs[1].script_pubkey = Script(host.wallet.script_pubkey(branch, index))

        refused_unsigned(host.ceremony, host.crafted([SAT // 2], move), "btc_change_invalid")


def test_change_to_a_wallet_with_a_key_of_the_hosts_is_refused(host: Host):
    """The change goes to a 2-of-3 where the host swapped one owner's key for its own, with derivations that
    claim all three owners: the key listed for that owner is not its xpub's."""
    thief_root = bip32.HDKey.from_seed(bytes([0x66]) * 64)
    thief_key = thief_root.derive(account_indexes("regtest")).to_public()
    keys = list(host.wallet.account_keys())
    keys[2] = BitcoinKey(keys[2].fingerprint, keys[2].path, thief_key.to_base58(version=bytes.fromhex("043587cf")))
    swapped = parse_btc_cold_wallet(wallet_bytes(keys, 2, DAEMON.verify_key.encode().hex()))

    def redirect(psbt: Any) -> None:
        out = psbt.outputs[1]
        out.bip32_derivations = derivations(swapped, 1, 0)
        out.witness_script = Script(swapped.witness_script(1, 0))
        out.script_pubkey = Script(swapped.script_pubkey(1, 0))

    refused_unsigned(host.ceremony, host.crafted([SAT // 2], redirect), "btc_change_invalid")


@pytest.mark.parametrize(
    ("script", "value"),
    [
        (b"\x6a\x04data", 0),
        (b"\x6a\x04data", 1000),
        (THIEF_SCRIPT, 0),
        (THIEF_SCRIPT, 293),
        (b"\x00\x20" + bytes(32), 329),
    ],
)
def test_op_return_zero_value_and_dust_outputs_are_refused(host: Host, script: bytes, value: int):
    spec = host.spec([SAT // 2], fee=FEE + value)
    spec.extra = [(script, value)]
    refused_unsigned(
        host.ceremony, host.write(host.batch([host.withdrawal(SAT // 2)], spec.build())), "btc_output_forbidden"
    )


# -- the fee -------------------------------------------------------------------------------------------------
def test_a_fee_over_max_fee_over_the_rate_or_over_ten_percent_is_refused(host: Host):
    # 0.0006 BTC is over max_fee (0.0005)
    refused_unsigned(
        host.ceremony,
        host.write(host.batch([host.withdrawal(SAT // 2)], host.spec([SAT // 2], fee=60_000).build())),
        "btc_fee_too_high",
    )
    # within max_fee, but 20,000 sat over ~190 vB is over 50 sat/vB
    size = vsize(2, 3, 1, [OMNI_SCRIPT, host.wallet.script_pubkey(1, 0)])
    assert 20_000 // size > 50
    refused_unsigned(
        host.ceremony,
        host.write(host.batch([host.withdrawal(SAT // 2)], host.spec([SAT // 2], fee=20_000).build())),
        "btc_fee_too_high",
    )
    # a small withdrawal: 5,000 sat of fee on 40,000 sent is over 10%
    refused_unsigned(
        host.ceremony,
        host.write(host.batch([host.withdrawal(40_000)], host.spec([40_000], fee=5_000).build())),
        "btc_fee_too_high",
    )


# -- the transaction's form ----------------------------------------------------------------------------------
def test_global_xpubs_other_than_the_pinned_ones_are_refused(host: Host):
    def add(psbt: Any) -> None:
        other = bip32.HDKey.from_seed(bytes([0x66]) * 64).derive(account_indexes("regtest")).to_public()
        psbt.xpubs[other] = DerivationPath(b"\x01\x02\x03\x04", account_indexes("regtest"))

    refused_unsigned(host.ceremony, host.crafted([SAT // 2], add), "btc_xpub_mismatch")


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: setattr(s, "version", 1),
        lambda s: setattr(s, "sequence", 0xFFFFFFFF),  # final: no replace-by-fee
        lambda s: setattr(s, "sequence", 10),  # a relative lock of 10 blocks
        lambda s: setattr(s, "locktime", NOW + DAY),  # a time in the future
        lambda s: setattr(s, "locktime", 6_000_000),  # a height far ahead
    ],
    ids=["version-1", "final-sequence", "relative-lock", "future-time", "far-height"],
)
def test_a_transaction_without_rbf_or_with_a_far_lock_is_refused(host: Host, edit: Callable[[Spec], None]):
    spec = host.spec([SAT // 2])
    edit(spec)
    refused_unsigned(
        host.ceremony, host.write(host.batch([host.withdrawal(SAT // 2)], spec.build())), "btc_tx_form_invalid"
    )


def test_a_height_locktime_nearby_is_shown_and_signed(host: Host):
    spec = host.spec([SAT // 2])
    spec.locktime = 250
    raw = host.write(host.batch([host.withdrawal(SAT // 2)], spec.build()))
    assert "locktime     block 250" in host.ceremony.review(raw, ok=True).output


# -- the ledger: one transaction per coin and per withdrawal, except a declared fee bump --------------------
def test_a_coin_signed_in_one_batch_is_not_signed_into_another(host: Host):
    batch, spec = host.honest()
    signed_btc(host.sign(host.write(batch))[0])
    other = host.batch(
        [host.withdrawal(SAT // 4)],
        Spec(host.wallet, spec.coins, [(OMNI_SCRIPT, SAT // 4)], (0, 3 * SAT // 4 - FEE)).build(),
    )
    refused_unsigned(host.ceremony, host.write(other), "btc_input_already_signed")


def test_a_withdrawal_signed_in_one_batch_is_not_signed_into_another(host: Host):
    batch, _ = host.honest()
    signed_btc(host.sign(host.write(batch))[0])
    again = host.spec([SAT // 2])  # a fresh coin, the same withdrawal id
    refused_unsigned(
        host.ceremony, host.write(host.batch(list(batch.withdrawals), again.build())), "withdrawal_already_signed"
    )


def test_the_same_batch_signed_twice_is_recorded_once(host: Host):
    batch, _ = host.honest()
    raw = host.write(batch)
    signed_btc(host.sign(raw)[0])
    signed_btc(host.sign(raw)[0])
    assert len((host.ceremony.states[0] / "ledger.jsonl").read_text().splitlines()) == 1


def _bump(host: Host, batch: BtcBatch, spec: Spec, fee: int, **kw: Any) -> BtcBatch:
    value = spec.coins[0].value
    sent = sum(v for _, v in spec.pays)
    bumped = Spec(host.wallet, spec.coins, spec.pays, (0, value - sent - fee))
    return host.batch(list(batch.withdrawals), bumped.build(), **kw)


def test_a_fee_bump_is_signed_and_the_replaced_batch_never_again(host: Host):
    batch, spec = host.honest()
    first = host.write(batch)
    signed_btc(host.sign(first)[0])
    bump = _bump(host, batch, spec, 3 * FEE, replaces=batch.id)
    signed_btc(host.sign(host.write(bump))[0])
    lines = [json.loads(line) for line in (host.ceremony.states[0] / "ledger.jsonl").read_text().splitlines()]
    assert lines[-1]["replaces"] == batch.id
    refused_unsigned(host.ceremony, first, "btc_replacement_invalid")
    # and a second, different bump of the same original
    refused_unsigned(
        host.ceremony, host.write(_bump(host, batch, spec, 4 * FEE, replaces=batch.id)), "btc_replacement_invalid"
    )
    # a bump of the bump is fine
    signed_btc(host.sign(host.write(_bump(host, bump, spec, 9_000, replaces=bump.id)))[0])


def test_a_fee_bump_must_carry_the_same_withdrawals_and_spend_a_same_input(host: Host):
    batch, spec = host.honest()
    signed_btc(host.sign(host.write(batch))[0])
    # same coin, the withdrawal swapped for a bigger one under a new id
    other = Spec(host.wallet, spec.coins, [(OMNI_SCRIPT, 3 * SAT // 4)], (0, SAT // 4 - 3 * FEE))
    raw = host.write(host.batch([host.withdrawal(3 * SAT // 4)], other.build(), replaces=batch.id))
    refused_unsigned(host.ceremony, raw, "btc_replacement_invalid")
    # the same withdrawal from a fresh coin: both could be mined
    fresh = host.spec([SAT // 2], fee=3 * FEE)
    raw = host.write(host.batch(list(batch.withdrawals), fresh.build(), replaces=batch.id))
    refused_unsigned(host.ceremony, raw, "btc_replacement_invalid")


def test_bitcoin_withdrawals_count_in_the_policy_window(host: Host):
    """12 BTC per 24 h: 3 × 5 BTC in separate batches, the third is over."""
    for n in range(3):
        spec = host.spec([5 * SAT], value=6 * SAT)
        raw = host.write(host.batch([host.withdrawal(5 * SAT)], spec.build()))
        if n < 2:
            signed_btc(host.sign(raw)[0])
        else:
            refused_unsigned(host.ceremony, raw, "batch_over_window")


def test_review_refuses_too(host: Host):
    """`signer review` runs the same checks (here: a changed amount)."""
    spec = host.spec([SAT // 2])
    spec.pays = [(OMNI_SCRIPT, SAT // 2 + 1)]
    refused(
        host.ceremony.review(host.write(host.batch([host.withdrawal(SAT // 2)], spec.build()))), "btc_outputs_mismatch"
    )


def test_a_batch_for_another_network_is_refused(host: Host):
    """Testnet and regtest share tpubs, so the descriptor text is the same: only the network tells them apart."""
    testnet_omni = Script(OMNI_SCRIPT).address(NETWORKS["test"])
    spec = host.spec([SAT // 2])
    batch = host.batch([host.withdrawal(SAT // 2, testnet_omni)], spec.build())
    refused_unsigned(host.ceremony, host.write(dataclasses.replace(batch, network="testnet")), "btc_wrong_wallet")


def test_a_customer_payout_the_backend_never_asked_for_is_refused(host: Host):
    """The host invents a customer payout to its own address: no backend request, so nothing vouches for it."""
    spec = host.spec([SAT // 2])
    spec.pays = [(THIEF_SCRIPT, SAT // 2)]
    payout = dataclasses.replace(host.withdrawal(SAT // 2, THIEF), customer="cust-42", kind="unlisted")
    refused_unsigned(host.ceremony, host.write(host.batch([payout], spec.build())), "request_missing")


def test_signing_takes_the_typed_txid_and_an_owners_key(host: Host, tmp_path: Path):
    batch, spec = host.honest()
    path = host.ceremony.file(host.write(batch))
    op = host.ceremony.operators[0]
    out = tmp_path / "typed.sig"
    args = ("sign", path, "--keystore", op.keystore, "--out", out, "--passphrase-file", host.ceremony.passfile)
    refused(host.ceremony.run(*args, stdin="deadbeef\n"), "confirmation_declined")
    assert not out.exists()
    txid = bytes(spec.build().tx.txid()).hex()
    signed_btc(host.ceremony.run(*args, stdin=txid[:8] + "\n"))
    assert parse_btc_signature_file(out.read_bytes()).txid == txid
    # a keystore that is not one of the wallet's owners signs nothing
    outsider = tmp_path / "outsider.keystore"
    outsider.write_bytes(create_keystore("mallory", mnemonic_from_entropy(bytes(32)), "pw", n=MIN_SCRYPT_N))
    other = tmp_path / "other.sig"
    args = ("sign", path, "--keystore", outsider, "--out", other, "--yes", "--passphrase-file", host.ceremony.passfile)
    assert "not an owner of the pinned Bitcoin wallet" in refused(host.ceremony.run(*args, who=1), "signer_error")
    assert not other.exists()
