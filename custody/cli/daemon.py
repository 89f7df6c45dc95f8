"""`custody serve` and `custody worker`: the daemon's two long-running processes."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from custody import logs
from custody.cli.common import config_option, daemon_passphrase, hot_worker, open_store, passphrase_option
from custody.clock import SystemClock
from custody.keys import load_identity

if TYPE_CHECKING:
    import uvicorn


@click.command()
@config_option
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
def serve(config_path: Path, host: str | None, port: int | None) -> None:
    """Run the API (and the scheduler that releases delayed withdrawals)."""
    import uvicorn

    from custody.api.app import create_app
    from custody.loops.scheduler import Scheduler

    settings, store = open_store(config_path)
    logs.setup("serve")
    # The group-commit threads hold the intake lock across their round trips to the database; after each
    # one they need the GIL back from the event loop at once, not after the default 5 ms switch interval.
    sys.setswitchinterval(0.0005)
    clock = SystemClock()
    app = create_app(settings, store, clock)
    stop = threading.Event()
    Scheduler(app.state.withdrawals, app.state.auth, clock).start(stop)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal to the handler that was
    # there before it; with these no-op handlers in place the process then ends normally, with exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    config = uvicorn.Config(
        app,
        host=host or settings.listen_host,
        port=port or settings.listen_port,
        log_level="warning",
        proxy_headers=False,  # the app reads X-Forwarded-For itself, from the proxies in [api] trusted_proxies only
        log_config=None,  # our JSON handler on the root logger (logs.setup)
        access_log=False,  # the API writes its own access line, with the request id
    )
    server = _announcing_server(config)
    try:
        server.run()
    finally:
        stop.set()
    if not server.started:  # the port is taken, or the address is not this host's: uvicorn logged why
        sys.exit(3)
    click.echo("custody serve stopped")


def _announcing_server(config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's server, saying where it listens once its socket is bound (not before: the port may be taken).
    Defined here so that only `serve` imports uvicorn."""
    import socket

    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                click.echo(f"listening on {listening_url(self.config.host, self.config.port)}")

    return Server(config)


def listening_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@click.command()
@config_option
@passphrase_option
def worker(config_path: Path, passphrase_file: Path | None) -> None:
    """Pay queued hot withdrawals from the hot wallet and follow them to confirmation."""
    from custody.ops.webhooks import Dispatcher

    settings, store = open_store(config_path)
    logs.setup("worker")
    secret = daemon_passphrase(passphrase_file)
    hot = hot_worker(settings, store, None, secret=secret)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = []
    if settings.webhook_urls:
        hooks = Dispatcher(
            store,
            load_identity(settings.data_dir, secret),
            settings.webhook_urls,
            lease=settings.webhook_lease_seconds,
        )
        threads.append(threading.Thread(target=hooks.run, args=(stop,), name="webhooks", daemon=True))
        click.echo(f"webhooks to {len(settings.webhook_urls)} URL(s)")
    for t in threads:
        t.start()
    click.echo(f"hot worker for {hot.address} on chain {settings.chain_id}")
    hot.run(stop)
    for t in threads:
        t.join(10)
    click.echo("hot worker stopped")
