"""`signer policy …`: pin the genesis admin set, review and sign policy bundles, accept quorum-signed ones.

A bundle is reviewed (``review_bundle``) against the newest one this signer has verified: it must follow that
one by the same rules the daemon applies it by, and signing refuses one that is not fresh by this computer's
clock or that could never be applied.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import click

from policies.bundle import (
    Bundle,
    check_activations,
    check_created_at,
    check_decimals,
    check_not_rollback,
    check_sequence,
    parse_bundle,
    parse_genesis,
    parse_signature,
    sign_bundle,
)
from policies.errors import BundleError, RollbackError
from policies.loader import format_period
from policies.text import escape, when
from signer import policystate
from signer.cli.common import confirm_pin, keystore_passphrase, signing_options, state_dir, state_option, yes_option
from signer.cliutil import read_file
from signer.errors import SignerError
from signer.keystore import load_keystore, unlock
from signer.policyview import describe_bundle


@click.group()
def policy() -> None:
    """Review and approve policy bundles."""


@policy.command("pin")
@click.argument("genesis", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@yes_option
@state_option
def policy_pin(genesis: Path, yes: bool, state: Path | None) -> None:
    """Pin the genesis admin set written by `custody init`, once, after comparing its hash out of band."""
    st = state_dir(state)
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
    confirm_pin(st, "policy-pin", "genesis", head.hash, yes)
    policystate.pin_genesis(st, raw)
    policystate.record(st, "policy-pin", "genesis", head.hash, "pinned")
    click.echo(f"pinned genesis {head.hash}: quorum {head.governance.quorum} of {len(head.governance.admins)}")


@policy.command("review")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@state_option
def policy_review(bundle: Path, state: Path | None) -> None:
    """Show a bundle and what it changes, field by field, against the newest bundle this signer has verified."""
    for line in review_bundle(read_file(bundle), state_dir(state), int(time.time()), signing=False)[1]:
        click.echo(line)


def review_bundle(raw: bytes, state: Path, now: int, *, signing: bool) -> tuple[Bundle, list[str]]:
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
    check_sequence(head, parsed)  # the daemon's order rule; the signatures it also checks do not exist yet
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
    st = state_dir(state)
    parsed, lines = review_bundle(read_file(bundle), st, int(time.time()), signing=True)
    for line in lines:
        click.echo(line)
    digest = parsed.hash
    if not yes:
        typed = click.prompt("\nType the first 8 characters of the bundle hash to sign it")
        if typed.strip().lower() != digest[:8]:
            policystate.record(st, "policy-sign", f"bundle v{parsed.version}", digest, "declined")
            raise SignerError("confirmation did not match; nothing was signed")
    ks = load_keystore(read_file(keystore))
    unlocked = unlock(ks, keystore_passphrase(passphrase_file))
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
    st = state_dir(state)
    parsed = parse_bundle(read_file(bundle))
    signers = policystate.accept(st, parsed, [parse_signature(read_file(s)) for s in signatures])
    policystate.record(st, "policy-accept", f"bundle v{parsed.version}", parsed.hash, "accepted")
    click.echo(json.dumps({"accepted": parsed.version, "hash": parsed.hash, "signers": list(signers)}))
