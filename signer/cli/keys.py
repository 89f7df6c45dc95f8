"""`signer key …`: make an operator's key (24 words on paper, a sealed keystore), back it up as SLIP-39 shares,
restore or recover it, and show its public card."""

from __future__ import annotations

import re
import secrets
import sys
from pathlib import Path

import click

from signer import policystate
from signer.cli.common import keystore_passphrase, passphrase_option, state_dir, state_option
from signer.cliutil import read_file
from signer.errors import MnemonicInvalid, SignerError
from signer.keystore import (
    KeyCard,
    check_mnemonic,
    create_keystore,
    load_keystore,
    mnemonic_from_entropy,
    new_mnemonic,
    owner_card_bytes,
    recover_entropy,
    unlock,
    with_bitcoin_keys,
)
from signer.policystate import write_atomic

WORD_COUNTS = (12, 15, 18, 21, 24)
CHECK_TRIES = 3  # per word asked back in `key new`
_NUMBERED = re.compile(r"(\d+)[.):]?(\D*)")


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
@click.option(
    "--words",
    "count",
    type=click.Choice([str(n) for n in WORD_COUNTS]),
    default=None,
    help="How many words the mnemonic has (default: 24, or all the words of a first line that holds a whole one).",
)
@click.option("--bip39-passphrase", "ask_bip39", is_flag=True, help="Ask for the optional BIP-39 passphrase.")
@passphrase_option
@state_option
def key_restore(
    name: str, out: Path, count: str | None, ask_bip39: bool, passphrase_file: Path | None, state: Path | None
) -> None:
    """Rebuild a keystore from its BIP-39 mnemonic, read from standard input: all the words on one line, or
    one or more per line, numbered as `key new` prints them ("7. word") or not. On a terminal it asks for
    them without showing what is typed."""
    _refuse_existing(out)
    words = check_mnemonic(_read_mnemonic(int(count) if count else None))
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
    """Ask for three of the words back, so a miswritten paper is found now, not on the day it is needed. A
    mistyped answer may be typed again (CHECK_TRIES in all per word); the words are never shown again, and
    neither an answer nor a word is ever put in a message."""
    listed = words.split()
    positions = sorted(secrets.SystemRandom().sample(range(1, len(listed) + 1), 3))
    click.echo("\nTo check your paper, type the words it says at these positions.")
    try:
        for pos in positions:
            _check_word(pos, listed[pos - 1])
    except click.Abort:
        raise MnemonicInvalid("the check of the paper was not finished; nothing was written") from None


def _check_word(pos: int, word: str) -> None:
    for tries_left in range(CHECK_TRIES - 1, -1, -1):
        typed = str(click.prompt(f"word {pos}", err=True, default="", show_default=False)).strip().lower()
        # bytes: compare_digest refuses non-ASCII str, and an operator may type anything
        if secrets.compare_digest(typed.encode(), word.encode()):
            return
        if tries_left:
            click.echo(
                f"word {pos} does not match; check the paper and type it again "
                f"({tries_left} {'tries' if tries_left > 1 else 'try'} left)",
                err=True,
            )
    raise MnemonicInvalid(
        f"word {pos} does not match after {CHECK_TRIES} tries; nothing was written. "
        "Start again with a new key and a new paper"
    )


def _read_mnemonic(count: int | None) -> str:
    """The mnemonic's words from standard input, until ``count`` (else 24) words or the end of input; when no
    ``count`` was given, a first line that holds a whole mnemonic (12, 15, 18, 21 or 24 words) is all of it,
    so a BIP-39 passphrase may follow on the next line as before."""
    target = count or 24
    terminal = sys.stdin.isatty()
    if terminal:
        click.echo(
            f"Type the {target} words of the mnemonic, one or several per line; nothing is shown as you type."
            + ("" if count else " (For another length, give --words, or type all the words on one line.)"),
            err=True,
        )
    words: list[str] = []
    while len(words) < target:
        if terminal:
            prompt = f"word {len(words) + 1} of {target}"
            line = str(click.prompt(prompt, hide_input=True, default="", show_default=False, err=True))
        else:
            line = sys.stdin.readline()
            if not line:
                break
        first_line = not words
        words += _line_words(line, len(words))
        if first_line and count is None and len(words) in WORD_COUNTS:
            break
    if len(words) != target and (count is not None or len(words) not in WORD_COUNTS):
        raise MnemonicInvalid(
            f"wrong number of words: {len(words)} read, {target} expected"
            + ("" if count else " (give --words for a mnemonic of 12, 15, 18 or 21 words on several lines)")
        )
    return " ".join(words)


