"""`custody dev …`: what a development chain lacks and a real network has. Never needed in production."""

from __future__ import annotations

from urllib.parse import urlsplit

import click
import httpx

from custody.chain.devnode import Anvil, deploy_safe_contracts
from custody.errors import ConfigError, NodeUnavailable

LOCAL_HOSTS = ("127.0.0.1", "localhost")


@click.group()
def dev() -> None:
    """Development-chain helpers (anvil on this machine only)."""


@dev.command("safe-contracts")
@click.option(
    "--rpc",
    default="http://127.0.0.1:8545",
    show_default=True,
    help="The anvil node, on this machine.",
)
def safe_contracts(rpc: str) -> None:
    """Put the canonical Safe 1.4.1 contracts on a fresh anvil, at the addresses they have on every public chain
    (through the Safe singleton factory, as there), and print them. Idempotent. On a real network they are there
    already, and this command refuses anything but an anvil node on this machine."""
    parts = urlsplit(rpc)
    if parts.scheme != "http" or parts.hostname not in LOCAL_HOSTS or parts.port is None:
        raise ConfigError(f"--rpc must be http://127.0.0.1:<port> (an anvil node on this machine), not {rpc!r}")
    anvil = Anvil(port=parts.port)
    try:
        client = str(anvil.rpc("web3_clientVersion"))
    except httpx.TransportError as exc:
        raise NodeUnavailable(f"no node answers at {rpc} ({type(exc).__name__}): start anvil first") from None
    if not client.lower().startswith("anvil"):
        raise ConfigError(f"{rpc} is {client!r}, not anvil: this is for a development chain only")
    for role, address in deploy_safe_contracts(anvil).items():
        click.echo(f"{role:<17} {address}")
