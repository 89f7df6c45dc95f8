"""Bitcoin cold batches on the online side: export (one PSBT from the watch-only wallet paying some ``queued_cold``
withdrawals of one bitcoin asset), expiry and cancellation. The owners' signatures, finalizing, broadcasting and
following to confirmation are in ``custody.cold.btcexecution``.

A batch's life (``BtcBatch.state``), beside its withdrawals' own (``custody.ledger.states``):

    exported  --threshold of signatures-->  signed (final transaction stored)  --sent-->  broadcast
    broadcast  --deep enough-->  confirmed;  broadcast  --its block reorged away-->  broadcast (sent again)
    exported  --expiry / cancel-->  expired | cancelled      (inputs unlocked, withdrawals back to queued_cold)
    broadcast  --its fee bump sent, or mined instead of it-->  replaced      (``custody.cold.btcfamily``)

Coins: the node chooses the inputs (``walletcreatefundedpsbt``); they are locked on the node (``lockunspent``,
persistent) and recorded in ``btc_batch_inputs`` in the same database transaction that records the batch, so a
second batch never spends a coin an open batch holds. The database is the truth: before each export the node's
locks are made equal to the open batches' inputs (a lock the node lost is set again; one left by an export whose
database transaction failed is released), under a lock on the cold wallet's row so that exports never interleave.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from pathlib import Path

from nacl.signing import SigningKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.chain.bitcoin import BitcoinNode, open_wallet
from custody.cold import btcpsbt, btcwallet
from custody.cold.batches import DEFAULT_EXPIRY, MAX_PER_BATCH, batch_item
from custody.errors import BatchRefused, BitcoinNodeError, NotFound, NothingToExport, UnknownAsset
from custody.ledger import audit, freeze
from custody.ledger.policy import Active, PolicyCache
from custody.ledger.states import State
from custody.ledger.transitions import move
from custody.store.db import Store
from custody.store.models import BtcBatch, BtcBatchInput, BtcColdWallet, Withdrawal
from policies.addresses import bitcoin_script
from policies.model import AssetRule, Policy
from signer.batchfile import BatchWithdrawal
from signer.btcbatch import BtcBatch as BtcBatchDoc
from signer.btcbatch import canonical_psbt, parse_btc_batch_file, withdrawal_problem, write_btc_batch_file
from signer.ledger import BatchRoom
from signer.payouts import check_withdrawal
from signer.review import withdrawal_refusal

SAT = Decimal(10) ** 8
CONF_TARGET = 6  # blocks: the fee estimate a cold batch asks for (it is not urgent; RBF can bump it)


class BtcState(StrEnum):
    EXPORTED = "exported"
    SIGNED = "signed"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    # Its withdrawals were settled by another transaction of the same family (a fee bump of it, or the one it
    # bumped): see ``custody.cold.btcfamily``.
    REPLACED = "replaced"


SENT = (BtcState.SIGNED, BtcState.BROADCAST)  # the final transaction is stored: only it can pay them now
OPEN = (BtcState.EXPORTED, *SENT)


@dataclass
class BtcExported:
    batch_id: str
    path: Path
    asset: str
    txid: str
    fee: int
    fee_rate: int
    withdrawals: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    replaces: str | None = None


def bitcoin_assets(policy: Policy) -> dict[str, AssetRule]:
    return {symbol: rule for symbol, rule in policy.assets.items() if rule.chain == "bitcoin"}


def export(
    store: Store,
    node: BitcoinNode,
    identity: SigningKey,
    out_dir: Path,
    now: int,
    *,
    asset: str | None = None,
    limit: int = MAX_PER_BATCH,
    expires_in: int = DEFAULT_EXPIRY,
    fallback_fee_rate: int = 10,
    psbt_version: int = 0,
) -> BtcExported:
    """One Bitcoin batch of ``asset`` (by default the bitcoin asset of the oldest queued cold withdrawal), its
    PSBT in ``psbt_version`` (0, BIP-174; or 2, BIP-370: the same transaction, which signers check alike)."""
    if not 1 <= limit <= MAX_PER_BATCH:
        raise BatchRefused(f"a batch holds 1 to {MAX_PER_BATCH} withdrawals")
    with store.read() as s:
        freeze.refuse_if_frozen(s, "exporting a batch")
        policy = PolicyCache().get(s).policy
        symbol, rule = _asset(s, policy, asset)
        wallet = btcwallet.wallet_row(s, str(rule.network))
    if expires_in > policy.batches.max_lifetime:
        raise BatchRefused(
            f"a batch may live at most {policy.batches.max_lifetime} s under the policy (signers refuse longer ones)"
        )
    with store.transaction() as s:
        expire_due(s, node, now)
    watch = open_wallet(node, wallet.wallet)
    rate = fee_rate(node, rule, fallback_fee_rate)
    out_dir.mkdir(parents=True, exist_ok=True)
    with store.transaction() as s:
        wallet = s.get_one(BtcColdWallet, wallet.wallet, with_for_update=True)
        freeze.refuse_if_frozen(s, "exporting a batch")
        active = PolicyCache().get(s)
        pending = _pending_replacement(s, wallet.wallet, symbol)
        replaces, reuse = (pending[0].id, pending[2]) if pending else (None, [])
        if pending is not None:
            chosen = [(w, batch_item(s, w, active.policy, now)[0]) for w in pending[1]]
            skipped: list[tuple[str, str]] = []
        else:
            chosen, skipped = _choose(s, store, active.policy, symbol, wallet.network, limit, now)
        if not chosen:
            raise NothingToExport(
                f"nothing to export: no queued cold {symbol} withdrawal that the policy allows"
                + (f" ({len(skipped)} skipped)" if skipped else "")
            )
        sync_locks(s, watch)
        payments = [(bitcoin_script(wallet.network, w.destination), w.amount) for w, _ in chosen]
        funded = _fund(watch, wallet, [w for w, _ in chosen], payments, rate, rule, reuse)
        if replaces is not None and not {(o.txid, o.vout) for o in funded.inputs} & {(o.txid, o.vout) for o in reuse}:
            raise BatchRefused(
                f"the withdrawals of batch {replaces} go out again only in a batch that spends one of its coins (its "
                "signers refuse them otherwise), and none of those coins is unspent: cancel them and request them again"
            )
        batch_id = str(uuid.uuid4())
        path = out_dir / f"btc-batch-{batch_id[:8]}.json"
        items = tuple(item for _, item in chosen)
        psbt = btcpsbt.with_version(funded.psbt, psbt_version)
        doc, tmp = write_export(
            s, identity, wallet, active, batch_id, symbol, items, psbt, funded, replaces, path, now, expires_in
        )
        for w, _ in chosen:
            w.batch_id = batch_id
            move(s, w, State.BATCHED, now, by="batch-export", batch=batch_id, txid=funded.txid)
        audit_exported(s, doc, symbol, funded, rate, [wid for wid, _ in skipped], now)
        s.flush()
        # Last, so that a refusal above leaves no lock behind; the next export's sync_locks also repairs it.
        lock(watch, funded.inputs)
    os.replace(tmp, path)
    return BtcExported(batch_id, path, symbol, funded.txid, funded.fee, rate, len(chosen), skipped, replaces)


def write_export(
    s: Session,
    identity: SigningKey,
    wallet: BtcColdWallet,
    active: Active,
    batch_id: str,
    asset: str,
    withdrawals: tuple[BatchWithdrawal, ...],
    psbt: str,
    funded: btcpsbt.Funded,
    replaces: str | None,
    path: Path,
    now: int,
    expires_in: int,
) -> tuple[BtcBatchDoc, Path]:
    """The batch file written beside ``path`` as ``.tmp`` (the caller renames it once committed), the batch and
    its coins recorded; a new batch and a fee bump alike."""
    doc = BtcBatchDoc(
        id=batch_id,
        network=wallet.network,
        descriptor=wallet.descriptor,
        policy_version=active.version,
        policy_hash=active.hash,
        created_at=now,
        expires_at=now + expires_in,
        withdrawals=withdrawals,
        psbt=psbt,
        replaces=replaces,
    )
    raw = write_btc_batch_file(doc, identity)
    parse_btc_batch_file(raw)  # what every signer reads first: never write a file they cannot parse
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(raw)
    s.add(
        BtcBatch(
            id=batch_id,
            wallet=wallet.wallet,
            asset=asset,
            state=BtcState.EXPORTED,
            txid=funded.txid,
            psbt=psbt,
            raw=raw,
            fee=funded.fee,
            replaces=replaces,
            policy_version=active.version,
            withdrawals=len(withdrawals),
            created_at=now,
            expires_at=doc.expires_at,
            updated_at=now,
        )
    )
    s.flush()
    for o in funded.inputs:
        s.add(BtcBatchInput(batch_id=batch_id, txid=o.txid, vout=o.vout, amount=o.amount))
    return doc, tmp


def audit_exported(
    s: Session, doc: BtcBatchDoc, asset: str, funded: btcpsbt.Funded, rate: int, skipped: list[str], now: int
) -> None:
    """The ``batch.exported`` audit entry of a Bitcoin batch (a new one or a fee bump)."""
    audit.append(
        s,
        now,
        "batch.exported",
        doc.id,
        {
            "chain": "bitcoin",
            "network": doc.network,
            "asset": asset,
            "txid": funded.txid,
            "fee": str(funded.fee),
            "fee_rate": rate,
            "inputs": [f"{o.txid}:{o.vout}" for o in funded.inputs],
            "withdrawals": [w.id for w in doc.withdrawals],
            "expires_at": doc.expires_at,
            "skipped": skipped,
            "replaces": doc.replaces,
        },
    )


def _asset(s: Session, policy: Policy, asset: str | None) -> tuple[str, AssetRule]:
    assets = bitcoin_assets(policy)
    if asset is not None:
        if asset not in assets:
            raise UnknownAsset(f"{asset} is not a bitcoin asset of the active policy")
        return asset, assets[asset]
    if not assets:
        raise NothingToExport("the active policy has no bitcoin asset")
    oldest = s.execute(
        select(Withdrawal.asset)
        .where(Withdrawal.state == State.QUEUED_COLD, Withdrawal.asset.in_(list(assets)))
        .order_by(Withdrawal.seq)
        .limit(1)
    ).scalar_one_or_none()
    if oldest is None:
        raise NothingToExport("nothing to export: no queued cold withdrawal of a bitcoin asset")
    return oldest, assets[oldest]


def _choose(
    s: Session, store: Store, policy: Policy, symbol: str, network: str, limit: int, now: int
) -> tuple[list[tuple[Withdrawal, BatchWithdrawal]], list[tuple[str, str]]]:
    """The oldest queued withdrawals of ``symbol`` that the signers would accept together (their own checks,
    run here first), one per destination: the node refuses two outputs to one address in a call."""
    query = (
        select(Withdrawal)
        .where(Withdrawal.state == State.QUEUED_COLD, Withdrawal.asset == symbol)
        .order_by(Withdrawal.seq)
    )
    if store.is_postgres:
        query = query.with_for_update(skip_locked=True)
    chosen: list[tuple[Withdrawal, BatchWithdrawal]] = []
    skipped: list[tuple[str, str]] = []
    room = BatchRoom(policy)
    destinations: set[str] = set()
    for w in s.execute(query).scalars():
        if len(chosen) == limit:
            break
        item, why = batch_item(s, w, policy, now)
        why = why or withdrawal_problem(item, network) or withdrawal_refusal(policy, item, now)
        if why is None and w.destination in destinations:
            why = "another withdrawal to the same address is in this batch; it goes in the next one"
        if why is None:
            why = room.take(item, check_withdrawal(policy, item, now))
        if why is None:
            chosen.append((w, item))
            destinations.add(w.destination)
        else:
            skipped.append((w.id, why))
    return chosen, skipped


def fee_rate(node: BitcoinNode, rule: AssetRule, fallback: int) -> int:
    """sat/vB: the node's estimate, else ``fallback`` (regtest and young nodes have none), capped by the policy."""
    try:
        estimate = node.call("estimatesmartfee", CONF_TARGET)
    except BitcoinNodeError:
        estimate = {}
    btc_per_kvb = estimate.get("feerate")
    rate = math.ceil(Decimal(btc_per_kvb) * SAT / 1000) if btc_per_kvb is not None else fallback
    return max(1, min(rate, rule.max_fee_rate or rate))


