"""What operators see of cold batches: each batch with who has signed it and who is missing, read in the
caller's transaction so that ``custody batch list`` and the status figures show the same thing. The Safe's
batches and the Bitcoin cold wallet's (``BtcBatchView``, owners named by their fingerprints) are listed apart."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.cold.batches import BatchState, owners_of
from custody.cold.btcbatches import BtcState
from custody.errors import NotFound
from custody.store.db import Store
from custody.store.models import Batch, BatchSignature, BtcBatch, BtcBatchSignature, BtcColdWallet, ColdWallet


@dataclass(frozen=True)
class BatchView:
    id: str
    state: str
    safe_nonce: int
    withdrawals: int
    expires_at: int
    signed_by: tuple[str, ...]  # sorted
    missing: tuple[str, ...]  # in the Safe's owner order
    threshold: int
    tx_hash: str | None
    names: dict[str, str]  # owner address -> the name on the owner's card (for people to read)


def batch_views(s: Session, states: Iterable[BatchState] | None = None) -> list[BatchView]:
    """Every batch (or those in ``states``), oldest first."""
    wallet = s.execute(select(ColdWallet).limit(1)).scalar_one_or_none()
    owners = owners_of(wallet) if wallet else []
    threshold = (wallet.threshold or 0) if wallet else 0
    names: dict[str, str] = json.loads(wallet.owner_names) if wallet and wallet.owner_names else {}
    query = select(Batch).order_by(Batch.created_at, Batch.safe_nonce)
    if states is not None:
        query = query.where(Batch.state.in_(list(states)))
    rows = list(s.execute(query).scalars())
    signed: dict[str, list[str]] = {b.id: [] for b in rows}
    if rows:
        pairs = select(BatchSignature.batch_id, BatchSignature.owner).where(BatchSignature.batch_id.in_(signed))
        for batch_id, owner in s.execute(pairs).all():
            signed[batch_id].append(owner)
    return [
        BatchView(
            b.id,
            b.state,
            b.safe_nonce,
            b.withdrawals,
            b.expires_at,
            tuple(sorted(signed[b.id])),
            tuple(o for o in owners if o not in signed[b.id]),
            threshold,
            b.tx_hash,
            names,
        )
        for b in rows
    ]


def list_batches(store: Store) -> list[BatchView]:
    with store.read() as s:
        return batch_views(s)


def batch_state(store: Store, batch_id: str) -> BatchState:
    with store.read() as s:
        batch = s.get(Batch, batch_id)
        if batch is None:
            raise NotFound(f"no batch {batch_id}")
        return BatchState(batch.state)


@dataclass(frozen=True)
class BtcBatchView:
    id: str
    state: str
    network: str
    asset: str
    withdrawals: int
    expires_at: int
    signed_by: tuple[str, ...]  # fingerprints, sorted
    missing: tuple[str, ...]  # in the descriptor's owner order
    threshold: int
    txid: str
    fee: int
    names: dict[str, str]  # fingerprint -> the name on the owner's card


def btc_batch_views(s: Session) -> list[BtcBatchView]:
    """Every Bitcoin batch, oldest first."""
    wallets = {w.wallet: w for w in s.execute(select(BtcColdWallet)).scalars()}
    rows = list(s.execute(select(BtcBatch).order_by(BtcBatch.created_at, BtcBatch.id)).scalars())
    signed: dict[str, list[str]] = {b.id: [] for b in rows}
    if rows:
        pairs = select(BtcBatchSignature.batch_id, BtcBatchSignature.fingerprint).where(
            BtcBatchSignature.batch_id.in_(signed)
        )
        for batch_id, fingerprint in s.execute(pairs).all():
            signed[batch_id].append(fingerprint)
    views = []
    for b in rows:
        wallet = wallets[b.wallet]
        owners = json.loads(wallet.owners)
        views.append(
            BtcBatchView(
                b.id,
                b.state,
                wallet.network,
                b.asset,
                b.withdrawals,
                b.expires_at,
                tuple(sorted(signed[b.id])),
                tuple(o["fingerprint"] for o in owners if o["fingerprint"] not in signed[b.id]),
                wallet.threshold,
                b.txid,
                b.fee,
                {o["fingerprint"]: o["name"] for o in owners},
            )
        )
    return views


def list_btc_batches(store: Store) -> list[BtcBatchView]:
    with store.read() as s:
        return btc_batch_views(s)


def btc_batch_state(store: Store, batch_id: str) -> BtcState:
    with store.read() as s:
        batch = s.get(BtcBatch, batch_id)
        if batch is None:
            raise NotFound(f"no batch {batch_id}")
        return BtcState(batch.state)
