"""`custody policy …`: propose a bundle for the admins to sign, apply one signed by a quorum, show the active one."""

from __future__ import annotations

from pathlib import Path

import click

from custody.cli.common import config_option, open_store
from custody.clock import SystemClock
from custody.ledger import policy as policy_service
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
@config_option
def policy_show(config_path: Path) -> None:
    """Print the active policy and its hash."""
    _, store = open_store(config_path)
    head, bundle = policy_service.current(store)
    if bundle is None:
        click.echo(f"no policy applied yet; genesis {head.hash}, quorum {head.governance.quorum}")
        return
    for line in describe_bundle(bundle, None):
        click.echo(line)
