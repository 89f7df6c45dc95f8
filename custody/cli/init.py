"""`custody init`: a new data directory with its config, database, sealed daemon keys and genesis admin set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from custody.cli.common import daemon_passphrase, passphrase_option
from custody.clock import SystemClock
from custody.config import default_database_url, render_config
from custody.errors import DataDirExists
from custody.keys import create_daemon_keys
from custody.ledger import policy as policy_service
from custody.store.db import Store
from policies.bundle import parse_genesis
from policies.loader import Reader
from policies.model import Governance
from signer.cliutil import read_file
from signer.keystore import parse_owner_card


@click.command()
@click.option("--data-dir", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--admin", "admins", multiple=True, metavar="NAME:HEXKEY", help="A genesis admin's Ed25519 key.")
@click.option(
    "--admin-card",
    "cards",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A genesis admin's owner card from `signer key card`.",
)
@click.option("--quorum", required=True, type=int, help="Admin signatures needed for a policy bundle.")
@click.option("--activation-delay", default="24h", show_default=True, help="Minimum whitelist activation delay.")
@click.option("--database-url", default=None, help="Default: $CUSTODY_DATABASE_URL, else SQLite in the data dir.")
@click.option("--rpc-url", default="", help="The Ethereum node's JSON-RPC URL (can be set later in custody.toml).")
@click.option("--chain-id", default=31337, show_default=True, type=int)
@passphrase_option
def init(
    data_dir: Path,
    admins: tuple[str, ...],
    cards: tuple[Path, ...],
    quorum: int,
    activation_delay: str,
    database_url: str | None,
    rpc_url: str,
    chain_id: int,
    passphrase_file: Path | None,
) -> None:
    """Create a data directory: config, database, sealed daemon keys and the genesis admin set."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise DataDirExists(f"{data_dir} exists and is not empty; refusing to overwrite it")
    governance = _governance(admins, cards, quorum, activation_delay)
    secret = daemon_passphrase(passphrase_file, confirm=True)
    data_dir = data_dir.resolve()
    url = database_url or os.environ.get("CUSTODY_DATABASE_URL") or default_database_url(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        (data_dir / "custody.toml").write_text(render_config(data_dir, url, rpc_url=rpc_url, chain_id=chain_id))
        public, hot_address = create_daemon_keys(data_dir, secret)
        store = Store(url)
        store.migrate()
        raw = policy_service.record_genesis(store, governance, SystemClock().now())
        store.dispose()
        head = parse_genesis(raw)
        (data_dir / "genesis.json").write_bytes(raw)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)  # nothing half-made is left behind
        raise
    click.echo(f"initialised {data_dir}")
    click.echo(f"  config        {data_dir / 'custody.toml'}")
    click.echo(f"  daemon key    {public}")
    click.echo(f"  hot wallet    {hot_address}")
    click.echo(
        f"  genesis       {head.hash} (quorum {quorum} of {len(governance.admins)}); "
        f"signers pin {data_dir / 'genesis.json'}"
    )


def _governance(admins: tuple[str, ...], cards: tuple[Path, ...], quorum: int, delay: str) -> Governance:
    """The genesis admin set from --admin NAME:HEXKEY and --admin-card files, checked as a policy file's."""
    entries = []
    for spec in admins:
        name, _, key = spec.partition(":")
        entries.append({"name": name, "key": key.lower()})
    for card in cards:
        owner = parse_owner_card(read_file(card))
        entries.append({"name": owner.name, "key": owner.approval_key})
    return Reader(human=True).governance({"quorum": quorum, "admins": entries, "activation_delay": delay})
