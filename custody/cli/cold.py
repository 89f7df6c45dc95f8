"""`custody cold …` and `custody batch …`: the online half of the cold wallet ceremony."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from custody.cli.common import (
    bitcoin_node,
    config_option,
    daemon_passphrase,
    echo_json,
    hot_worker,
    json_option,
    node_for,
    open_store,
    passphrase_option,
)
from custody.clock import SystemClock
from custody.cold import batches, btcbatches, btcbump, btcexecution, btcwallet, execution, views
from custody.cold import safes as cold_service
from custody.config import Settings
from custody.errors import Frozen
from custody.keys import load_identity
from custody.store.db import Store
from policies.canonical import parse_canonical
from policies.errors import CustodyError
from policies.loader import Reader
from policies.text import escape
from signer.batchfile import parse_signature_file
from signer.btcbatch import SIGNATURE_KIND as BTC_SIGNATURE_KIND
from signer.btcbatch import parse_btc_signature_file
from signer.btckeys import NETWORKS
from signer.cliutil import read_file
from signer.keystore import parse_owner_card

if TYPE_CHECKING:
    from custody.chain.bitcoin import BitcoinNode
    from custody.loops.worker import Worker

NEED_NODE = "the cold wallet needs a node"
CHAINS = click.Choice(["ethereum", "bitcoin"])


@click.group()
def cold() -> None:
    """The cold wallet: a Safe 1.4.1 multisig owned by the treasury operators' keys."""


@cold.command("create")
@click.option(
    "--owner",
    "--owner-card",
    "cards",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="An owner card from `signer key card` (repeat for each owner).",
)
@click.option("--threshold", required=True, type=int, help="Owner signatures needed for a transaction.")
@click.option(
    "--salt-nonce",
    default=0,
    show_default=True,
    type=click.IntRange(0, 2**256 - 1),
    help="The factory's salt nonce: another value gives the same owners another Safe address.",
)
@click.option("--chain", default="ethereum", show_default=True, type=CHAINS, help="Which cold wallet to create.")
@click.option("--network", type=click.Choice(NETWORKS), help="Bitcoin only: the network (the node must be on it).")
@config_option
@passphrase_option
def cold_create(
    cards: tuple[Path, ...],
    threshold: int,
    salt_nonce: int,
    chain: str,
    network: str | None,
    config_path: Path,
    passphrase_file: Path | None,
) -> None:
    """Deploy the Safe with the canonical Safe 1.4.1 contracts, read back its owners and threshold, record
    it, and write the file signers pin. The owners are set up in the order given. With --chain bitcoin: the
    P2WSH multisig descriptor of the owners' cards, watched by a watch-only wallet on the node."""
    settings, store = open_store(config_path)
    parsed = [parse_owner_card(read_file(card)) for card in cards]
    if chain == "bitcoin":
        if network is None:
            raise click.UsageError("--chain bitcoin needs --network")
        daemon_key = (settings.data_dir / "identity.pub").read_text().strip()
        made = btcwallet.create(
            store,
            bitcoin_node(settings),
            network,
            threshold,
            parsed,
            daemon_key,
            settings.data_dir,
            SystemClock().now(),
        )
        click.echo(f"cold wallet  Bitcoin {made.network}, {made.threshold} of {len(made.owners)}")
        for o in made.owners:
            click.echo(f"  owner      {escape(o['name'])} {o['fingerprint']}")
        click.echo(f"  descriptor {made.descriptor}")
        click.echo(f"  node wallet {made.wallet} (watch-only)")
        click.echo(f"  file hash  {hashlib.sha256(made.raw).hexdigest()}")
        click.echo(
            f"signers pin {made.path} with `signer cold pin`, after comparing this hash with what their signer shows"
        )
        return
    owners = [card.owner_address for card in parsed]
    worker = hot_worker(settings, store, passphrase_file)
    daemon_key = (settings.data_dir / "identity.pub").read_text().strip()
    doc = cold_service.create(
        store,
        worker.node,
        worker,
        owners,
        threshold,
        daemon_key,
        settings.data_dir,
        salt_nonce=salt_nonce,
        names={card.owner_address: card.name for card in parsed},
    )
    click.echo(f"cold wallet  Safe {doc.safe} on chain {doc.chain_id}, {doc.threshold} of {len(doc.owners)}")
    for owner in doc.owners:
        click.echo(f"  owner      {owner}")
    click.echo(f"  salt nonce {doc.salt_nonce}")
    click.echo(f"  multisend  {doc.multisend} (MultiSendCallOnly)")
    path = settings.data_dir / cold_service.COLD_WALLET_FILE
    click.echo(f"  file hash  {hashlib.sha256(doc.to_bytes()).hexdigest()}")
    click.echo(f"signers pin {path} with `signer cold pin`, after comparing this hash with what their signer shows")


