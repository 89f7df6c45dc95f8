"""What the `custody` command groups share, declared once: the --config and --passphrase-file options, the
daemon's passphrase, opening the store, the node, and the hot worker."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from custody.clock import SystemClock
from custody.config import Settings, load_settings
from custody.errors import ConfigError
from custody.store.db import Store
from signer.cliutil import passphrase

if TYPE_CHECKING:
    from custody.chain.bitcoin import BitcoinNode
    from custody.chain.ethereum import EthereumNode
    from custody.loops.worker import Worker

PASS_ENV = "CUSTODY_PASSPHRASE"  # noqa: S105 (the name of a variable, not a secret)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=lambda: os.environ.get("CUSTODY_CONFIG", "custody.toml"),
    show_default="custody.toml or $CUSTODY_CONFIG",
)
# Listing commands print lines for people; with --json, one JSON document with the same facts for scripts.
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON document instead of lines.")


def echo_json(doc: object) -> None:
    click.echo(json.dumps(doc, sort_keys=True))


# Where the daemon's passphrase comes from (see ``daemon_passphrase``): this file, else $CUSTODY_PASSPHRASE,
# else a prompt.
passphrase_option = click.option(
    "--passphrase-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None
)


def daemon_passphrase(passphrase_file: Path | None, *, confirm: bool = False) -> str:
    """The passphrase of the daemon's sealed keys: the first line of ``passphrase_file``, else
    $CUSTODY_PASSPHRASE, else a hidden prompt (typed twice with ``confirm``)."""
    return passphrase(passphrase_file, PASS_ENV, "Passphrase for the daemon's keys", confirm=confirm)


def open_store(config_path: Path) -> tuple[Settings, Store]:
    """The settings and a store whose connections close when the command ends."""
    settings = load_settings(config_path)
    store = Store(settings.database_url, timeouts=settings.database_timeouts)
    click.get_current_context().call_on_close(store.dispose)
    return settings, store


def node_for(settings: Settings, need: str) -> EthereumNode:
    """The configured Ethereum node; ``need`` says, when none is configured, what the command needs it for."""
    from custody.chain.ethereum import EthereumNode

    if not settings.rpc_url:
        raise ConfigError(f"[chain] rpc_url is empty: {need}")
    return EthereumNode(settings.rpc_url, settings.chain_id)


def bitcoin_node(settings: Settings) -> BitcoinNode:
    """The configured bitcoind (``[bitcoin]``), without a wallet."""
    from custody.chain.bitcoin import BitcoinNode

    if not settings.bitcoin.rpc_url:
        raise ConfigError("[bitcoin] rpc_url is empty: the Bitcoin cold wallet needs a node")
    user, password = settings.bitcoin.login()
    return BitcoinNode(settings.bitcoin.rpc_url, user, password)


def hot_worker(settings: Settings, store: Store, passphrase_file: Path | None, *, secret: str | None = None) -> Worker:
    """The hot wallet's worker: it pays hot withdrawals, executes cold batches and creates the Safe. The
    passphrase comes from ``secret`` when the caller has already asked for it."""
    from custody.cold.btcexecution import BtcFollower
    from custody.hot.btcfollow import BtcHot
    from custody.hot.btcpayer import BtcHotSettings
    from custody.keys import load_hot_account, load_hot_bitcoin_accounts
    from custody.loops.worker import Worker, WorkerSettings

    node = node_for(settings, "there is no node to send through")
    secret = daemon_passphrase(passphrase_file) if secret is None else secret
    account = load_hot_account(settings.data_dir, secret)
    btc = settings.bitcoin
    # The hot wallet's Bitcoin account pays queued hot Bitcoin withdrawals (only where a node is configured).
    bitcoin_hot = (
        BtcHot(
            store,
            bitcoin_node(settings),
            load_hot_bitcoin_accounts(settings.data_dir, secret),
            BtcHotSettings(btc.confirmations, btc.hot_stuck_after, btc.fallback_fee_rate),
            SystemClock(),
        )
        if btc.rpc_url
        else None
    )
    return Worker(
        store,
        node,
        account,
        WorkerSettings(
            settings.chain_id,
            settings.confirmations,
            settings.max_fee_per_gas,
            settings.stuck_after_seconds,
            settings.settled_watch_blocks,
        ),
        SystemClock(),
        # Bitcoin cold batches: expiry, sending, confirmations, reorgs (only where a node is configured)
        bitcoin=BtcFollower(
            store,
            bitcoin_node(settings),
            settings.bitcoin.confirmations,
            SystemClock(),
            stuck_after=settings.bitcoin.stuck_after,
        )
        if settings.bitcoin.rpc_url
        else None,
        bitcoin_hot=bitcoin_hot,
    )
