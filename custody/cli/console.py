"""`custody console serve | login`: the operators' web console (``custody.console``), on its own port.

`serve` binds 127.0.0.1:8787 by default and answers only to loopback names, its own address and each
``--allowed-host`` (``custody.console.hosts``); `login` checks the operator against the active policy's
``[[operators]]`` and their key file, and prints a one-time sign-in URL (``custody.console.auth``)."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

import click

from custody import logs
from custody.cli.common import config_option, open_store
from custody.clock import SystemClock
from custody.console.auth import SESSION_TTL, TOKEN_TTL, issue_token, operator_for_key
from custody.console.hosts import LOOPBACK, WILDCARDS, hostname
from custody.errors import ConfigError
from custody.ledger.policy import PolicyCache

DEFAULT_PORT = 8787


@click.group()
def console() -> None:
    """The operators' web console: read-only pages, and a freeze button."""


@console.command("serve")
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Keep it on loopback or behind TLS.")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True)
@click.option("--session-ttl", type=click.IntRange(60, 7 * 86400), default=SESSION_TTL, show_default=True)
@click.option(
    "--secure-cookie/--no-secure-cookie",
    default=None,
    help="Mark the session cookie Secure (default: when the request came over https; say so behind a TLS proxy).",
)
@click.option("--explorer", default="", help="A block explorer's transaction URL, {} for the hash.")
@click.option(
    "--allowed-host",
    "allowed",
    multiple=True,
    help="Another name the console answers to (e.g. a TLS proxy's); loopback and --host always are. Repeatable.",
)
def serve(
    config_path: Path,
    host: str,
    port: int,
    session_ttl: int,
    secure_cookie: bool | None,
    explorer: str,
    allowed: tuple[str, ...],
) -> None:
    """Serve the console until interrupted. It refuses requests for any other Host (DNS rebinding)."""
    import uvicorn

    from custody.console.app import create_console_app
    from custody.console.deps import ConsoleSettings
    from custody.console.hosts import allowed_hosts

    bad = [a for a in allowed if hostname(a) is None or any(c in a for c in "/@?# ")]
    if bad:
        raise ConfigError(f"--allowed-host takes a host name or address, without scheme or path: not {bad[0]!r}")
    names = allowed_hosts(host, allowed)

    settings, store = open_store(config_path)
    logs.setup("console")
    app = create_console_app(
        store,
        SystemClock(),
        ConsoleSettings(
            session_ttl=session_ttl,
            secure_cookie=secure_cookie,
            webhook_urls=settings.webhook_urls,
            rpc_url=settings.rpc_url,
            chain_id=settings.chain_id,
            explorer_tx=explorer,
            allowed_hosts=names,
        ),
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", log_config=None, proxy_headers=False)
    )
    shown = "127.0.0.1" if host in WILDCARDS else f"[{host}]" if ":" in host else host
    click.echo(f"console on http://{shown}:{port}/ (sign in with `custody console login`)")
    click.echo(f"answers to: {', '.join(names)}", err=True)
    server.run()
    if not server.started:
        sys.exit(3)


@console.command("login")
@config_option
@click.option("--operator", required=True, help="Your name in the policy's [[operators]].")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Your operator key file (custody review keygen): it must be the key the policy declares for you.",
)
@click.option(
    "--url",
    default=f"http://127.0.0.1:{DEFAULT_PORT}",
    show_default=True,
    help="Where the console is: a loopback address, or a name `console serve` was given with --allowed-host.",
)
@click.option("--ttl", type=click.IntRange(30, 3600), default=TOKEN_TTL, show_default=True, help="Seconds.")
def login(config_path: Path, operator: str, key_path: Path, url: str, ttl: int) -> None:
    """Print a one-time sign-in URL (valid TTL seconds, once)."""
    from custody.cli.review import load_operator_key

    base = login_base(url)
    _, store = open_store(config_path)
    name = operator_for_key(store, PolicyCache(), operator, load_operator_key(key_path))
    token = issue_token(store, name, SystemClock().now(), ttl)
    click.echo(f"{base}/login?token={token}")
    click.echo(f"valid once, for {ttl} seconds, for operator {name}", err=True)
    if hostname(urlsplit(base).netloc) not in LOOPBACK:
        click.echo("the console must have been started with --allowed-host for this name, or it refuses it", err=True)


def login_base(url: str) -> str:
    """The console's base URL for the link: http(s), a host, no query; refused before a token is made."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or hostname(parts.netloc) is None or parts.username or parts.query:
        raise ConfigError(f"--url must be the console's address, such as http://127.0.0.1:{DEFAULT_PORT}: not {url!r}")
    return url.strip().rstrip("/")
