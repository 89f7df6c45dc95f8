"""`custody webhooks …`: send a signed test event, and see each URL's deliveries."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click

from custody.cli.common import (
    config_option,
    daemon_passphrase,
    echo_json,
    json_option,
    open_store,
    passphrase_option,
)
from custody.clock import SystemClock
from custody.config import load_settings
from custody.keys import load_identity


@click.group()
def webhooks() -> None:
    """Webhook deliveries (the URLs are in custody.toml, [webhooks] urls)."""


@webhooks.command("test")
@click.argument("url")
@config_option
@passphrase_option
def webhooks_test(url: str, config_path: Path, passphrase_file: Path | None) -> None:
    """Send one signed test event to URL and print the receiver's answer; exit 1 unless it answers 2xx (a URL
    that cannot be reached is one line on stderr, with the reason). Asks for the daemon's passphrase: the event
    is signed with its identity key."""
    from custody.ops.webhooks import send_test

    settings = load_settings(config_path)
    key = load_identity(settings.data_dir, daemon_passphrase(passphrase_file))
    answer = send_test(key, url, SystemClock().now())
    if answer.status is None:
        click.echo(f"{url} could not be reached: {answer.error}", err=True)
        sys.exit(1)
    click.echo(f"{url} answered HTTP {answer.status}")
    if not 200 <= answer.status < 300:
        sys.exit(1)


@webhooks.command("status")
@json_option
@config_option
def webhooks_status(as_json: bool, config_path: Path) -> None:
    """Each configured URL: events still to deliver, failures in a row, the last error."""
    from custody.ops.webhooks import endpoint_status

    settings, store = open_store(config_path)
    shown = endpoint_status(store, settings.webhook_urls)
    if as_json:
        echo_json([asdict(ep) for ep in shown])
        return
    for ep in shown:
        detail = f"{ep.attempts} failures in a row; {ep.last_error or 'ok'}" if ep.started else "not started yet"
        click.echo(f"{ep.url}: {ep.waiting} waiting, {detail}")
