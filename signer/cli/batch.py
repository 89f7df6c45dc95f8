"""`signer review FILE` and `signer sign FILE`: check a cold batch against the pinned cold wallet, the newest
verified policy and this signer's ledger, show it, and sign its SafeTx hash as one of the Safe's owners. A
Bitcoin batch (kind ``custody-btc-batch``) goes to ``signer.cli.btc``."""

from __future__ import annotations

import time
from pathlib import Path

import click

from policies.bundle import Bundle
from signer import coldwallet, ledger, policystate
from signer.batchfile import Batch, OwnerSignature
from signer.cli import btc
from signer.cli.common import owner_key, signing_options, state_dir, state_option
from signer.cliutil import read_file
from signer.errors import SignerError
from signer.review import describe, payouts_of, review
from signer.safetx import sign_hash


def review_batch(raw: bytes, st: Path) -> tuple[Batch, Bundle, list[str]]:
    """The batch, checked by ``signer.review`` and against the ledger of what this signer signed, the newest
    verified bundle, and the lines to show; a refusal is recorded in the transcript."""
    cold_wallet = coldwallet.pinned(st)
    bundle = policystate.verified_bundle(st)
    now = int(time.time())
    try:
        batch = review(raw, cold_wallet, bundle, now)
        ledger.check(batch, bundle.policy, ledger.read(st), now)
    except SignerError as exc:
        policystate.record(st, "batch-review", "?", "?", f"refused: {exc.code}")
        raise
    return batch, bundle, describe(batch, bundle.policy, bundle.version, payouts_of(batch, bundle.policy, now))


@click.command("review")
@click.argument("batch_file", metavar="FILE", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@state_option
def review_cmd(batch_file: Path, state: Path | None) -> None:
    """Check a batch file (Safe or Bitcoin) against the pinned cold wallet and the newest verified policy, and
    show it."""
    st = state_dir(state)
    raw = read_file(batch_file)
    if btc.is_btc_batch(raw):
        btc.review(raw, st)
        return
    batch, _, lines = review_batch(raw, st)
    for line in lines:
        click.echo(line)
    policystate.record(st, "batch-review", batch.id, "0x" + batch.safe_tx_hash.hex(), "passed")


@click.command("sign")
@click.argument("batch_file", metavar="FILE", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@signing_options
def sign_cmd(
    batch_file: Path, keystore: Path, out: Path, yes: bool, passphrase_file: Path | None, state: Path | None
) -> None:
    """Review the batch, confirm, and write this owner's signature: over its SafeTx hash, or for a Bitcoin batch
    the PSBT with this owner's partial signatures."""
    st = state_dir(state)
    raw = read_file(batch_file)
    if btc.is_btc_batch(raw):
        btc.sign(raw, keystore, out, yes, passphrase_file, st)
        return
    batch, bundle, lines = review_batch(raw, st)
    for line in lines:
        click.echo(line)
    digest = "0x" + batch.safe_tx_hash.hex()
    ks, key = owner_key(
        st, keystore, yes, passphrase_file, ("batch-sign", batch.id, digest), digest[2:10], "SafeTx hash"
    )
    # Checked again at the moment of signing (the operator may have taken a while: expiry, and another signing
    # process on this state), under the ledger's lock, and recorded before the signature exists: a crash in
    # between leaves an entry that only tightens limits, never a signature the ledger does not know.
    try:
        ledger.record(st, batch, bundle.policy, int(time.time()))
    except SignerError as exc:
        policystate.record(st, "batch-sign", batch.id, digest, f"refused: {exc.code}")
        raise
    signature = OwnerSignature(
        batch_id=batch.id,
        chain_id=batch.chain_id,
        safe=batch.safe,
        safe_nonce=batch.safe_nonce,
        safe_tx_hash=batch.safe_tx_hash,
        owner=ks.card.owner_address,
        signature=sign_hash(key, batch.safe_tx_hash),
    )
    out.write_bytes(signature.to_bytes())
    policystate.record(st, "batch-sign", batch.id, digest, "signed")
    click.echo(f"\nsigned {digest} as {ks.card.name} ({ks.card.owner_address}); wrote {out}")
