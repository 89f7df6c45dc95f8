"""`signer`: the air-gapped operator's tool. Each command is a thin wrapper over named, tested steps."""

from __future__ import annotations

import json
from pathlib import Path

import click

from policies.bundle import Bundle, check_not_rollback, parse_bundle, parse_signature, sign_bundle
from policies.canonical import canonical_bytes
from policies.errors import RollbackError
from signer import policystate
from signer.cliutil import Group, passphrase, read_file
from signer.errors import SignerError
from signer.keystore import create_keystore, load_keystore, new_mnemonic, seed_from_mnemonic, unlock
from signer.policyview import describe_bundle

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


def _state(state: Path | None) -> Path:
    return state or policystate.default_state_dir()


@click.group(cls=Group)
def main() -> None:
    """Air-gapped signer for custody: keys, policy approvals and (later) batch signing."""


@main.group(cls=Group)
def key() -> None:
    """Create and inspect operator keys."""


@key.command("new")
@click.option("--name", required=True, help="A name for this key, such as the operator's.")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dice", default="", help="Dice rolls (or any text) mixed into the OS's randomness.")
@pass_file_option
def key_new(name: str, out: Path, dice: str, passphrase_file: Path | None) -> None:
    """Make a 24-word key, show the words once for the paper backup, and write the sealed keystore."""
    if out.exists():
        raise SignerError(f"{out} exists; refusing to overwrite a keystore")
    words = new_mnemonic(dice.encode())
    secret = passphrase(passphrase_file, PASS_ENV, "Keystore passphrase", confirm=True)
    data = create_keystore(name, seed_from_mnemonic(words), secret)
    out.write_bytes(data)
    out.chmod(0o600)
    click.echo("Write these 24 words on paper, in order. They are shown only now:\n")
    for i, word in enumerate(words.split(), 1):
        click.echo(f"  {i:2d}. {word}")
    _show_card(load_keystore(data).card.to_dict())


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
    card = load_keystore(read_file(keystore)).card.to_dict()
    out.write_bytes(canonical_bytes({"kind": "custody-owner-card", "format": 1, **card}))
    click.echo(f"wrote {out}")


def _show_card(card: dict[str, str]) -> None:
    click.echo(f"\nname           {card['name']}")
    click.echo(f"fingerprint    {card['fingerprint']}")
    click.echo(f"owner address  {card['owner_address']}")
    click.echo(f"approval key   {card['approval_key']}")


@main.group(cls=Group)
def policy() -> None:
    """Review and approve policy bundles."""


@policy.command("pin")
@click.argument("genesis", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@state_option
def policy_pin(genesis: Path, state: Path | None) -> None:
    """Pin the genesis admin set written by `custody init`, once."""
    head = policystate.pin_genesis(_state(state), read_file(genesis))
    click.echo(f"pinned genesis {head.hash}: quorum {head.governance.quorum} of {len(head.governance.admins)}")


@policy.command("review")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@state_option
def policy_review(bundle: Path, state: Path | None) -> None:
    """Show a bundle and what it changes against the newest bundle this signer has verified."""
    for line in _review(read_file(bundle), _state(state))[1]:
        click.echo(line)


def _review(raw: bytes, state: Path) -> tuple[Bundle, list[str]]:
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
    return parsed, describe_bundle(parsed, current.policy if current else None)


@policy.command("sign")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--keystore", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--yes", is_flag=True, help="Skip the typed confirmation (automation only).")
@pass_file_option
@state_option
def policy_sign(
    bundle: Path, keystore: Path, out: Path, yes: bool, passphrase_file: Path | None, state: Path | None
) -> None:
    """Review the bundle, confirm, and write this admin's signature file."""
    st = _state(state)
    parsed, lines = _review(read_file(bundle), st)
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
    click.echo(f"signed bundle {digest} as {ks.card.name}; wrote {out}")


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
