"""A Bitcoin batch after its ceremony: the owners' signature files are checked and stored; at the threshold the
PSBTs are combined and finalized by the node, the final transaction is stored, and only then broadcast; the
worker follows it to confirmation (``BtcFollower``).

Each signature file must be for a batch of this daemon (its id and txid), by an owner of the cold wallet, and its
PSBT must carry exactly the batch's unsigned transaction with signatures that verify (``custody.cold.btcpsbt``):
one bad file refuses them all and stores nothing, and importing a file again changes nothing.

Exactly once: the final transaction is written before it is first sent, and from then on only those bytes are
ever sent again (after a crash, a node restart, or a reorg that drops it from its block). Its inputs are the
batch's; a second payment of the same withdrawals would need the owners to sign another batch, which they refuse.

A confirmed batch is watched for ``settled_watch_blocks`` more blocks (``BtcFollower.watch_settled``): if a reorg
deeper than the confirmation depth takes its block away and it is not deep enough in the new chain, the batch is
``orphaned`` (``batch.rollback_detected`` audited, logged as an error, shown by ``custody status``), its
withdrawals stay confirmed, and its same final transaction is sent again until it is deep enough once more
(``batch.remined``): the batch's signed inputs allow no other payment of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from embit.transaction import Transaction
from sqlalchemy import select

from custody.chain.bitcoin import BitcoinNode, in_mempool, open_wallet
from custody.clock import Clock
from custody.cold import btcbump, btcfamily, btcpsbt, btcwallet
from custody.cold.batches import members
from custody.cold.btcbatches import SENT, BtcState, expire_due
from custody.errors import BatchRefused, BitcoinNodeError, NotAnOwner, NotFound, SignatureForAnotherBatch
from custody.hot.btcfollow import gone
from custody.ledger import audit, freeze
from custody.ledger.states import State
from custody.ledger.transitions import move
from custody.store.db import Store
from custody.store.models import BtcBatch, BtcBatchSignature, BtcColdWallet
from signer.btcbatch import BtcSignature, canonical_psbt

log = logging.getLogger("custody.bitcoin")
# sendrawtransaction's answers that mean the transaction is out there already
RPC_ALREADY_IN_CHAIN = -27
ALREADY = ("already in block chain", "txn-already-in-mempool", "txn-already-known", "already have transaction")
RPC_NOT_IN_WALLET = -5
# A confirmed batch a reorg deeper than the confirmation depth took out of the chain (a ``BtcBatch.state`` beside
# ``custody.cold.btcbatches.BtcState``'s): followed again until it is deep enough once more.
ORPHANED = "orphaned"


@dataclass
class BtcImported:
    batch_id: str
    added: list[str]
    already: list[str]
    signers: list[str]  # every owner whose valid signatures the stored PSBTs hold
    threshold: int
    state: str
    txid: str
    notes: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return len(self.signers) >= self.threshold and self.state == BtcState.EXPORTED


def import_signatures(store: Store, signatures: list[BtcSignature], now: int) -> list[BtcImported]:
    """Check every file first (see the module), then store the new ones in one transaction."""
    by_batch: dict[str, list[BtcSignature]] = {}
    with store.read() as s:
        for sig in signatures:
            batch = s.get(BtcBatch, sig.batch_id)
            if batch is None:
                raise NotFound(f"no batch {sig.batch_id} here: the signature file is for another daemon or batch")
            wallet = s.get_one(BtcColdWallet, batch.wallet)
            _check(sig, batch, wallet)
            by_batch.setdefault(batch.id, []).append(sig)
    results: list[BtcImported] = []
    with store.transaction() as s:
        for batch_id, sigs in by_batch.items():
            batch = s.get_one(BtcBatch, batch_id, with_for_update=True)
            wallet = s.get_one(BtcColdWallet, batch.wallet)
            if batch.state in (BtcState.EXPIRED, BtcState.CANCELLED):
                raise BatchRefused(f"batch {batch_id} is {batch.state}; its signatures can no longer be used")
            stored = {
                r.fingerprint: r
                for r in s.execute(select(BtcBatchSignature).where(BtcBatchSignature.batch_id == batch_id)).scalars()
            }
            result = BtcImported(batch_id, [], [], [], wallet.threshold, batch.state, batch.txid)
            for sig in sigs:
                if sig.fingerprint in stored or sig.fingerprint in result.added:
                    result.already.append(sig.fingerprint)
                    continue
                # Only its signatures, on the batch's own PSBT: what is combined is what was exported.
                psbt = canonical_psbt(btcpsbt.signatures_onto(batch.psbt, sig.psbt).to_string())
                s.add(BtcBatchSignature(batch_id=batch_id, fingerprint=sig.fingerprint, psbt=psbt, imported_at=now))
                audit.append(
                    s, now, "batch.signature_imported", batch_id, {"chain": "bitcoin", "owner": sig.fingerprint}
                )
                result.added.append(sig.fingerprint)
                stored[sig.fingerprint] = BtcBatchSignature(fingerprint=sig.fingerprint, psbt=psbt)
            result.signers = sorted(_signers(wallet, [r.psbt for r in stored.values()]))
            results.append(result)
    return results


def _check(sig: BtcSignature, batch: BtcBatch, wallet: BtcColdWallet) -> None:
    owners = btcwallet.owner_fingerprints(wallet)
    if sig.txid != batch.txid:
        raise SignatureForAnotherBatch(
            f"the signature of {sig.fingerprint} is for transaction {sig.txid[:16]}…, not batch {batch.id} "
            f"({batch.txid[:16]}…)"
        )
    if sig.fingerprint not in owners:
        raise NotAnOwner(
            f"{sig.fingerprint} signed batch {batch.id} but is not an owner of the cold wallet {wallet.wallet}"
        )
    if btcpsbt.unsigned_tx(btcpsbt.parse(sig.psbt)) != btcpsbt.unsigned_tx(btcpsbt.parse(batch.psbt)):
        raise SignatureForAnotherBatch(f"the PSBT of {sig.fingerprint} is not batch {batch.id}'s transaction")
    if sig.fingerprint not in btcpsbt.signed_by(btcpsbt.signatures_onto(batch.psbt, sig.psbt), owners):
        raise SignatureForAnotherBatch(f"the PSBT of {sig.fingerprint} does not hold its signature on every input")


def _signers(wallet: BtcColdWallet, psbts: list[str]) -> set[str]:
    owners = btcwallet.owner_fingerprints(wallet)
    found: set[str] = set()
    for text in psbts:
        found |= btcpsbt.signed_by(btcpsbt.parse(text), owners)
    return found


# -- finalize, store, broadcast ----------------------------------------------------------------------------
def complete_if_ready(store: Store, node: BitcoinNode, batch_id: str, now: int) -> str | None:
    """At the threshold: ``finalize``, then ``broadcast``. Returns the txid once the final transaction is
    stored, or None while signatures are missing (or the batch was released)."""
    txid = finalize(store, node, batch_id, now)
    if txid is not None:
        broadcast(store, node, batch_id, now)
    return txid


def finalize(store: Store, node: BitcoinNode, batch_id: str, now: int) -> str | None:
    """Combine and finalize the stored PSBTs on the node and store the final transaction (batch and withdrawals
    ``signed``); nothing is sent here. A batch already signed keeps the transaction it has."""
    with store.read() as s:
        batch = s.get(BtcBatch, batch_id)
        if batch is None:
            raise NotFound(f"no batch {batch_id}")
        if batch.state != BtcState.EXPORTED:
            return batch.txid if batch.state in (*SENT, BtcState.CONFIRMED) else None
        wallet = s.get_one(BtcColdWallet, batch.wallet)
        psbts = [
            r.psbt for r in s.execute(select(BtcBatchSignature).where(BtcBatchSignature.batch_id == batch_id)).scalars()
        ]
    signers = _signers(wallet, psbts)
    if len(signers) < wallet.threshold:
        return None
    voided = btcfamily.void_if_settled(store, node, batch_id, now)
    if voided is not None:
        raise BatchRefused(f"batch {batch_id} is cancelled and will not be sent: {voided}; nothing is paid twice")
    combined = node.call("combinepsbt", [btcpsbt.for_node(p) for p in [batch.psbt, *psbts]])  # v2 batches: as v0
    final = node.call("finalizepsbt", combined, True)
    if not final.get("complete") or not final.get("hex"):
        raise BatchRefused(f"batch {batch_id}: the node could not finalize the signed PSBTs")
    raw = str(final["hex"])
    if Transaction.from_string(raw).txid().hex() != batch.txid:
        raise BatchRefused(f"batch {batch_id}: the finalized transaction is not the batch's")
    with store.transaction() as s:
        row = s.get_one(BtcBatch, batch_id, with_for_update=True)
        if row.state != BtcState.EXPORTED:
            return row.txid if row.state in (*SENT, BtcState.CONFIRMED) else None
        freeze.refuse_if_frozen(s, f"broadcasting batch {batch_id}")
        row.final_tx, row.state, row.updated_at = raw, BtcState.SIGNED, now
        for w in members(s, batch_id, State.BATCHED):
            move(s, w, State.SIGNED, now, by="batch-execute", batch=batch_id, tx_hash=row.txid)
        audit.append(
            s, now, "batch.signed", batch_id, {"chain": "bitcoin", "txid": row.txid, "signers": sorted(signers)}
        )
    return batch.txid


def broadcast(store: Store, node: BitcoinNode, batch_id: str, now: int) -> bool:
    """Send the stored final transaction (only ever those bytes); record ``broadcast`` the first time. False if
    the node refused it (the batch stays as it is and the follower tries again)."""
    with store.read() as s:
        batch = s.get_one(BtcBatch, batch_id)
        raw, state = batch.final_tx, batch.state
        held = state == BtcState.SIGNED and freeze.active(s) is not None
    if raw is None or state not in (BtcState.SIGNED, BtcState.BROADCAST):
        return False
    if held:  # never sent yet, and payments are frozen: it waits (one already out may be sent again)
        return False
    try:
        node.call("sendrawtransaction", raw)
    except BitcoinNodeError as exc:
        if exc.node_code != RPC_ALREADY_IN_CHAIN and not any(a in exc.node_message for a in ALREADY):
            log.warning("batch %s: the node refused its transaction: %s", batch_id, exc.message)
            return False
    if state == BtcState.SIGNED:
        with store.transaction() as s:
            row = s.get_one(BtcBatch, batch_id, with_for_update=True)
            if row.state == BtcState.SIGNED:
                row.state, row.updated_at = BtcState.BROADCAST, now
                for w in members(s, batch_id, State.SIGNED):
                    move(s, w, State.BROADCAST, now, by="batch-execute", batch=batch_id, tx_hash=row.txid)
                audit.append(s, now, "batch.broadcast", batch_id, {"chain": "bitcoin", "txid": row.txid})
                btcfamily.on_sent(s, row, now)  # a fee bump: its withdrawals follow it
    return True


# -- following ---------------------------------------------------------------------------------------------
class BtcFollower:
    """What the worker does for Bitcoin batches on every pass: expire unsigned ones, send stored transactions
    not yet sent, and follow sent ones to ``confirmations`` deep; a transaction a reorg took out of its block is
    recorded and sent again (the same bytes)."""

    def __init__(
        self,
        store: Store,
        node: BitcoinNode,
        confirmations: int,
        clock: Clock,
        *,
        stuck_after: int = 3600,
        settled_watch_blocks: int = 64,
    ) -> None:
        self.store, self.node, self.confirmations, self.clock = store, node, confirmations, clock
        self.stuck_after, self.settled_watch_blocks = stuck_after, settled_watch_blocks
        self._watched: tuple[int, str] | None = None  # the best block the watch last found nothing at
        self._told: set[str] = set()

    def step(self) -> bool:
        now = self.clock.now()
        with self.store.read() as s:
            due = s.execute(
                select(BtcBatch.id).where(BtcBatch.state == BtcState.EXPORTED, BtcBatch.expires_at <= now).limit(1)
            ).first()
            moving = list(
                s.execute(
                    select(BtcBatch.id, BtcBatch.state, BtcBatch.wallet).where(
                        BtcBatch.state.in_([BtcState.SIGNED, BtcState.BROADCAST])
                    )
                ).all()
            )
        busy = False
        if due is not None:
            with self.store.transaction() as s:
                busy = expire_due(s, self.node, now) > 0
        for batch_id, state, wallet in moving:
            if state == BtcState.SIGNED:
                if btcfamily.void_if_settled(self.store, self.node, batch_id, now) is not None:
                    busy = True
                    continue
                busy = broadcast(self.store, self.node, batch_id, now) or busy
            else:
                busy = self.follow(batch_id, open_wallet(self.node, wallet), now) or busy
        busy = self.watch_settled(now) or busy
        btcwallet.record_balances(self.store, self.node, now)
        return busy

    # -- the watch over confirmed batches ------------------------------------------------------------------
    def watch_settled(self, now: int) -> bool:
        """Check that the batches confirmed in the last ``settled_watch_blocks`` blocks are still in their blocks,
        and move orphaned ones along (the module docstring). True if it found or did something."""
        info = self.node.call("getblockchaininfo")
        head = (int(info["blocks"]), str(info["bestblockhash"]))
        since = head[0] - (self.confirmations - 1) - self.settled_watch_blocks
        with self.store.read() as s:
            recent = []
            if head != self._watched:  # the same best block: the same chain all the way down
                recent = list(
                    s.execute(
                        select(BtcBatch.id, BtcBatch.block_height, BtcBatch.block_hash).where(
                            BtcBatch.state == BtcState.CONFIRMED, BtcBatch.block_height >= since
                        )
                    ).all()
                )
        busy = False
        for batch_id in gone(self.node, [(i, h, b) for i, h, b in recent if h is not None and b is not None]):
            busy = self._left_its_block(batch_id, now) or busy
        with self.store.read() as s:
            orphans = list(
                s.execute(select(BtcBatch.id).where(BtcBatch.state == ORPHANED).order_by(BtcBatch.created_at)).scalars()
            )
        for batch_id in orphans:
            busy = self._follow_orphan(batch_id, now) or busy
        self._watched = None if busy else head
        return busy

    def _where(self, batch: BtcBatch) -> tuple[int, str | None, int]:
        """(depth, block hash, height) of the batch's transaction on the best chain; a negative depth: a
        conflicting transaction is mined."""
        try:
            tx = open_wallet(self.node, batch.wallet).call("gettransaction", batch.txid)
        except BitcoinNodeError as exc:
            if exc.node_code != RPC_NOT_IN_WALLET:
                raise
            return 0, None, 0
        depth = int(tx.get("confirmations", 0))
        return depth, (str(tx["blockhash"]) if depth > 0 else None), int(tx.get("blockheight", 0))

    def _left_its_block(self, batch_id: str, now: int) -> bool:
        """A confirmed batch whose block is no longer in the best chain: recorded where it is now if it is still
        deep enough there, else orphaned (audited, logged as an error). True if it changed anything."""
        with self.store.read() as s:
            batch = s.get_one(BtcBatch, batch_id)
            was = (batch.block_height, batch.block_hash)
            depth, block, height = self._where(batch)
        with self.store.transaction() as s:
            row = s.get_one(BtcBatch, batch_id, with_for_update=True)
            if row.state != BtcState.CONFIRMED or (row.block_height, row.block_hash) != was:
                return False  # another replica saw it first
            data: dict[str, object] = {"chain": "bitcoin", "txid": row.txid, "was_in_block": was[0]}
            if depth >= self.confirmations:
                row.block_hash, row.block_height, row.updated_at = block, height, now
                audit.append(s, now, "batch.remined", batch_id, {**data, "block": height})
                return True
            reason = (
                f"Bitcoin rollback: cold batch {batch_id} ({row.txid}), confirmed in block {was[0]} ({was[1]}), "
                f"left the chain ({f'now {depth} deep' if depth > 0 else 'not in a block now'}) after "
                f"{self.confirmations} confirmation(s); its withdrawals stay confirmed and its same final "
                "transaction is sent again"
            )
            row.state, row.block_hash, row.block_height, row.updated_at = ORPHANED, None, None, now
            audit.append(
                s,
                now,
                "batch.rollback_detected",
                batch_id,
                {**data, "was_block_hash": was[1], "depth_now": depth, "reason": reason},
            )
        log.error("%s", reason)
        return True

    def _follow_orphan(self, batch_id: str, now: int) -> bool:
        """An orphaned batch: deep enough again -> confirmed there again; not in a block nor in the mempool ->
        its same final transaction sent again."""
        with self.store.read() as s:
            batch = s.get_one(BtcBatch, batch_id)
            depth, block, height = self._where(batch)
            raw, txid = batch.final_tx, batch.txid
        if depth >= self.confirmations and block is not None:
            with self.store.transaction() as s:
                row = s.get_one(BtcBatch, batch_id, with_for_update=True)
                if row.state != ORPHANED:
                    return False
                row.state, row.block_hash, row.block_height, row.updated_at = BtcState.CONFIRMED, block, height, now
                audit.append(s, now, "batch.remined", batch_id, {"chain": "bitcoin", "txid": txid, "block": height})
            log.warning("orphaned batch %s is confirmed again: %s in block %d", batch_id, txid, height)
            return True
        if depth < 0:  # only the owners' keys could have made a conflicting transaction: people look into it
            self._tell(batch_id, "orphaned batch %s: a transaction conflicting with %s is mined", batch_id, txid)
            return False
        if depth > 0 or raw is None or in_mempool(self.node, txid):
            return False
        try:
            self.node.call("sendrawtransaction", raw)
        except BitcoinNodeError as exc:
            if exc.node_code != RPC_ALREADY_IN_CHAIN and not any(a in exc.node_message for a in ALREADY):
                self._tell(batch_id, "orphaned batch %s: the node refuses its transaction: %s", batch_id, exc.message)
                return False
        with self.store.transaction() as s:
            audit.append(
                s,
                now,
                "batch.rebroadcast",
                batch_id,
                {"chain": "bitcoin", "txid": txid, "why": "confirmed, then taken out of the chain by a reorg"},
            )
        return True

    def _tell(self, key: str, message: str, *args: object) -> None:
        if key + message not in self._told:
            self._told.add(key + message)
            log.error(message, *args)

    def follow(self, batch_id: str, watch: BitcoinNode, now: int) -> bool:
        with self.store.read() as s:
            batch = s.get_one(BtcBatch, batch_id)
            txid, seen, sent_at = batch.txid, batch.block_hash, batch.updated_at
        try:
            tx = watch.call("gettransaction", txid)
        except BitcoinNodeError as exc:
            if exc.node_code != RPC_NOT_IN_WALLET:
                raise
            tx = {"confirmations": 0}
        depth = int(tx.get("confirmations", 0))
        if depth < 0:
            # A transaction spending one of its coins is mined instead: another of its family (a fee bump, or
            # the one it bumps) settles the withdrawals once deep enough. Anything else only the owners' keys
            # could have made; nothing is paid twice, an operator looks into it (the batch stays broadcast).
            if btcfamily.settle_conflict(self.store, self.node, batch_id, self.confirmations, now):
                return True
            log.warning("batch %s: transaction %s conflicts with one mined %d blocks deep", batch_id, txid, -depth)
            return False
        block = tx.get("blockhash") if depth > 0 else None
        if depth >= self.confirmations:
            self._confirm(batch_id, str(block), int(tx.get("blockheight", 0)), now)
            return True
        if block is not None and block != seen:
            with self.store.transaction() as s:
                row = s.get_one(BtcBatch, batch_id, with_for_update=True)
                row.block_hash, row.block_height = str(block), int(tx.get("blockheight", 0))
            return True
        if block is None and seen is not None:
            # Seen in a block that is no longer on the best chain: back to waiting, and the same bytes again.
            with self.store.transaction() as s:
                row = s.get_one(BtcBatch, batch_id, with_for_update=True)
                audit.append(s, now, "batch.reorged", batch_id, {"chain": "bitcoin", "txid": txid, "block": seen})
                row.block_hash, row.block_height, row.updated_at = None, None, now
            broadcast(self.store, self.node, batch_id, now)
            return True
        if block is None and depth == 0 and not in_mempool(self.node, txid):
            broadcast(self.store, self.node, batch_id, now)  # forgotten by the node's mempool: send it again
        if block is None and depth == 0 and now - sent_at >= self.stuck_after:
            with self.store.read() as s:
                noted = btcbump.is_stuck(s, s.get_one(BtcBatch, batch_id))
            if not noted:
                with self.store.transaction() as s:
                    row = s.get_one(BtcBatch, batch_id, with_for_update=True)
                    btcbump.note_stuck(s, row, now, self.stuck_after)
        return False

    def _confirm(self, batch_id: str, block: str, height: int, now: int) -> None:
        with self.store.transaction() as s:
            row = s.get_one(BtcBatch, batch_id, with_for_update=True)
            if row.state != BtcState.BROADCAST:
                return
            for w in members(s, batch_id, State.BROADCAST):
                w.tx_hash = row.txid
                move(s, w, State.CONFIRMED, now, by="batch-execute", batch=batch_id, tx_hash=row.txid, block=height)
            row.state, row.block_hash, row.block_height, row.updated_at = BtcState.CONFIRMED, block, height, now
            audit.append(s, now, "batch.confirmed", batch_id, {"chain": "bitcoin", "txid": row.txid, "block": height})
            btcfamily.void_bumps_of(s, self.node, row, now)  # a bump not sent yet never will be
