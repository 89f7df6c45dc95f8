"""`signer`: the air-gapped operator's tool. Each command is a thin wrapper over named, tested steps."""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from policies.bundle import (
    Bundle,
    check_activations,
    check_created_at,
    check_decimals,
    check_not_rollback,
    parse_bundle,
    parse_genesis,
    parse_signature,
    sign_bundle,
)
from policies.errors import BundleError, RollbackError
from policies.loader import format_period
from policies.text import escape, when
from signer import coldwallet, ledger, policystate
from signer.batchfile import Batch, OwnerSignature
from signer.cliutil import Group, passphrase, read_file
from signer.errors import ConfirmationDeclined, MnemonicInvalid, SignerError
from signer.keystore import (
    Keystore,
    check_mnemonic,
    create_keystore,
    load_keystore,
    mnemonic_from_entropy,
    new_mnemonic,
    owner_card_bytes,
    recover_entropy,
    unlock,
)
from signer.policyview import describe_bundle
from signer.porstatement import Signed, check_pinned_safe, check_policy, parse_statement, safe_digest, signature_file
from signer.porstatement import describe as describe_statement
from signer.review import describe, review
from signer.safetx import sign_hash

F = TypeVar("F", bound=Callable[..., Any])
PASS_ENV = "SIGNER_PASSPHRASE"  # noqa: S105 (the name of a variable, not a secret)
state_option = click.option(
    "--state",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The signer's state directory (default $SIGNER_HOME or ~/.custody-signer).",
)
pass_file_option = click.option(
    "--passphrase-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None
)


def signing_options(command: F) -> F:
    """What every signing command takes: the keystore, where the signature goes, --yes, the passphrase file
    and the state directory."""
    for option in reversed(
        (
            click.option("--keystore", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True)),
            click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False)),
            click.option("--yes", is_flag=True, help="Skip the typed confirmation (automation only)."),
            pass_file_option,
            state_option,
        )
    ):
        command = option(command)
    return command


def _state(state: Path | None) -> Path:
    return state or policystate.default_state_dir()


@click.group(cls=Group)
def main() -> None:
    """Air-gapped signer for custody: keys, policy approvals, cold wallet batches."""


@main.group(cls=Group)
def key() -> None:
    """Create and inspect operator keys."""


@key.command("new")
@click.option("--name", required=True, help="A name for this key, such as the operator's.")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dice", default="", help="Dice rolls (or any text) mixed into the OS's randomness.")
@click.option("--no-confirm", is_flag=True, help="Do not ask for words back (automation and tests only).")
@pass_file_option
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
    _write_keystore(name, out, words, "", passphrase_file, _state(state), "key-new")


@key.command("restore")
@click.option("--name", required=True)
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--bip39-passphrase", "ask_bip39", is_flag=True, help="Ask for the optional BIP-39 passphrase.")
@pass_file_option
@state_option
def key_restore(name: str, out: Path, ask_bip39: bool, passphrase_file: Path | None, state: Path | None) -> None:
    """Rebuild a keystore from its BIP-39 mnemonic, read from standard input."""
    _refuse_existing(out)
    words = check_mnemonic(sys.stdin.readline())
    extra = str(click.prompt("BIP-39 passphrase", hide_input=True, err=True)) if ask_bip39 else ""
    _write_keystore(name, out, words, extra, passphrase_file, _state(state), "key-restore")