def _fund(
    watch: BitcoinNode,
    wallet: BtcColdWallet,
    withdrawals: list[Withdrawal],
    payments: list[tuple[bytes, int]],
    rate: int,
    rule: AssetRule,
    reuse: list[BtcBatchInput],
) -> btcpsbt.Funded:
    """The node's PSBT for these payments, checked; ``reuse``: coins it must spend if they are still unspent."""
    outputs = [{w.destination: Decimal(w.amount) / SAT} for w in withdrawals]
    options = {"replaceable": True, "fee_rate": rate, "includeWatching": True, "add_inputs": True}
    unspent = [o for o in reuse if watch.call("gettxout", o.txid, o.vout, True) is not None]
    try:
        result = watch.call("walletcreatefundedpsbt", _outpoints(unspent), outputs, 0, options, True)
    except BitcoinNodeError as exc:
        raise BatchRefused(f"the cold wallet cannot fund this batch: {exc.node_message or exc.message}") from None

    def previous(txid: str) -> str:
        try:
            return str(watch.call("gettransaction", txid)["hex"])
        except BitcoinNodeError:
            return str(watch.call("getrawtransaction", txid))

    funded = btcpsbt.check_funded(str(result["psbt"]), payments, wallet.descriptor, rule.max_fee or 0, previous)
    funded = dataclasses.replace(funded, psbt=canonical_psbt(funded.psbt))
    if rule.max_fee_rate is not None and funded.fee > rule.max_fee_rate * funded.vsize:
        raise BatchRefused(f"the PSBT pays {funded.fee} sat for at most {funded.vsize} vB, above the policy's rate")
    return funded


