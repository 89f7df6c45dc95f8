"""What the `custody` command groups share: the config option, opening the store, the hot worker."""

from __future__ import annotations

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
    from custody.hot.worker import HotWorker

PASS_ENV = "CUSTODY_PASSPHRASE"  # noqa: S105 (the name of a variable, not a secret)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=lambda: os.environ.get("CUSTODY_CONFIG", "custody.toml"),
    show_default="custody.toml or $CUSTODY_CONFIG",
)
passphrase_file_option = click.option(
    "--passphrase-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None
)


def _open(config_path: Path) -> tuple[Settings, Store]:
    """The settings and a store whose connections close when the command ends."""
    settings = load_settings(config_path)
    store = Store(settings.database_url, timeouts=settings.database_timeouts)
    click.get_current_context().call_on_close(store.dispose)
    return settings, store


def hot_worker(
    settings: Settings, store: Store, passphrase_file: Path | None, *, secret: str | None = None
) -> HotWorker:
    """The hot wallet's worker: it pays hot withdrawals, executes cold batches and creates the Safe. The
    passphrase comes from ``secret`` when the caller has already asked for it."""
    from custody.chain.ethereum import EthereumNode
    from custody.hot.worker import HotWorker, WorkerSettings
    from custody.keys import load_hot_account

    if not settings.rpc_url:
        raise ConfigError("[chain] rpc_url is empty: there is no node to send through")
    if secret is None:
        secret = passphrase(passphrase_file, PASS_ENV, "Passphrase for the daemon's keys")
    account = load_hot_account(settings.data_dir, secret)
    return HotWorker(
        store,
        EthereumNode(settings.rpc_url, settings.chain_id),
        account,
        WorkerSettings(
            settings.chain_id,
            settings.confirmations,
            settings.max_fee_per_gas,
            settings.stuck_after_seconds,
            settings.settled_watch_blocks,
        ),
        SystemClock(),
    )
