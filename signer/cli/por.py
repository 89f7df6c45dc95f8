"""`signer por sign`: sign a proof-of-reserves statement for the pinned Safe (EIP-1271), after checking its
Safe and its assets against the newest verified policy."""

from __future__ import annotations

from pathlib import Path

import click

from signer import coldwallet, policystate
from signer.cli.common import owner_key, signing_options, state_dir
from signer.cliutil import read_file
from signer.errors import SignerError
from signer.porstatement import Signed, check_pinned_safe, check_policy, parse_statement, safe_digest, signature_file
from signer.porstatement import describe as describe_statement
from signer.safetx import sign_hash


@click.group()
def por() -> None:
    """Proof of reserves: sign a statement for the pinned Safe (EIP-1271)."""


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
