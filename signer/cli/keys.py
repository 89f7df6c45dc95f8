"""`signer key …`: make an operator's key (24 words on paper, a sealed keystore), back it up as SLIP-39 shares,
restore or recover it, and show its public card."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import click

from signer import policystate
from signer.cli.common import keystore_passphrase, passphrase_option, state_dir, state_option
from signer.cliutil import read_file
from signer.errors import MnemonicInvalid, SignerError
from signer.keystore import (
    check_mnemonic,
    create_keystore,
    load_keystore,
    mnemonic_from_entropy,
    new_mnemonic,
    owner_card_bytes,
    recover_entropy,
    unlock,
)


@click.group()
def key() -> None:
    """Create and inspect operator keys."""


@key.command("new")
@click.option("--name", required=True, help="A name for this key, such as the operator's.")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dice", default="", help="Dice rolls (or any text) mixed into the OS's randomness.")
@click.option("--no-confirm", is_flag=True, help="Do not ask for words back (automation and tests only).")
@passphrase_option
@state_option
def key_new(
    name: str, out: Path, dice: str, no_confirm: bool, passphrase_file: Path | None, state: Path | None
) -> None:
    """Make a 24-word key, show the words once for the paper backup, check a few, write the sealed keystore."""
    _refuse_existing(out)
    words = new_mnemonic(dice.encode())
    click.echo("Write these 24 words on paper, in order. They are shown only now:\n")
    for i, word in enumerate(words.split(), 1):
        click.echo(f"  {i:2d}. {word}")
    if not no_confirm:
        _confirm_words(words)
    _write_keystore(name, out, words, "", passphrase_file, state_dir(state), "key-new")


@key.command("restore")
@click.option("--name", required=True)
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--bip39-passphrase", "ask_bip39", is_flag=True, help="Ask for the optional BIP-39 passphrase.")
@passphrase_option
@state_option
def key_restore(name: str, out: Path, ask_bip39: bool, passphrase_file: Path | None, state: Path | None) -> None:
    """Rebuild a keystore from its BIP-39 mnemonic, read from standard input."""
    _refuse_existing(out)
    words = check_mnemonic(sys.stdin.readline())
    extra = str(click.prompt("BIP-39 passphrase", hide_input=True, err=True)) if ask_bip39 else ""
    _write_keystore(name, out, words, extra, passphrase_file, state_dir(state), "key-restore")


@key.command("backup")
@click.argument("keystore", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--shares", required=True, type=int, help="How many SLIP-39 shares to make.")
@click.option("--threshold", required=True, type=int, help="How many shares recover the key.")
@passphrase_option
@state_option
def key_backup(keystore: Path, shares: int, threshold: int, passphrase_file: Path | None, state: Path | None) -> None:
    """Split the key into SLIP-39 shares: any THRESHOLD of them give it back. Each goes on its own paper."""
    ks = load_keystore(read_file(keystore))
    unlocked = unlock(ks, keystore_passphrase(passphrase_file))
    parts = unlocked.backup_shares(threshold, shares)
    click.echo(f"{shares} SLIP-39 shares of key {ks.card.name} ({ks.card.fingerprint}); any {threshold} recover it.")
    click.echo("Write each on its own paper and keep them in different places. They are shown only now.")
    for i, share in enumerate(parts, 1):
        click.echo(f"\nshare {i} of {shares}:\n  {share}")
    click.echo("\nA BIP-39 passphrase, if the key has one, is not in the shares: keep it separately.")
    policystate.record(state_dir(state), "key-backup", ks.card.name, ks.card.fingerprint, f"{threshold}-of-{shares}")


@key.command("recover")
@click.option("--name", required=True)
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--bip39-passphrase", "ask_bip39", is_flag=True, help="Ask for the optional BIP-39 passphrase.")
@passphrase_option
@state_option
def key_recover(name: str, out: Path, ask_bip39: bool, passphrase_file: Path | None, state: Path | None) -> None:
    """Rebuild a keystore from SLIP-39 shares, one per line on standard input."""
    _refuse_existing(out)
    shares = [line for line in sys.stdin.read().splitlines() if line.strip()]
    entropy = recover_entropy(shares)
    words = mnemonic_from_entropy(entropy)
    extra = str(click.prompt("BIP-39 passphrase", hide_input=True, err=True)) if ask_bip39 else ""
    _write_keystore(name, out, words, extra, passphrase_file, state_dir(state), "key-recover")


def _refuse_existing(out: Path) -> None:
    if out.exists():
        raise SignerError(f"{out} exists; refusing to overwrite a keystore")


def _confirm_words(words: str) -> None:
    """Ask for three of the words back, so a miswritten paper is found now, not on the day it is needed."""
    listed = words.split()
    positions = sorted(secrets.SystemRandom().sample(range(1, len(listed) + 1), 3))
    click.echo("\nTo check your paper, type the words it says at these positions.")
    for pos in positions:
        typed = str(click.prompt(f"word {pos}", err=True)).strip().lower()
        if not secrets.compare_digest(typed, listed[pos - 1]):
            raise MnemonicInvalid(f"word {pos} does not match; nothing was written. Start again with a new key")


def _write_keystore(
    name: str, out: Path, words: str, bip39_passphrase: str, passphrase_file: Path | None, state: Path, action: str
) -> None:
    secret = keystore_passphrase(passphrase_file, confirm=True)
    data = create_keystore(name, words, secret, bip39_passphrase=bip39_passphrase)
    out.write_bytes(data)
    out.chmod(0o600)
    card = load_keystore(data).card
    policystate.record(state, action, name, card.fingerprint, "written")
    _show_card(card.to_dict())


@key.command("show")
@click.argument("keystore", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def key_show(keystore: Path) -> None:
    """Print the key's public card (no passphrase needed)."""
    _show_card(load_keystore(read_file(keystore)).card.to_dict())


@key.command("card")
@click.argument("keystore", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
def key_card(keystore: Path, out: Path) -> None:
    """Write the public owner card for the daemon and the other operators."""
    out.write_bytes(owner_card_bytes(load_keystore(read_file(keystore)).card))
    click.echo(f"wrote {out}")


def _show_card(card: dict[str, str]) -> None:
    click.echo(f"\nname           {card['name']}")
    click.echo(f"fingerprint    {card['fingerprint']}")
    click.echo(f"owner address  {card['owner_address']}")
    click.echo(f"approval key   {card['approval_key']}")