def _line_words(line: str, before: int) -> list[str]:
    """The words of one typed line, with the numbering `key new` prints ("  7. word", also "7)", "7:" or a
    bare "7") taken off. ``before`` is how many words came on earlier lines: a number must be the position of
    the word after it, so a skipped or repeated line is named rather than silently shifting every word."""
    words: list[str] = []
    for token in line.lower().split():
        numbered = _NUMBERED.fullmatch(token)
        if numbered is None:
            words.append(token)
            continue
        position = before + len(words) + 1
        if int(numbered[1]) != position:
            raise MnemonicInvalid(
                f"the number {int(numbered[1])} is where word {position} belongs: a word is missing or repeated"
            )
        if numbered[2]:
            words.append(numbered[2])
    return words


def _write_keystore(
    name: str, out: Path, words: str, bip39_passphrase: str, passphrase_file: Path | None, state: Path, action: str
) -> None:
    secret = keystore_passphrase(passphrase_file, confirm=True)
    data = create_keystore(name, words, secret, bip39_passphrase=bip39_passphrase)
    out.write_bytes(data)
    out.chmod(0o600)
    card = load_keystore(data).card
    policystate.record(state, action, name, card.fingerprint, "written")
    _show_card(card)


@key.command("show")
@click.argument("keystore", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def key_show(keystore: Path) -> None:
    """Print the key's public card (no passphrase needed), with its Bitcoin account keys (fingerprint, path,
    xpub) when the keystore has them."""
    _show_card(load_keystore(read_file(keystore)).card)


@key.command("card")
@click.argument("keystore", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--add-bitcoin",
    is_flag=True,
    help="For a keystore made before Bitcoin support (its card has no Bitcoin keys): ask for the keystore's "
    "passphrase, derive the BIP-48 multisig account keys (xpub for mainnet, tpub for the test networks) from its "
    "seed, add them to the keystore's card (the sealed seed is kept as it is), then write the card.",
)
@passphrase_option
@state_option
def key_card(keystore: Path, out: Path, add_bitcoin: bool, passphrase_file: Path | None, state: Path | None) -> None:
    """Write the public owner card for the daemon and the other operators (no passphrase needed, except with
    --add-bitcoin)."""
    data = read_file(keystore)
    card = load_keystore(data).card
    if add_bitcoin and card.bitcoin_xpub is None:
        data = with_bitcoin_keys(data, keystore_passphrase(passphrase_file))
        write_atomic(keystore, data)
        keystore.chmod(0o600)
        card = load_keystore(data).card
        policystate.record(state_dir(state), "key-add-bitcoin", card.name, card.fingerprint, "written")
    elif card.bitcoin_xpub is None:
        click.echo(
            "note: this keystore predates Bitcoin support, so the card has no Bitcoin keys; run "
            "`signer key card KEYSTORE --out FILE --add-bitcoin` to add them (it asks for the passphrase)",
            err=True,
        )
    out.write_bytes(owner_card_bytes(card))
    click.echo(f"wrote {out}")


def _show_card(card: KeyCard) -> None:
    click.echo(f"\nname           {card.name}")
    click.echo(f"fingerprint    {card.fingerprint}")
    click.echo(f"owner address  {card.owner_address}")
    click.echo(f"approval key   {card.approval_key}")
    for network in ("mainnet", "testnet"):
        btc = card.bitcoin_key(network)
        if btc is None:
            click.echo("bitcoin        none (a keystore made before Bitcoin: `signer key card --add-bitcoin`)")
            return
        which = "mainnet" if network == "mainnet" else "testnet, signet, regtest"
        click.echo(f"bitcoin        {which}: fingerprint {btc.fingerprint}, path {btc.path}")
        click.echo(f"               {btc.xpub}")
