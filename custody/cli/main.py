"""`custody`: the daemon's command line. Each command parses, calls one service, and prints."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

import click
from nacl.signing import SigningKey

from custody import logs, outage
from custody.cli.common import PASS_ENV, _open, config_option, hot_worker, passphrase_file_option
from custody.clock import SystemClock
from custody.config import default_database_url, render_config
from custody.errors import AuditBroken, DataDirExists
from custody.intake import apikeys
from custody.keys import create_daemon_keys, load_identity
from custody.ledger import audit
from custody.ledger import policy as policy_service
from custody.store.db import Store
from policies.bundle import parse_genesis
from policies.loader import Reader
from policies.model import Governance
from signer.cliutil import Group, passphrase, read_file
from signer.keystore import parse_owner_card
from signer.policyview import describe_bundle

log = logging.getLogger("custody.cli")


@click.group(cls=Group)
def main() -> None:
    """The online custody daemon: withdrawal API, policy, audit log."""


@main.command()
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
@click.option("--passphrase-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None)
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
    secret = passphrase(passphrase_file, PASS_ENV, "Passphrase for the daemon's keys", confirm=True)
    data_dir = data_dir.resolve()
    url = database_url or os.environ.get("CUSTODY_DATABASE_URL") or default_database_url(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        (data_dir / "custody.toml").write_text(render_config(data_dir, url, rpc_url=rpc_url, chain_id=chain_id))
        public, hot_address = create_daemon_keys(data_dir, secret)
        store = Store(url)
        store.migrate()
        now = SystemClock().now()
        with store.transaction() as s:
            raw = policy_service.install_genesis(s, governance, now)
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
    entries = []
    for spec in admins:
        name, _, key = spec.partition(":")
        entries.append({"name": name, "key": key.lower()})
    for card in cards:
        owner = parse_owner_card(read_file(card))
        entries.append({"name": owner.name, "key": owner.approval_key})
    return Reader(human=True).governance({"quorum": quorum, "admins": entries, "activation_delay": delay})


@main.command()
@config_option
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
def serve(config_path: Path, host: str | None, port: int | None) -> None:
    """Run the API (and the scheduler that releases delayed withdrawals)."""
    import uvicorn

    from custody.api.app import create_app

    settings, store = _open(config_path)
    logs.setup("serve")
    # The group-commit threads hold the intake lock across their round trips to the database; after each
    # one they need the GIL back from the event loop at once, not after the default 5 ms switch interval.
    sys.setswitchinterval(0.0005)
    clock = SystemClock()
    app = create_app(settings, store, clock)
    stop = threading.Event()

    def tick() -> bool:
        logs.REQUEST_ID.set(logs.new_id("s-"))
        app.state.withdrawals.promote_due()
        app.state.auth.prune(clock.now())
        return False  # once a second, whatever it did

    # A failed tick is retried with backoff; a database outage is logged once, when it begins and when it ends.
    ticks = outage.Loop("scheduler", log, idle=1.0)
    threading.Thread(target=ticks.forever, args=(tick, stop), name="scheduler", daemon=True).start()
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal to the handler that was
    # there before it; with these no-op handlers in place the process then ends normally, with exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.run(
            app,
            host=host or settings.listen_host,
            port=port or settings.listen_port,
            log_level="warning",
            proxy_headers=False,  # the client address is never used, so no proxy is trusted for it
            log_config=None,  # our JSON handler on the root logger (logs.setup)
            access_log=False,  # the API writes its own access line, with the request id
        )
    finally:
        stop.set()
    click.echo("custody serve stopped")


@main.command()
@config_option
@click.option("--passphrase-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None)
def worker(config_path: Path, passphrase_file: Path | None) -> None:
    """Pay queued hot withdrawals from the hot wallet and follow them to confirmation."""
    from custody.ops.webhooks import Dispatcher

    settings, store = _open(config_path)
    logs.setup("worker")
    secret = passphrase(passphrase_file, PASS_ENV, "Passphrase for the daemon's keys")
    hot = hot_worker(settings, store, None, secret=secret)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = []
    if settings.webhook_urls:
        hooks = Dispatcher(store, load_identity(settings.data_dir, secret), settings.webhook_urls)
        threads.append(threading.Thread(target=hooks.run, args=(stop,), name="webhooks", daemon=True))
        click.echo(f"webhooks to {len(settings.webhook_urls)} URL(s)")
    for t in threads:
        t.start()
    click.echo(f"hot worker for {hot.address} on chain {settings.chain_id}")
    hot.run(stop)
    for t in threads:
        t.join(10)
    click.echo("hot worker stopped")


@main.group(cls=Group)
def webhooks() -> None:
    """Webhook deliveries (the URLs are in custody.toml, [webhooks] urls)."""


@webhooks.command("test")
@click.argument("url")
@config_option
@passphrase_file_option
def webhooks_test(url: str, config_path: Path, passphrase_file: Path | None) -> None:
    """Send one signed test event to URL and print the receiver's answer."""
    from custody.ops.webhooks import send_test

    settings, _ = _open(config_path)
    key = load_identity(settings.data_dir, passphrase(passphrase_file, PASS_ENV, "Passphrase for the daemon's keys"))
    status = send_test(key, url, SystemClock().now())
    click.echo(f"{url} answered HTTP {status}")
    if not 200 <= status < 300:
        sys.exit(1)


