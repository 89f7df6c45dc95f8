"""`signer review FILE` and `signer sign FILE` for a Bitcoin batch (``signer.cli.batch`` dispatches here on the
file's kind): the same steps as for the Safe — read, parse, verify, describe, confirm, sign, write."""

from __future__ import annotations

import time
from pathlib import Path

import click

from policies.bundle import Bundle
from policies.canonical import parse_canonical
from policies.errors import CustodyError
from signer import btcledger, btcwallet, ledger, policystate
from signer.btcbatch import BATCH_KIND
from signer.btcsign import sign_review
from signer.cli.common import keystore_passphrase
from signer.cliutil import read_file
from signer.errors import ConfirmationDeclined, SignerError
from signer.keystore import load_keystore, unlock
from signer.psbtreview import BtcReview, describe_btc, review_btc


def is_btc_batch(raw: bytes) -> bool:
    try:
        doc = parse_canonical(raw)
    except CustodyError:
        return False
    return isinstance(doc, dict) and doc.get("kind") == BATCH_KIND


def review_btc_batch(raw: bytes, st: Path) -> tuple[BtcReview, Bundle, list[str]]:
    """The batch checked by ``signer.psbtreview`` and against this signer's ledger, the newest verified bundle
    and the lines to show; a refusal is recorded in the transcript."""
    wallet = btcwallet.pinned(st)
    bundle = policystate.verified_bundle(st)
    now = int(time.time())
    try:
        found = review_btc(raw, wallet, bundle, now)
        btcledger.check(found, bundle.policy, ledger.read(st), now)
    except SignerError as exc:
        policystate.record(st, "btc-batch-review", "?", "?", f"refused: {exc.code}")
        raise
    return found, bundle, describe_btc(found, bundle.policy, bundle.version)


def review(raw: bytes, st: Path) -> None:
    found, _, lines = review_btc_batch(raw, st)
    for line in lines:
        click.echo(line)
    policystate.record(st, "btc-batch-review", found.batch.id, found.txid, "passed")


def sign(raw: bytes, keystore: Path, out: Path, yes: bool, passphrase_file: Path | None, st: Path) -> None:
    found, bundle, lines = review_btc_batch(raw, st)
    for line in lines:
        click.echo(line)
    wallet = btcwallet.pinned(st)
    ks = load_keystore(read_file(keystore))
    mine = ks.card.bitcoin_key(wallet.network)
    if mine is None:
        raise SignerError(
            f"key {ks.card.name} has no Bitcoin keys (made before Bitcoin support): run `signer key card "
            f"{keystore} --out CARD --add-bitcoin` first"
        )
    if mine not in wallet.account_keys():
        raise SignerError(f"this key's {wallet.network} account is not an owner of the pinned Bitcoin wallet")
    if not yes:
        typed = click.prompt('\nType the first 8 hex digits of the "txid" shown above to sign it')
        if str(typed).strip().lower() != found.txid[:8]:
            policystate.record(st, "btc-batch-sign", found.batch.id, found.txid, "declined")
            raise ConfirmationDeclined("confirmation did not match; nothing was signed")
    account = unlock(ks, keystore_passphrase(passphrase_file)).bitcoin_account(wallet.network)
    # Checked again under the ledger's lock and recorded before the signature exists (as for the Safe).
    try:
        btcledger.record(st, found, bundle.policy, int(time.time()))
    except SignerError as exc:
        policystate.record(st, "btc-batch-sign", found.batch.id, found.txid, f"refused: {exc.code}")
        raise
    out.write_bytes(sign_review(found, account, mine).to_bytes())
    policystate.record(st, "btc-batch-sign", found.batch.id, found.txid, "signed")
    click.echo(f"\nsigned txid {found.txid} as {ks.card.name} ({mine.fingerprint}); wrote {out}")