def _pending_replacement(
    s: Session, wallet: str, symbol: str
) -> tuple[BtcBatch, list[Withdrawal], list[BtcBatchInput]] | None:
    """The oldest expired or cancelled batch not yet replaced whose withdrawals are all queued again: an owner may
    have signed it before it expired, and that owner's signer refuses those withdrawals and its coins in any
    other transaction (``signer.btcledger``). So they go out again together, in a batch that declares it
    ``replaces`` that one and spends at least one of its coins: at most one of the two can ever be mined."""
    released = s.execute(
        select(BtcBatch)
        .where(
            BtcBatch.wallet == wallet,
            BtcBatch.asset == symbol,
            BtcBatch.state.in_([BtcState.EXPIRED, BtcState.CANCELLED]),
        )
        .order_by(BtcBatch.created_at, BtcBatch.id)
    ).scalars()
    superseded = set(s.execute(select(BtcBatch.replaces).where(BtcBatch.replaces.is_not(None))).scalars())
    for batch in released:
        if batch.id in superseded:
            continue
        ids = [w.id for w in parse_btc_batch_file(batch.raw).batch.withdrawals]
        rows = {
            w.id: w for w in s.execute(select(Withdrawal).where(Withdrawal.id.in_(ids)).with_for_update()).scalars()
        }
        if len(rows) == len(ids) and all(rows[i].state == State.QUEUED_COLD for i in ids):
            inputs = list(s.execute(select(BtcBatchInput).where(BtcBatchInput.batch_id == batch.id)).scalars())
            return batch, [rows[i] for i in ids], inputs
    return None