@webhooks.command("status")
@config_option
def webhooks_status(config_path: Path) -> None:
    """Each configured URL: events still to deliver, failures in a row, the last error."""
    from custody.ops.webhooks import backlog
    from custody.store.models import WebhookEndpoint

    settings, store = _open(config_path)
    waiting = backlog(store, settings.webhook_urls)
    with store.read() as s:
        for url in settings.webhook_urls:
            ep = s.get(WebhookEndpoint, url)
            detail = "not started yet" if ep is None else f"{ep.attempts} failures in a row; {ep.last_error or 'ok'}"
            click.echo(f"{url}: {waiting.get(url, 0)} waiting, {detail}")


@main.group(cls=Group)
def apikey() -> None:
    """Manage the exchange backend's API keys."""


@apikey.command("keygen")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
def apikey_keygen(out: Path) -> None:
    """Make a key pair for a client: the private key goes to OUT, the public key is printed."""
    key = SigningKey.generate()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(bytes(key).hex() + "\n")
    click.echo(key.verify_key.encode().hex())


@apikey.command("add")
@click.argument("name")
@click.option("--public-key", required=True)
@click.option("--scopes", default="withdraw,read,cancel", show_default=True)
@config_option
def apikey_add(name: str, public_key: str, scopes: str, config_path: Path) -> None:
    _, store = _open(config_path)
    apikeys.add_key(store, name, public_key, apikeys.parse_scopes(scopes), SystemClock().now())
    click.echo(f"added API key {name!r}")


@apikey.command("list")
@config_option
def apikey_list(config_path: Path) -> None:
    _, store = _open(config_path)
    for k in apikeys.list_keys(store):
        status = "revoked" if k.revoked_at else "active"
        click.echo(f"{k.name:<24} {status:<8} {k.scopes:<24} {k.public_key}")


@apikey.command("revoke")
@click.argument("name")
@config_option
def apikey_revoke(name: str, config_path: Path) -> None:
    _, store = _open(config_path)
    apikeys.revoke_key(store, name, SystemClock().now())
    click.echo(f"revoked API key {name!r}")


@main.group(cls=Group)
def policy() -> None:
    """Propose, apply and show policy bundles."""


@policy.command("propose")
@click.argument("policy_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@config_option
def policy_propose(policy_file: Path, out: Path, config_path: Path) -> None:
    """Compile POLICY_FILE into the next bundle for the admins to review and sign."""
    _, store = _open(config_path)
    bundle = policy_service.propose(store, policy_file.read_text(encoding="utf-8"), SystemClock().now())
    out.write_bytes(bundle.raw)
    click.echo(f"bundle version {bundle.version}, hash {bundle.hash}; wrote {out}")


@policy.command("apply")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("signatures", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@config_option
def policy_apply(bundle: Path, signatures: tuple[Path, ...], config_path: Path) -> None:
    """Apply a bundle signed by a quorum of the current admins."""
    _, store = _open(config_path)
    applied = policy_service.apply(store, read_file(bundle), [read_file(p) for p in signatures], SystemClock().now())
    click.echo(f"applied policy version {applied.version}, hash {applied.hash}")


@policy.command("show")
@config_option
def policy_show(config_path: Path) -> None:
    """Print the active policy and its hash."""
    _, store = _open(config_path)
    with store.read() as s:
        head, bundle = policy_service.head(s)
    if bundle is None:
        click.echo(f"no policy applied yet; genesis {head.hash}, quorum {head.governance.quorum}")
        return
    for line in describe_bundle(bundle, None):
        click.echo(line)


@main.group(cls=Group)
def audit_cmd() -> None:
    """Verify and export the hash-chained audit log."""


main.add_command(audit_cmd, "audit")


@audit_cmd.command("verify")
@config_option
def audit_verify(config_path: Path) -> None:
    """Exit 0 if the chain is intact; otherwise name the first broken entry and exit 1."""
    _, store = _open(config_path)
    with store.read() as s:
        verdict = audit.verify(s)
    if not verdict.ok:
        raise AuditBroken(f"first broken entry: {verdict.first_broken}: {verdict.reason}")
    click.echo(f"audit log intact: {verdict.entries} entries")


@audit_cmd.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl")
@config_option
def audit_export(fmt: str, config_path: Path) -> None:
    """Write every entry to standard output, one JSON object per line."""
    _, store = _open(config_path)
    with store.read() as s:
        for line in audit.export_jsonl(s):
            sys.stdout.write(line + "\n")


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of lines.")
@config_option
def status(as_json: bool, config_path: Path) -> None:
    """At a glance: frozen or not, the policy version, withdrawals by state, balances and hot share, and the
    batches waiting for signatures with who is missing."""
    from dataclasses import asdict

    from custody.ops.status import gather, render

    _, store = _open(config_path)
    current = gather(store)
    if as_json:
        click.echo(json.dumps(asdict(current), sort_keys=True))
    else:
        for line in render(current):
            click.echo(line)


@main.command("freeze")
@click.option("--reason", required=True, help="Why: it is recorded in the audit log and shown by status.")
@config_option
def freeze_cmd(reason: str, config_path: Path) -> None:
    """Stop every outgoing payment now. Intake goes on; only a quorum-signed bundle can unfreeze."""
    from custody.ledger import freeze

    _, store = _open(config_path)
    with store.transaction() as s:
        row, made = freeze.freeze(s, SystemClock().now(), reason, "operator")
        freeze_id, since, why = row.id, row.frozen_at, row.reason
    if made:
        click.echo(
            f'frozen: freeze {freeze_id}. To unfreeze, a quorum signs a policy bundle with unfreeze = "{freeze_id}"'
        )
    else:
        click.echo(f"already frozen since {since} (freeze {freeze_id}: {why})")


def _register() -> None:
    from custody.cli.cold import batch, cold
    from custody.cli.por import main as por

    main.add_command(cold)
    main.add_command(batch)
    main.add_command(por, "por")


_register()
