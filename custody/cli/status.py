"""`custody status` and `custody freeze`: the state of the installation at a glance, and the emergency stop."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from custody.cli.common import config_option, open_store
from custody.clock import SystemClock
from custody.ledger.freeze import freeze_now
from custody.ops.status import gather, render


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of lines.")
@config_option
def status(as_json: bool, config_path: Path) -> None:
    """At a glance: frozen or not, the policy version, withdrawals by state, balances and hot share, and the
    batches waiting for signatures with who is missing."""
    _, store = open_store(config_path)
    current = gather(store)
    if as_json:
        click.echo(json.dumps(asdict(current), sort_keys=True))
    else:
        for line in render(current):
            click.echo(line)


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