@cold.command("address")
@click.option("--network", required=True, type=click.Choice(NETWORKS))
@config_option
def cold_address(network: str, config_path: Path) -> None:
    """A fresh receive address of the Bitcoin cold wallet on NETWORK (deposits and sweeps go there)."""
    settings, store = open_store(config_path)
    click.echo(btcwallet.receive_address(store, bitcoin_node(settings), network))


@click.group()
def batch() -> None:
    """Cold batches: export for signing, import signatures, list, cancel."""


@batch.command("export")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--max", "limit", default=batches.MAX_PER_BATCH, show_default=True, type=int)
@click.option("--expires-in", default="24h", show_default=True, help="How long signers have, e.g. 4h or 2d.")
@click.option("--chain", default="ethereum", show_default=True, type=CHAINS, help="Which cold wallet pays.")
@click.option("--asset", default=None, help="Bitcoin only: the asset (default: that of the oldest queued withdrawal).")
@click.option("--psbt-version", type=click.Choice(["0", "2"]), default="0", help="Bitcoin only: BIP-174 or BIP-370.")
@config_option
@passphrase_option
def batch_export(
    out_dir: Path,
    limit: int,
    expires_in: str,
    chain: str,
    asset: str | None,
    psbt_version: str,
    config_path: Path,
    passphrase_file: Path | None,
) -> None:
    """Gather queued cold withdrawals into one Safe transaction (with --chain bitcoin: one PSBT) and write the
    batch file for the signers."""
    if chain != "bitcoin" and psbt_version != "0":
        raise click.BadParameter("a PSBT version is for --chain bitcoin only", param_hint="'--psbt-version'")
    settings, store = open_store(config_path)
    lifetime = Reader(human=True).period(expires_in, "--expires-in")
    identity = load_identity(settings.data_dir, daemon_passphrase(passphrase_file))
    if chain == "bitcoin":
        made = btcbatches.export(
            store,
            bitcoin_node(settings),
            identity,
            out_dir,
            SystemClock().now(),
            asset=asset,
            limit=limit,
            expires_in=lifetime,
            fallback_fee_rate=settings.bitcoin.fallback_fee_rate,
            psbt_version=int(psbt_version),
        )
        for withdrawal_id, why in made.skipped:
            click.echo(f"skipped {withdrawal_id}: {why}", err=True)
        click.echo(f"batch {made.batch_id}: {made.withdrawals} {made.asset} withdrawals")
        if made.replaces:
            click.echo(f"  replaces     batch {made.replaces} (same withdrawals, one of its coins)")
        click.echo(f"  txid         {made.txid}")
        click.echo(f"  fee          {made.fee} sat ({made.fee_rate} sat/vB)")
        click.echo(f"  file         {made.path}")
        return
    result = batches.export(
        store,
        node_for(settings, NEED_NODE),
        identity,
        out_dir,
        SystemClock().now(),
        limit=limit,
        expires_in=lifetime,
    )
    for withdrawal_id, why in result.skipped:
        click.echo(f"skipped {withdrawal_id}: {why}", err=True)
    what = f"{result.withdrawals} withdrawals" if result.withdrawals else "no transfers (uses up a freed nonce)"
    click.echo(f"batch {result.batch_id}: {what}, Safe nonce {result.safe_nonce}")
    click.echo(f"  SafeTx hash  {result.safe_tx_hash}")
    click.echo(f"  file         {result.path}")


