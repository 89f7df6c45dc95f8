"""`signer cold …`: pin the cold wallet (Safe) this signer signs for, once, and show it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from signer import coldwallet, policystate
from signer.cli.common import confirm_pin, state_dir, state_option, yes_option
from signer.cliutil import read_file
from signer.errors import SignerError
from signer.keystore import load_keystore


@click.group()
def cold() -> None:
    """Pin and show the cold wallet (Safe) this signer signs for."""


@cold.command("pin")
@click.argument("wallet", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--keystore",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Check that this key's owner address is one of the Safe's owners.",
)
@yes_option
@state_option
def cold_pin(wallet: Path, keystore: Path | None, yes: bool, state: Path | None) -> None:
    """Pin the cold wallet file written by `custody cold create`, once: only a canonical Safe 1.4.1 whose
    address derives from the owners and threshold shown, after comparing the file's hash out of band."""
    st = state_dir(state)
    raw = read_file(wallet)
    try:
        parsed = coldwallet.parse_cold_wallet(raw)
    except SignerError as exc:
        policystate.record(st, "cold-pin", "?", hashlib.sha256(raw).hexdigest(), f"refused: {exc.code}")
        raise
    if keystore is not None:
        card = load_keystore(read_file(keystore)).card
        if card.owner_address not in parsed.owners:
            raise SignerError(f"this key's owner address {card.owner_address} is not an owner of {parsed.safe}")
    digest = hashlib.sha256(raw).hexdigest()
    click.echo(f"cold wallet file hash  {digest}")
    _show_cold(parsed)
    click.echo("the Safe's address is derived from these owners and threshold with the canonical Safe 1.4.1 factory")
    confirm_pin(st, "cold-pin", parsed.safe, digest, yes)
    coldwallet.pin(st, raw)
    policystate.record(st, "cold-pin", parsed.safe, digest, "pinned")


@cold.command("show")
@state_option
def cold_show(state: Path | None) -> None:
    """Show the pinned cold wallet."""
    _show_cold(coldwallet.pinned(state_dir(state)))


def _show_cold(w: coldwallet.ColdWallet) -> None:
    click.echo(f"Safe          {w.safe} on chain {w.chain_id} (salt nonce {w.salt_nonce})")
    click.echo(f"threshold     {w.threshold} of {len(w.owners)}")
    for owner in w.owners:
        click.echo(f"owner         {owner}")
    click.echo(f"multisend     {w.multisend} (MultiSendCallOnly)")
    click.echo(f"daemon key    {w.daemon_key}")