# -- the node's locks --------------------------------------------------------------------------------------
def _outpoints(items: object) -> list[dict[str, object]]:
    return [{"txid": o.txid, "vout": o.vout} for o in items]  # type: ignore[attr-defined]


def lock(watch: BitcoinNode, inputs: tuple[btcpsbt.Outpoint, ...] | list[BtcBatchInput]) -> None:
    if inputs:
        watch.call("lockunspent", False, _outpoints(inputs), True)


def unlock(watch: BitcoinNode, inputs: list[BtcBatchInput]) -> None:
    """Release coins on the node; a coin already spent or unlocked is no error here."""
    for o in inputs:
        try:
            watch.call("lockunspent", True, _outpoints([o]))
        except BitcoinNodeError:
            continue


def held_inputs(s: Session, wallet: str) -> list[BtcBatchInput]:
    return list(
        s.execute(
            select(BtcBatchInput)
            .join(BtcBatch, BtcBatch.id == BtcBatchInput.batch_id)
            # and "orphaned" (custody.cold.btcexecution.ORPHANED): confirmed, then taken out by a deep reorg, its
            # same transaction sent again; no other batch may take its coins meanwhile
            .where(BtcBatch.wallet == wallet, BtcBatch.state.in_([*OPEN, "orphaned"]))
        ).scalars()
    )


