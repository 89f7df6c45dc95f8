"""`signer cold …`: pin the cold wallets this signer signs for (the Safe, the Bitcoin descriptor), each once, and
show them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from policies.text import escape
from signer import btcwallet, coldwallet, policystate
from signer.cli.common import confirm_pin, state_dir, state_option, yes_option
from signer.cliutil import read_file
from signer.errors import SignerError
from signer.keystore import load_keystore


@click.group()
def cold() -> None:
    """Pin and show the cold wallets (the Safe, the Bitcoin descriptor) this signer signs for."""


@cold.command("pin")
@click.argument("wallet", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--keystore",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Check that this key is one of the wallet's owners (the Safe: its owner address; Bitcoin: its account key).",
)
@yes_option
@state_option
def cold_pin(wallet: Path, keystore: Path | None, yes: bool, state: Path | None) -> None:
    """Pin the cold wallet file written by `custody cold create`, once, after comparing the file's hash out of
    band: a canonical Safe 1.4.1 whose address derives from the owners and threshold shown, or a Bitcoin
    wallet whose descriptor is rebuilt from the owners' keys and threshold shown."""
    st = state_dir(state)
    raw = read_file(wallet)
    if btcwallet.is_btc_wallet_file(raw):
        _pin_btc(st, raw, keystore, yes)
        return
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


def _pin_btc(st: Path, raw: bytes, keystore: Path | None, yes: bool) -> None:
    digest = hashlib.sha256(raw).hexdigest()
    try:
        parsed = btcwallet.parse_btc_cold_wallet(raw)
    except SignerError as exc:
        policystate.record(st, "btc-cold-pin", "?", digest, f"refused: {exc.code}")
        raise
    if keystore is not None:
        card = load_keystore(read_file(keystore)).card
        mine = card.bitcoin_key(parsed.network)
        if mine is None:
            raise SignerError(
                f"key {card.name} has no Bitcoin keys (made before Bitcoin support): run `signer key card "
                f"{keystore} --out CARD --add-bitcoin` first"
            )
        if mine not in parsed.account_keys():
            raise SignerError(f"this key's {parsed.network} account {mine.xpub[:20]}… is not an owner of this wallet")
    click.echo(f"cold wallet file hash  {digest}")
    _show_btc(parsed)
    click.echo("the descriptor is rebuilt from these owners' keys and the threshold; its checksum is shown above")
    confirm_pin(st, "btc-cold-pin", parsed.checksum, digest, yes)
    btcwallet.pin(st, raw)
    policystate.record(st, "btc-cold-pin", parsed.checksum, digest, "pinned")


@cold.command("show")
@state_option
def cold_show(state: Path | None) -> None:
    """Show the pinned cold wallets: the Safe, and the Bitcoin descriptor."""
    st = state_dir(state)
    btc = btcwallet.pinned_or_none(st)
    if btc is None or (st / "cold-wallet.json").exists():
        _show_cold(coldwallet.pinned(st))
    if btc is not None:
        click.echo("")
        _show_btc(btc)


def _show_btc(w: btcwallet.BtcColdWallet) -> None:
    click.echo(f"Bitcoin       {w.network}, {w.threshold} of {len(w.owners)} (P2WSH sorted multisig)")
    for owner in w.owners:
        click.echo(f"owner         {escape(owner.name)}: [{owner.key.fingerprint}] {owner.key.path} {owner.key.xpub}")
    click.echo(f"descriptor    {w.descriptor}")
    click.echo(f"checksum      {w.checksum}")
    click.echo(f"daemon key    {w.daemon_key}")


def _show_cold(w: coldwallet.ColdWallet) -> None:
    click.echo(f"Safe          {w.safe} on chain {w.chain_id} (salt nonce {w.salt_nonce})")
    click.echo(f"threshold     {w.threshold} of {len(w.owners)}")
    for owner in w.owners:
        click.echo(f"owner         {owner}")
    click.echo(f"multisend     {w.multisend} (MultiSendCallOnly)")
    click.echo(f"daemon key    {w.daemon_key}")
