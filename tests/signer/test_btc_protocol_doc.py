"""docs/batch-protocol.md's Bitcoin worked example (section 9) is what the reference implementation writes and
reads, so a third party implementing from the page gets the same bytes."""

from __future__ import annotations

import re
from pathlib import Path

from embit import ec
from embit.networks import NETWORKS
from embit.psbt import PSBT
from embit.script import Script, p2wpkh
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput
from nacl.signing import SigningKey

from signer.batchfile import BatchWithdrawal
from signer.btcbatch import (
    BtcBatch,
    parse_btc_batch_file,
    parse_btc_signature_file,
    write_btc_batch_file,
)
from signer.btckeys import account_key, account_private
from signer.btcsign import sign_review
from signer.btcwallet import parse_btc_cold_wallet
from signer.psbtreview import BtcReview, check_form, check_inputs, check_outputs
from tests.signer.btcfixtures import SAT, Coin, Spec, wallet_bytes

DOC = Path(__file__).parents[2] / "docs" / "batch-protocol.md"
DAEMON = SigningKey(bytes([9]) * 32)
SEEDS = [bytes([0x50 + i]) * 64 for i in range(3)]
CREATED = 1767225600


def example() -> tuple[bytes, bytes, bytes]:
    """The example's three files, built from the constants the page states."""
    keys = [account_key(seed, "regtest") for seed in SEEDS]
    wallet_raw = wallet_bytes(keys, 2, DAEMON.verify_key.encode().hex(), names=["alice", "bob", "carol"])
    wallet = parse_btc_cold_wallet(wallet_raw)
    prev = Transaction(
        version=2,
        vin=[TransactionInput(bytes([0x11]) * 32, 0, sequence=0xFFFFFFFF)],
        vout=[TransactionOutput(SAT, Script(wallet.script_pubkey(0, 0)))],
    )
    payee = p2wpkh(ec.PrivateKey(bytes([0x71]) * 32).get_public_key())
    spec = Spec(wallet, [Coin(0, 0, SAT, prev)], [(bytes(payee.data), SAT // 2)], (0, SAT // 2 - 2_000))
    withdrawal = BatchWithdrawal(
        "00000000-0000-4000-8000-0000000000b1", "BTC", SAT // 2, 8, None, payee.address(NETWORKS["regtest"]), "omnibus"
    )
    batch = BtcBatch(
        id="00000000-0000-4000-8000-0000000000bb",
        network="regtest",
        descriptor=wallet.descriptor,
        policy_version=1,
        policy_hash="ab" * 32,
        created_at=CREATED,
        expires_at=CREATED + 86400,
        withdrawals=(withdrawal,),
        psbt=spec.build().to_base64(),
    )
    batch_raw = write_btc_batch_file(batch, DAEMON)
    psbt = batch.parsed_psbt()
    found = BtcReview(
        batch,
        bytes(psbt.tx.txid()).hex(),
        check_inputs(psbt, wallet),
        check_outputs(psbt, wallet, batch),
        2_000,
        0,
        0,
        {},
    )
    signature = sign_review(found, account_private(SEEDS[0], "regtest"), keys[0])
    return wallet_raw, batch_raw, signature.to_bytes()


def _examples() -> list[bytes]:
    return [block.encode() for block in re.findall(r"```jsonc\n(.*?)\n```", DOC.read_text(), re.S)]


def test_the_bitcoin_worked_example_is_what_the_implementation_writes_and_reads():
    wallet_raw, batch_raw, signature_raw = _examples()
    assert (wallet_raw, batch_raw, signature_raw) == example()
    wallet = parse_btc_cold_wallet(wallet_raw)
    assert wallet.checksum in DOC.read_text().split("alice's signature file")[0]
    parsed = parse_btc_batch_file(batch_raw)
    parsed.verify_daemon_signature(wallet.daemon_key)
    assert write_btc_batch_file(parsed.batch, DAEMON) == batch_raw
    psbt = parsed.batch.parsed_psbt()
    check_form(psbt, wallet, CREATED)
    (spend,) = check_inputs(psbt, wallet)
    assert check_outputs(psbt, wallet, parsed.batch) == (SAT // 2 - 2_000, 0)
    sig = parse_btc_signature_file(signature_raw)
    assert sig.txid in DOC.read_text()
    signed = PSBT.from_base64(sig.psbt)
    ((pub, der),) = signed.inputs[0].partial_sigs.items()
    digest = signed.sighash_segwit(0, signed.inputs[0].witness_script, spend.value, sighash=SIGHASH.ALL)
    assert der[-1] == SIGHASH.ALL and pub.verify(ec.Signature.parse(der[:-1]), digest)


if __name__ == "__main__":  # prints the example's files, to paste into the page
    for raw in example():
        print(raw.decode())
