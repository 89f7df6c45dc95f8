"""`custody policy …`: propose a bundle for the admins to sign, apply one signed by a quorum, show the active one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from custody.cli.common import config_option, echo_json, json_option, open_store
from custody.clock import SystemClock
from custody.ledger import policy as policy_service
from policies.bundle import Bundle, Head
from policies.loader import policy_to_canonical
from signer.cliutil import read_file
from signer.policyview import describe_bundle


@click.group()
def policy() -> None:
    """Propose, apply and show policy bundles."""


@policy.command("propose")
@click.argument("policy_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@config_option
def policy_propose(policy_file: Path, out: Path, config_path: Path) -> None:
    """Compile POLICY_FILE into the next bundle for the admins to review and sign."""
    _, store = open_store(config_path)
    bundle = policy_service.propose(store, policy_file.read_text(encoding="utf-8"), SystemClock().now())
    out.write_bytes(bundle.raw)
    click.echo(f"bundle version {bundle.version}, hash {bundle.hash}; wrote {out}")


@policy.command("apply")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("signatures", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@config_option
def policy_apply(bundle: Path, signatures: tuple[Path, ...], config_path: Path) -> None:
    """Apply a bundle signed by a quorum of the current admins."""
    _, store = open_store(config_path)
    applied = policy_service.apply(store, read_file(bundle), [read_file(p) for p in signatures], SystemClock().now())
    click.echo(f"applied policy version {applied.version}, hash {applied.hash}")


@policy.command("show")
@json_option
@config_option
def policy_show(as_json: bool, config_path: Path) -> None:
    """Print the active policy and its hash."""
    _, store = open_store(config_path)
    head, bundle = policy_service.current(store)
    if as_json:
        echo_json(policy_document(head, bundle))
        return
    if bundle is None:
        click.echo(f"no policy applied yet; genesis {head.hash}, quorum {head.governance.quorum}")
        return
    for line in describe_bundle(bundle, None):
        click.echo(line)


def policy_document(head: Head, bundle: Bundle | None) -> dict[str, Any]:
    """`policy show --json`: the active bundle's version, hash and whole policy (its canonical form, as the
    bundle carries it); before the first bundle, the genesis hash and quorum with ``policy`` null."""
    if bundle is None:
        return {"version": 0, "hash": head.hash, "quorum": head.governance.quorum, "policy": None}
    return {
        "version": bundle.version,
        "hash": bundle.hash,
        "previous_hash": bundle.previous_hash,
        "created_at": bundle.created_at,
        "policy": policy_to_canonical(bundle.policy),
    }