@key.command("backup")
@click.argument("keystore", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--shares", required=True, type=int, help="How many SLIP-39 shares to make.")
@click.option("--threshold", required=True, type=int, help="How many shares recover the key.")
@pass_file_option
@state_option
def key_backup(keystore: Path, shares: int, threshold: int, passphrase_file: Path | None, state: Path | None) -> None:
    """Split the key into SLIP-39 shares: any THRESHOLD of them give it back. Each goes on its own paper."""
    ks = load_keystore(read_file(keystore))
    unlocked = unlock(ks, passphrase(passphrase_file, PASS_ENV, "Keystore passphrase"))
    parts = unlocked.backup_shares(threshold, shares)
    click.echo(f"{shares} SLIP-39 shares of key {ks.card.name} ({ks.card.fingerprint}); any {threshold} recover it.")
    click.echo("Write each on its own paper and keep them in different places. They are shown only now.")
    for i, share in enumerate(parts, 1):
        click.echo(f"\nshare {i} of {shares}:\n  {share}")
    click.echo("\nA BIP-39 passphrase, if the key has one, is not in the shares: keep it separately.")
    policystate.record(_state(state), "key-backup", ks.card.name, ks.card.fingerprint, f"{threshold}-of-{shares}")


@key.command("recover")
@click.option("--name", required=True)
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--bip39-passphrase", "ask_bip39", is_flag=True, help="Ask for the optional BIP-39 passphrase.")
@pass_file_option
@state_option
def key_recover(name: str, out: Path, ask_bip39: bool, passphrase_file: Path | None, state: Path | None) -> None:
    """Rebuild a keystore from SLIP-39 shares, one per line on standard input."""
    _refuse_existing(out)
    shares = [line for line in sys.stdin.read().splitlines() if line.strip()]
    entropy = recover_entropy(shares)
    words = mnemonic_from_entropy(entropy)
    extra = str(click.prompt("BIP-39 passphrase", hide_input=True, err=True)) if ask_bip39 else ""
    _write_keystore(name, out, words, extra, passphrase_file, _state(state), "key-recover")


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
    secret = passphrase(passphrase_file, PASS_ENV, "Keystore passphrase", confirm=True)
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


@main.group(cls=Group)
def policy() -> None:
    """Review and approve policy bundles."""


yes_option = click.option("--yes", is_flag=True, help="Skip the typed confirmation (automation only).")


def _confirm_pin(st: Path, action: str, subject: str, digest: str, yes: bool) -> None:
    """A pin is a ceremony step: the operator compares the file's hash with the other operators' out of band
    and types its first 8 hex digits; declining is recorded like pinning."""
    if yes:
        return
    typed = click.prompt(
        "\nCompare this file hash with the other operators' now, then type its first 8 hex digits to pin it"
    )
    if str(typed).strip().lower() != digest[:8]:
        policystate.record(st, action, subject, digest, "declined")
        raise ConfirmationDeclined("confirmation did not match; nothing was pinned")


@policy.command("pin")
@click.argument("genesis", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@yes_option
@state_option
def policy_pin(genesis: Path, yes: bool, state: Path | None) -> None:
    """Pin the genesis admin set written by `custody init`, once, after comparing its hash out of band."""
    st = _state(state)
    raw = read_file(genesis)
    head = parse_genesis(raw)
    click.echo(f"genesis file hash  {head.hash}")
    click.echo(f"created            {when(head.created_at)}")
    click.echo(
        f"admins             quorum {head.governance.quorum} of {len(head.governance.admins)}, "
        f"activation delay {format_period(head.governance.activation_delay)}"
    )
    for admin in head.governance.admins:
        click.echo(f"  {escape(admin.name):<16} {admin.key}")
    _confirm_pin(st, "policy-pin", "genesis", head.hash, yes)
    policystate.pin_genesis(st, raw)
    policystate.record(st, "policy-pin", "genesis", head.hash, "pinned")
    click.echo(f"pinned genesis {head.hash}: quorum {head.governance.quorum} of {len(head.governance.admins)}")


@policy.command("review")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@state_option
def policy_review(bundle: Path, state: Path | None) -> None:
    """Show a bundle and what it changes, field by field, against the newest bundle this signer has verified."""
    for line in _review(read_file(bundle), _state(state), int(time.time()), signing=False)[1]:
        click.echo(line)


def _review(raw: bytes, state: Path, now: int, *, signing: bool) -> tuple[Bundle, list[str]]:
    """Parse the bundle, check it follows the newest verified one, and describe it against that one (for
    version 1, against the genesis admin set). ``now`` is this computer's clock: signing refuses a bundle that
    is not fresh by it, or that can never be applied (early activations, changed decimals); a review shows why
    signing would refuse."""
    parsed = parse_bundle(raw)
    head, current = policystate.newest(state)
    if current is not None:
        check_not_rollback(head, parsed)
    if parsed.version <= head.version:
        raise RollbackError(f"bundle version {parsed.version} is not newer than verified version {head.version}")
    if parsed.version != head.version + 1 or parsed.previous_hash != head.hash:
        raise SignerError(
            f"bundle version {parsed.version} does not follow the newest verified version {head.version} "
            f"({head.hash[:16]}…): accept the bundles in between first"
        )
    problems: list[str] = []
    checks: list[Callable[[], None]] = [
        lambda: check_created_at(parsed.created_at, now),
        lambda: check_activations(head, parsed),
        lambda: check_decimals(head, parsed),
    ]
    for check in checks:
        try:
            check()
        except BundleError as exc:
            if signing:
                subject = f"bundle v{parsed.version}"
                policystate.record(state, "policy-sign", subject, parsed.hash, f"refused: {exc.code}")
                raise
            problems.append(f"SIGNING WILL BE REFUSED [{exc.code}]: {exc.message}")
    lines = describe_bundle(parsed, current.policy if current else head.governance, now)
    return parsed, problems + ([""] if problems else []) + lines


@policy.command("sign")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@signing_options
def policy_sign(
    bundle: Path, keystore: Path, out: Path, yes: bool, passphrase_file: Path | None, state: Path | None
) -> None:
    """Review the bundle, check it is fresh by this computer's clock, confirm, and write this admin's
    signature file."""
    st = _state(state)
    parsed, lines = _review(read_file(bundle), st, int(time.time()), signing=True)
    for line in lines:
        click.echo(line)
    digest = parsed.hash
    if not yes:
        typed = click.prompt("\nType the first 8 characters of the bundle hash to sign it")
        if typed.strip().lower() != digest[:8]:
            policystate.record(st, "policy-sign", f"bundle v{parsed.version}", digest, "declined")
            raise SignerError("confirmation did not match; nothing was signed")
    ks = load_keystore(read_file(keystore))
    unlocked = unlock(ks, passphrase(passphrase_file, PASS_ENV, "Keystore passphrase"))
    signature = sign_bundle(digest, unlocked.approval_key())
    out.write_bytes(signature.to_bytes())
    policystate.record(st, "policy-sign", f"bundle v{parsed.version}", digest, "signed")
    click.echo(f"signed bundle {digest} as {escape(ks.card.name)}; wrote {out}")


@policy.command("accept")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("signatures", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@state_option
def policy_accept(bundle: Path, signatures: tuple[Path, ...], state: Path | None) -> None:
    """Verify a quorum-signed bundle and make it this signer's newest policy."""
    st = _state(state)
    parsed = parse_bundle(read_file(bundle))
    signers = policystate.accept(st, parsed, [parse_signature(read_file(s)) for s in signatures])
    policystate.record(st, "policy-accept", f"bundle v{parsed.version}", parsed.hash, "accepted")
    click.echo(json.dumps({"accepted": parsed.version, "hash": parsed.hash, "signers": list(signers)}))


@main.group(cls=Group)
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
    st = _state(state)
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
    _confirm_pin(st, "cold-pin", parsed.safe, digest, yes)
    coldwallet.pin(st, raw)
    policystate.record(st, "cold-pin", parsed.safe, digest, "pinned")


@cold.command("show")
@state_option
def cold_show(state: Path | None) -> None:
    """Show the pinned cold wallet."""
    _show_cold(coldwallet.pinned(_state(state)))


def _show_cold(w: coldwallet.ColdWallet) -> None:
    click.echo(f"Safe          {w.safe} on chain {w.chain_id} (salt nonce {w.salt_nonce})")
    click.echo(f"threshold     {w.threshold} of {len(w.owners)}")
    for owner in w.owners:
        click.echo(f"owner         {owner}")
    click.echo(f"multisend     {w.multisend} (MultiSendCallOnly)")
    click.echo(f"daemon key    {w.daemon_key}")


def _review_batch(raw: bytes, st: Path) -> tuple[Batch, Bundle, list[str]]:
    cold_wallet = coldwallet.pinned(st)
    _, bundle = policystate.newest(st)
    if bundle is None:
        raise SignerError("this signer has verified no policy bundle yet: run `signer policy accept` first")
    now = int(time.time())
    try:
        batch = review(raw, cold_wallet, bundle, now)
        ledger.check(batch, bundle.policy, ledger.read(st), now)
    except SignerError as exc:
        policystate.record(st, "batch-review", "?", "?", f"refused: {exc.code}")
        raise
    return batch, bundle, describe(batch, bundle.policy, bundle.version)


@main.command("review")
@click.argument("batch_file", metavar="FILE", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@state_option
def review_cmd(batch_file: Path, state: Path | None) -> None:
    """Check a batch file against the pinned cold wallet and the newest verified policy, and show it."""
    st = _state(state)
    batch, _, lines = _review_batch(read_file(batch_file), st)
    for line in lines:
        click.echo(line)
    policystate.record(st, "batch-review", batch.id, "0x" + batch.safe_tx_hash.hex(), "passed")


@main.command("sign")
@click.argument("batch_file", metavar="FILE", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@signing_options
def sign_cmd(
    batch_file: Path, keystore: Path, out: Path, yes: bool, passphrase_file: Path | None, state: Path | None
) -> None:
    """Review the batch, confirm, and write this owner's signature over its SafeTx hash."""
    st = _state(state)
    batch, bundle, lines = _review_batch(read_file(batch_file), st)
    for line in lines:
        click.echo(line)
    digest = "0x" + batch.safe_tx_hash.hex()
    ks, key = _owner_key(st, keystore, yes, passphrase_file, ("batch-sign", batch.id, digest), digest[2:10])
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


def _owner_key(
    st: Path, keystore: Path, yes: bool, passphrase_file: Path | None, record: tuple[str, str, str], expected: str
) -> tuple[Keystore, bytes]:
    """A Safe owner's signing key, after checking the key owns the pinned Safe and, unless ``yes``, that the
    operator typed ``expected`` (the start of the hash being signed). ``record`` is (action, subject, hash)."""
    ks = load_keystore(read_file(keystore))
    if ks.card.owner_address not in coldwallet.pinned(st).owners:
        raise SignerError(f"this key's owner address {ks.card.owner_address} is not an owner of the pinned Safe")
    if not yes:
        typed = click.prompt(f"\nType the first {len(expected)} hex digits of the hash shown above to sign it")
        if str(typed).strip().lower().removeprefix("0x") != expected:
            policystate.record(st, *record, "declined")
            raise SignerError("confirmation did not match; nothing was signed")
    return ks, unlock(ks, passphrase(passphrase_file, PASS_ENV, "Keystore passphrase")).owner_private_key()


@main.group(cls=Group)
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
    st = _state(state)
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
    ks, key = _owner_key(st, keystore, yes, passphrase_file, subject, digest[:8])
    signature = sign_hash(key, safe_digest(statement, cold_wallet.safe))
    out.write_bytes(signature_file(statement, Signed(cold_wallet.safe, ks.card.owner_address, signature)))
    policystate.record(st, "por-sign", statement.claims["snapshot_id"], digest, "signed")
    click.echo(f"\nsigned statement {digest} for {cold_wallet.safe} as {ks.card.name}; wrote {out}")


if __name__ == "__main__":
    main()
