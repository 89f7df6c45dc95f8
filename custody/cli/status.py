"""`custody status` and `custody freeze`: the state of the installation at a glance, and the emergency stop."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click
from sqlalchemy import select

from custody.cli.common import config_option, open_store
from custody.clock import SystemClock
from custody.ledger.freeze import freeze_now
from custody.ops.status import gather, render
from custody.store.db import Store
from custody.store.models import HotWallet


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of lines.")
@config_option
def status(as_json: bool, config_path: Path) -> None:
    """At a glance: the hot wallet's address, frozen or not, the policy version, withdrawals by state,
    balances and hot share, and the batches waiting for signatures with who is missing."""
    _, store = open_store(config_path)
    current = gather(store)
    hot = hot_wallets(store)
    if as_json:
        click.echo(json.dumps({**asdict(current), "hot_wallets": hot}, sort_keys=True))
        return
    for address in hot:
        click.echo(f"hot wallet {address}")
    if not hot:
        click.echo("hot wallet not registered yet: `custody worker` registers it when it starts")
    for line in render(current):
        click.echo(line)


def hot_wallets(store: Store) -> list[str]:
    """The hot wallets' addresses (the one to fund), as the worker registered them."""
    with store.read() as s:
        return list(s.execute(select(HotWallet.address).order_by(HotWallet.address)).scalars())


@click.command("freeze")
@click.option("--reason", required=True, help="Why: it is recorded in the audit log and shown by status.")
@config_option
def freeze(reason: str, config_path: Path) -> None:
    """Stop every outgoing payment now. Intake goes on; only a quorum-signed bundle can unfreeze."""
    _, store = open_store(config_path)
    found = freeze_now(store, SystemClock().now(), reason, "operator")
    if found.made:
        click.echo(
            f'frozen: freeze {found.id}. To unfreeze, a quorum signs a policy bundle with unfreeze = "{found.id}"'
        )
    else:
        click.echo(f"already frozen since {found.frozen_at} (freeze {found.id}: {found.reason})")
