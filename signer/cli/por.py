"""`signer por sign`: sign a proof-of-reserves statement for the pinned Safe (EIP-1271), after checking its
Safe and its assets against the newest verified policy. `signer por sign-bitcoin`: sign the pinned Bitcoin cold
wallet's BIP-127 reserve PSBT for a statement (``signer.porbtcsign``)."""

from __future__ import annotations

from pathlib import Path

import click

from signer import btcwallet, coldwallet, policystate
from signer.cli.common import keystore_passphrase, owner_key, signing_options, state_dir
from signer.cliutil import read_file
from signer.errors import ConfirmationDeclined, SignerError
from signer.keystore import load_keystore, unlock
from signer.porbtcsign import describe as describe_reserve
from signer.porbtcsign import review_reserve, sign_reserve
from signer.porstatement import Signed, check_pinned_safe, check_policy, parse_statement, safe_digest, signature_file
from signer.porstatement import describe as describe_statement
from signer.safetx import sign_hash


@click.group()
def por() -> None:
    """Proof of reserves: sign a statement for the pinned Safe (EIP-1271) or the pinned Bitcoin wallet (BIP-127)."""


@por.command("sign")
@click.argument("statement_file", metavar="STATEMENT", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@signing_options
def por_sign(
    statement_file: Path, keystore: Path, out: Path, yes: bool, passphrase_file: Path | None, state: Path | None
) -> None:
    """Check the statement's figures, its Safe and its assets against the newest verified policy, show them,
    confirm, and sign it for the pinned Safe."""
    st = state_dir(state)
    statement = parse_statement(read_file(statement_file))
    cold_wallet = coldwallet.pinned(st)
    digest = statement.hash.hex()
    try:
        check_pinned_safe(statement, cold_wallet.chain_id, cold_wallet.safe, cold_wallet.owners, cold_wallet.threshold)
        _, bundle = policystate.newest(st)
        check_policy(statement, bundle)
    except SignerError as exc:
        policystate.record(st, "por-sign", statement.claims["snapshot_id"], digest, f"refused: {exc.code}")
        raise
    for line in describe_statement(statement, bundle):
        click.echo(line)
    subject = ("por-sign", statement.claims["snapshot_id"], digest)
    ks, key = owner_key(st, keystore, yes, passphrase_file, subject, digest[:8], "statement hash")
    signature = sign_hash(key, safe_digest(statement, cold_wallet.safe))
    out.write_bytes(signature_file(statement, Signed(cold_wallet.safe, ks.card.owner_address, signature)))
    policystate.record(st, "por-sign", statement.claims["snapshot_id"], digest, "signed")
    click.echo(f"\nsigned statement {digest} for {cold_wallet.safe} as {ks.card.name}; wrote {out}")


@por.command("sign-bitcoin")
@click.argument("statement_file", metavar="STATEMENT", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("psbt_file", metavar="RESERVE_PSBT", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@signing_options
def por_sign_bitcoin(
    statement_file: Path,
    psbt_file: Path,
    keystore: Path,
    out: Path,
    yes: bool,
    passphrase_file: Path | None,
    state: Path | None,
) -> None:
    """Check the statement against the newest verified policy and the reserve PSBT against the statement and the
    pinned Bitcoin wallet (input 0 the commitment to this statement, every other input the wallet's listed
    coins, one OP_TRUE output, SIGHASH_ALL), show them, confirm, and write the PSBT with this owner's signatures."""
    st = state_dir(state)
    statement = parse_statement(read_file(statement_file))
    pinned = btcwallet.pinned(st)
    digest = statement.hash.hex()
    subject = ("por-sign-bitcoin", statement.claims["snapshot_id"], digest)
    try:
        _, bundle = policystate.newest(st)
        check_policy(statement, bundle)
        wallet, psbt = review_reserve(statement, read_file(psbt_file), pinned)
    except SignerError as exc:
        policystate.record(st, *subject, f"refused: {exc.code}")
        raise
    for line in [*describe_statement(statement, bundle), *describe_reserve(statement, wallet)]:
        click.echo(line)
    ks = load_keystore(read_file(keystore))
    mine = ks.card.bitcoin_key(pinned.network)
    if mine is None or mine not in pinned.account_keys():
        raise SignerError(f"this key's {pinned.network} account is not an owner of the pinned Bitcoin wallet")
    if not yes:
        typed = click.prompt('\nType the first 8 hex digits of the "statement hash" shown above to sign it')
        if str(typed).strip().lower() != digest[:8]:
            policystate.record(st, *subject, "declined")
            raise ConfirmationDeclined("confirmation did not match; nothing was signed")
    account = unlock(ks, keystore_passphrase(passphrase_file)).bitcoin_account(pinned.network)
    out.write_text(sign_reserve(psbt, wallet, account, pinned) + "\n")
    policystate.record(st, *subject, "signed")
    click.echo(f"\nsigned the reserve proof of statement {digest} as {ks.card.name} ({mine.fingerprint}); wrote {out}")