def sync_locks(s: Session, watch: BitcoinNode) -> None:
    """Make the node's locked coins exactly the open batches' inputs (the module docstring)."""
    held = {(o.txid, o.vout): o for o in held_inputs(s, str(watch.wallet))}
    locked = {(str(o["txid"]), int(o["vout"])) for o in watch.call("listlockunspent")}
    missing = [o for key, o in held.items() if key not in locked]
    for o in missing:
        with contextlib.suppress(BitcoinNodeError):  # spent already (the batch is on chain): nothing can take it
            lock(watch, [o])
    stray = [BtcBatchInput(txid=t, vout=v, amount=0) for (t, v) in locked - set(held)]
    unlock(watch, stray)


# -- expiry and cancellation -------------------------------------------------------------------------------
def release(s: Session, batch: BtcBatch, state: BtcState, now: int, reason: str) -> list[BtcBatchInput]:
    """Close an unsigned batch and put its withdrawals back in the cold queue; the inputs to unlock."""
    for w in s.execute(
        select(Withdrawal).where(Withdrawal.batch_id == batch.id, Withdrawal.state == State.BATCHED).with_for_update()
    ).scalars():
        w.batch_id = None
        move(s, w, State.QUEUED_COLD, now, by="batch-" + state, batch=batch.id, reason=reason)
    audit.append(s, now, f"batch.{state}", batch.id, {"chain": "bitcoin", "from": batch.state, "reason": reason})
    batch.state, batch.updated_at = state, now
    return list(s.execute(select(BtcBatchInput).where(BtcBatchInput.batch_id == batch.id)).scalars())


def expire_due(s: Session, node: BitcoinNode, now: int) -> int:
    """Expire the exported batches past their time, and unlock their coins on the node."""
    due = list(
        s.execute(
            select(BtcBatch).where(BtcBatch.state == BtcState.EXPORTED, BtcBatch.expires_at <= now).with_for_update()
        ).scalars()
    )
    for batch in due:
        freed = release(s, batch, BtcState.EXPIRED, now, "expired before a threshold of signatures was imported")
        _unlock_quietly(node, batch.wallet, freed)
    return len(due)


def cancel(store: Store, node: BitcoinNode, batch_id: str, reason: str, now: int) -> None:
    with store.transaction() as s:
        batch = s.get(BtcBatch, batch_id, with_for_update=True)
        if batch is None:
            raise NotFound(f"no batch {batch_id}")
        if batch.state != BtcState.EXPORTED:
            raise BatchRefused(f"batch {batch_id} is {batch.state}; only an exported batch can be cancelled")
        freed = release(s, batch, BtcState.CANCELLED, now, reason)
        wallet = batch.wallet
    _unlock_quietly(node, wallet, freed)


def _unlock_quietly(node: BitcoinNode, wallet: str, inputs: list[BtcBatchInput]) -> None:
    """The database already says the coins are free; a node that cannot be told now is repaired by the next
    export's ``sync_locks``."""
    with contextlib.suppress(BitcoinNodeError):
        unlock(open_wallet(node, wallet), inputs)


def is_btc_batch(store: Store, batch_id: str) -> bool:
    with store.read() as s:
        return s.get(BtcBatch, batch_id) is not None
