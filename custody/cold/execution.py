"""A cold batch after its ceremony: the owners' signature files are checked and stored, the batch is executed at
quorum from the hot wallet through the hot sender's interface (``custody.hot.sender.TransactionSender``), and the
sender settles it through ``BatchSettler`` whichever version of the execution is mined."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.chain import safe as safe_contract
from custody.chain.ethereum import EthereumNode, Receipt
from custody.cold.batches import BatchState, broadcast, members, reconcile, settle
from custody.errors import (
    BatchRefused,
    BatchWaitingForNonce,
    CallReverted,
    NotAnOwner,
    NotFound,
    SignatureForAnotherBatch,
)
from custody.hot.sender import Call, TransactionSender
from custody.ledger import audit, freeze
from custody.ledger.states import State
from custody.ledger.transitions import move
from custody.store.db import Store
from custody.store.models import Batch, BatchSignature, HotTransaction
from signer.batchfile import Batch as BatchDoc
from signer.batchfile import OwnerSignature, parse_batch_file
from signer.safetx import pack_signatures


# -- signatures --------------------------------------------------------------------------------------------
@dataclass
class Imported:
    batch_id: str
    added: list[str]
    already: list[str]
    signatures: int
    threshold: int
    state: str

    @property
    def ready(self) -> bool:
        """Enough signatures stored to execute it now."""
        return self.signatures >= self.threshold and self.state == BatchState.EXPORTED


def import_signatures(store: Store, node: EthereumNode, signatures: list[OwnerSignature], now: int) -> list[Imported]:
    """Check every signature first (owner recovered, owner of the Safe now, for this very batch); then store
    the new ones in one transaction. One bad file refuses them all and stores nothing."""
    by_batch: dict[str, list[tuple[OwnerSignature, str]]] = {}
    with store.read() as s:
        for sig in signatures:
            batch = s.get(Batch, sig.batch_id)
            if batch is None:
                raise NotFound(f"no batch {sig.batch_id} here: the signature file is for another daemon or batch")
            _check_same_batch(sig, batch)
            owner = sig.recovered_owner()
            by_batch.setdefault(batch.id, []).append((sig, owner))
    results: list[Imported] = []
    for batch_id, items in by_batch.items():
        with store.read() as s:
            batch = s.get_one(Batch, batch_id)
        owners = set(safe_contract.owners(node, batch.safe))
        for _, owner in items:
            if owner not in owners:
                raise NotAnOwner(f"{owner} signed batch {batch_id} but is not an owner of the Safe {batch.safe}")
        if batch.state in (BatchState.EXPIRED, BatchState.CANCELLED, BatchState.STALE):
            raise BatchRefused(f"batch {batch_id} is {batch.state}; its signatures can no longer be used")
        results.append(Imported(batch_id, [], [], 0, safe_contract.threshold(node, batch.safe), batch.state))
    with store.transaction() as s:
        for result in results:
            stored = {
                row.owner: row
                for row in s.execute(select(BatchSignature).where(BatchSignature.batch_id == result.batch_id)).scalars()
            }
            for sig, owner in by_batch[result.batch_id]:
                if owner in stored or owner in result.added:
                    result.already.append(owner)
                    continue
                s.add(
                    BatchSignature(
                        batch_id=result.batch_id, owner=owner, signature=sig.signature.hex(), imported_at=now
                    )
                )
                audit.append(s, now, "batch.signature_imported", result.batch_id, {"owner": owner})
                result.added.append(owner)
            result.signatures = len(stored) + len(result.added)
    return results


def _check_same_batch(sig: OwnerSignature, batch: Batch) -> None:
    doc = parse_batch_file(batch.raw).batch
    if (
        "0x" + sig.safe_tx_hash.hex() != batch.safe_tx_hash
        or sig.safe != batch.safe
        or sig.safe_nonce != batch.safe_nonce
        or sig.chain_id != doc.chain_id
    ):
        raise SignatureForAnotherBatch(
            f"the signature of {sig.owner} is for SafeTx {('0x' + sig.safe_tx_hash.hex())[:18]}… on Safe {sig.safe} "
            f"nonce {sig.safe_nonce}, not batch {batch.id} ({batch.safe_tx_hash[:18]}… nonce {batch.safe_nonce})"
        )


# -- execution ---------------------------------------------------------------------------------------------
def execute_if_ready(
    store: Store, node: EthereumNode, sender: TransactionSender, batch_id: str, now: int
) -> str | None:
    """At quorum, sign ``execTransaction`` from the hot wallet (the executor) and store it; the hot sender
    broadcasts and follows it, and ``BatchSettler`` settles the batch. Returns the transaction hash, or None while
    signatures are missing."""
    with store.read() as s:
        batch = s.get(Batch, batch_id)
        if batch is None:
            raise NotFound(f"no batch {batch_id}")
        if batch.state != BatchState.EXPORTED:
            return batch.tx_hash if batch.state in (BatchState.EXECUTING, BatchState.EXECUTED) else None
        stored = {
            r.owner: bytes.fromhex(r.signature)
            for r in s.execute(select(BatchSignature).where(BatchSignature.batch_id == batch_id)).scalars()
        }
        doc: BatchDoc = parse_batch_file(batch.raw).batch
    owners = set(safe_contract.owners(node, doc.safe))
    usable = {owner: sig for owner, sig in stored.items() if owner in owners}
    if len(usable) < safe_contract.threshold(node, doc.safe):
        return None
    onchain = safe_contract.nonce(node, doc.safe)
    if onchain < doc.safe_nonce:
        raise BatchWaitingForNonce(
            f"batch {batch_id} has Safe nonce {doc.safe_nonce}, the Safe is at {onchain}: the batch holding nonce "
            f"{onchain} must execute (or be cancelled by a newer batch) first",
        )
    if onchain > doc.safe_nonce:
        reconcile(store, node, now)
        raise BatchRefused(f"batch {batch_id}'s Safe nonce {doc.safe_nonce} has already been used on chain")
    data = safe_contract.exec_transaction_call(doc.safe_tx, pack_signatures(usable))
    try:
        node.call(doc.safe, data, sender=sender.address)
    except CallReverted as exc:
        raise BatchRefused(
            f"executing batch {batch_id} would revert now ({exc.message}); is the Safe funded?"
        ) from None
    gas = node.estimate_gas(sender.address, doc.safe, 0, data)
    fees = sender.fees()
    with store.transaction() as s:
        row = s.get_one(Batch, batch_id, with_for_update=True)
        if row.state != BatchState.EXPORTED:
            return row.tx_hash
        freeze.refuse_if_frozen(s, f"executing batch {batch_id}")
        version = sender.sign_at_next_nonce(s, Call(doc.safe, 0, data, gas, fees), now, batch_id=batch_id)
        row.state, row.tx_hash, row.updated_at = BatchState.EXECUTING, version.tx_hash, now
        for w in members(s, batch_id, State.BATCHED):
            move(s, w, State.SIGNED, now, by="batch-execute", batch=batch_id, tx_hash=version.tx_hash)
        audit.append(
            s,
            now,
            "batch.executing",
            batch_id,
            {"tx_hash": version.tx_hash, "signers": sorted(usable), "nonce": version.nonce},
        )
    return version.tx_hash


class BatchSettler:
    """What the hot sender calls as a batch's execution is sent and settles (``custody.hot.sender.Settler``)."""

    def broadcast(self, s: Session, tx: HotTransaction, now: int) -> bool:
        broadcast(s, _batch_of(tx), tx.tx_hash, now)
        return True  # recorded by the withdrawals' moves, as ever: no separate hottx.broadcast entry

    def settle(self, s: Session, tx: HotTransaction, receipt: Receipt, now: int) -> None:
        settle(s, _batch_of(tx), tx.tx_hash, receipt.success, receipt.block_number, now)

    def remined(self, s: Session, tx: HotTransaction) -> None:
        """Executed again after a rollback: the batch and its withdrawals stay as they were settled."""


def _batch_of(tx: HotTransaction) -> str:
    if tx.batch_id is None:
        raise ValueError(f"transaction {tx.tx_hash} executes no batch")
    return tx.batch_id