@batch.command("bump")
@click.argument("batch_id")
@click.option(
    "--fee-rate",
    type=click.IntRange(1, 100_000),
    default=None,
    help="sat/vB (default: the node's estimate, at least the stuck rate plus the incremental relay fee).",
)
@click.option("--out", "out_dir", default=".", show_default=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--expires-in", default="24h", show_default=True, help="How long signers have, e.g. 4h or 2d.")
@config_option
@passphrase_option
def batch_bump(
    batch_id: str,
    fee_rate: int | None,
    out_dir: Path,
    expires_in: str,
    config_path: Path,
    passphrase_file: Path | None,
) -> None:
    """Bitcoin: export a fee bump of a broadcast batch stuck in the mempool (same withdrawals and coins, a higher
    fee within the policy's caps) for the owners to sign; imported, it replaces the stuck transaction."""
    settings, store = open_store(config_path)
    lifetime = Reader(human=True).period(expires_in, "--expires-in")
    identity = load_identity(settings.data_dir, daemon_passphrase(passphrase_file))
    made = btcbump.bump(
        store,
        bitcoin_node(settings),
        identity,
        out_dir,
        SystemClock().now(),
        batch_id,
        fee_rate=fee_rate,
        expires_in=lifetime,
    )
    click.echo(f"batch {made.batch_id}: fee bump of batch {made.replaces}")
    click.echo(f"  txid         {made.txid}")
    click.echo(
        f"  fee          {made.fee} sat ({made.fee_rate} sat/vB), was {made.old_fee} sat ({made.old_fee_rate} sat/vB)"
    )
    click.echo(f"  inputs       {made.inputs} (every coin of the stuck transaction)")
    click.echo(f"  file         {made.path}")
    click.echo("the owners sign it in a new ceremony; `custody batch import` then sends it in place of the stuck one")


@batch.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--wait", default=120.0, show_default=True, help="Seconds to follow an execution to confirmation.")
@config_option
@passphrase_option
def batch_import(files: tuple[Path, ...], wait: float, config_path: Path, passphrase_file: Path | None) -> None:
    """Store owners' signatures; at quorum, execute the batch from the hot wallet and follow it. Bitcoin
    signature files: at the threshold, finalize, store and broadcast the transaction, and follow it."""
    settings, store = open_store(config_path)
    raws = [read_file(f) for f in files]
    btc = [r for r in raws if _kind(r) == BTC_SIGNATURE_KIND]
    if btc:
        _import_btc(settings, store, btc, wait)
    if len(btc) == len(raws):
        return
    node = node_for(settings, NEED_NODE)
    clock = SystemClock()
    signatures = [parse_signature_file(r) for r in raws if _kind(r) != BTC_SIGNATURE_KIND]
    results = execution.import_signatures(store, node, signatures, clock.now())
    worker: Worker | None = None
    for r in results:
        added = ", ".join(r.added) or "none new"
        click.echo(f"batch {r.batch_id}: signatures {r.signatures} of {r.threshold} ({added})")
        if not r.ready:
            continue
        worker = worker or hot_worker(settings, store, passphrase_file)
        worker.ensure_wallet()
        try:
            tx_hash = execution.execute_if_ready(store, node, worker, r.batch_id, clock.now())
        except Frozen as exc:
            click.echo(f"batch {r.batch_id}: signatures stored, not executed: {exc.message}")
            continue
        click.echo(f"batch {r.batch_id}: executing in {tx_hash}")
        if wait > 0:
            click.echo(f"batch {r.batch_id}: {_follow(store, worker, r.batch_id, wait)}")


def _kind(raw: bytes) -> object:
    try:
        doc = parse_canonical(raw)
    except CustodyError:
        return None  # the parser of the Safe's signature files says what is wrong with it
    return doc.get("kind") if isinstance(doc, dict) else None


def _import_btc(settings: Settings, store: Store, raws: list[bytes], wait: float) -> None:
    node = bitcoin_node(settings)
    clock = SystemClock()
    results = btcexecution.import_signatures(store, [parse_btc_signature_file(r) for r in raws], clock.now())
    for r in results:
        added = ", ".join(r.added) or "none new"
        click.echo(f"batch {r.batch_id}: signatures {len(r.signers)} of {r.threshold} ({added})")
        if len(r.signers) < r.threshold:
            continue
        try:
            txid = btcexecution.complete_if_ready(store, node, r.batch_id, clock.now())
        except Frozen as exc:
            click.echo(f"batch {r.batch_id}: signatures stored, not broadcast: {exc.message}")
            continue
        click.echo(f"batch {r.batch_id}: transaction {txid}")
        if wait > 0:
            click.echo(f"batch {r.batch_id}: {_follow_btc(settings, store, node, r.batch_id, wait)}")


def _follow_btc(settings: Settings, store: Store, node: BitcoinNode, batch_id: str, wait: float) -> str:
    follower = btcexecution.BtcFollower(
        store, node, settings.bitcoin.confirmations, SystemClock(), stuck_after=settings.bitcoin.stuck_after
    )
    deadline = time.monotonic() + wait
    while True:
        follower.step()
        state = views.btc_batch_state(store, batch_id)
        if state in (
            btcbatches.BtcState.CONFIRMED,
            btcbatches.BtcState.EXPIRED,
            btcbatches.BtcState.CANCELLED,
            btcbatches.BtcState.REPLACED,
        ):
            return state
        if time.monotonic() > deadline:
            return f"still {state}; the worker (or `custody batch follow`) will settle it"
        time.sleep(0.5)


@batch.command("follow")
@click.option("--wait", default=0.0, show_default=True, help="Seconds to keep following until every batch settles.")
@config_option
def batch_follow(wait: float, config_path: Path) -> None:
    """Bitcoin batches: send stored transactions, follow sent ones to confirmation, expire unsigned ones."""
    settings, store = open_store(config_path)
    follower = btcexecution.BtcFollower(
        store,
        bitcoin_node(settings),
        settings.bitcoin.confirmations,
        SystemClock(),
        stuck_after=settings.bitcoin.stuck_after,
    )
    deadline = time.monotonic() + wait
    while True:
        follower.step()
        waiting = [v for v in views.list_btc_batches(store) if v.state in btcbatches.SENT]
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    for v in views.list_btc_batches(store):
        if v.state in btcbatches.OPEN:
            click.echo(f"{v.id}  {v.state:<9} {v.txid}")


def _follow(store: Store, worker: Worker, batch_id: str, wait: float) -> str:
    deadline = time.monotonic() + wait
    while True:
        worker.follow()
        state = views.batch_state(store, batch_id)
        if state in (batches.BatchState.EXECUTED, batches.BatchState.FAILED):
            return state
        if time.monotonic() > deadline:
            return f"still {state}; the worker will settle it"
        time.sleep(0.3)


@batch.command("list")
@json_option
@config_option
def batch_list(as_json: bool, config_path: Path) -> None:
    """Each batch, its signatures so far and who is still missing."""
    _, store = open_store(config_path)
    shown = views.list_batches(store)
    btc = views.list_btc_batches(store)
    if as_json:
        echo_json(
            [{"chain": "ethereum", **asdict(v)} for v in shown] + [{"chain": "bitcoin", **asdict(v)} for v in btc]
        )
        return
    if not shown and not btc:
        click.echo("no batches")
    for v in shown:
        expires = dt.datetime.fromtimestamp(v.expires_at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        click.echo(
            f"{v.id}  {v.state:<9} nonce {v.safe_nonce:<4} {v.withdrawals:>3} withdrawals  "
            f"signatures {len(v.signed_by)}/{v.threshold}  expires {expires}"
        )
        if v.state == batches.BatchState.EXPORTED:
            for owner in v.missing:
                name = v.names.get(owner)
                click.echo(f"    missing  {escape(name) + ' ' if name else ''}{owner}")
            for owner in v.signed_by:
                name = v.names.get(owner)
                click.echo(f"    signed   {escape(name) + ' ' if name else ''}{owner}")
        if v.tx_hash:
            click.echo(f"    tx       {v.tx_hash}")
    for b in btc:
        expires = dt.datetime.fromtimestamp(b.expires_at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        click.echo(
            f"{b.id}  {b.state:<9} bitcoin {b.network:<8} {b.withdrawals:>3} {b.asset} withdrawals  "
            f"signatures {len(b.signed_by)}/{b.threshold}  expires {expires}"
        )
        if b.state == btcbatches.BtcState.EXPORTED:
            for fingerprint in b.missing:
                click.echo(f"    missing  {escape(b.names.get(fingerprint, ''))} {fingerprint}")
            for fingerprint in b.signed_by:
                click.echo(f"    signed   {escape(b.names.get(fingerprint, ''))} {fingerprint}")
        click.echo(f"    txid     {b.txid}  fee {b.fee} sat")


@batch.command("cancel")
@click.argument("batch_id")
@click.option("--reason", required=True)
@config_option
def batch_cancel(batch_id: str, reason: str, config_path: Path) -> None:
    """Cancel an exported batch: its withdrawals return to the queue and the next batch reuses its nonce."""
    settings, store = open_store(config_path)
    if btcbatches.is_btc_batch(store, batch_id):
        btcbatches.cancel(store, bitcoin_node(settings), batch_id, reason, SystemClock().now())
    else:
        batches.cancel(store, batch_id, reason, SystemClock().now())
    click.echo(f"batch {batch_id} cancelled; its withdrawals are queued again")
