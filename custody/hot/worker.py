"""The hot worker: pays `queued_hot` withdrawals from the hot EOA, exactly once, whatever crashes.

Each payment goes through these steps, each its own database transaction:

1. sign:      claim one queued withdrawal, allocate the wallet's next nonce under a lock on its row, sign an
              EIP-1559 transaction, and store the raw bytes (withdrawal -> signed). Nothing is broadcast yet.
2. broadcast: send the stored bytes (withdrawal -> broadcast). After a crash, stored bytes are simply sent
              again: the same bytes can only be mined once.
3. follow:    read receipts. Deep enough (``confirmations`` blocks, the including one counted) -> confirmed (or
              failed if it reverted); gone from the chain after being seen (a reorg) -> broadcast again. Not
              mined, and the node does not know it (restarted without its mempool, or dropped it) -> the same
              stored bytes are sent again at once, every pass. Known to the node but not mined for
              ``stuck_after_seconds`` -> a replacement at the same nonce with fees at least 12.5 % higher, only
              for the lowest nonce still waiting (the later ones wait behind it, not for fees), and decided under
              the wallet's row lock, so two replicas never both sign one. Whichever version is mined settles
              the withdrawal.
4. watch:     a settled transaction is not forgotten. For ``settled_watch_blocks`` blocks after its
              confirmation its block must stay canonical, and the chain's nonce for the wallet must never fall
              below the highest settled one. If either fails (a rollback deeper than the confirmation depth),
              the service freezes itself (``freeze.ROLLBACK``), records ``chain.rollback_detected``, and marks
              those transactions ``orphaned``: their withdrawals stay ``confirmed``, nothing is queued or signed
              again. An orphan found mined again (the network re-included it) is ``mined`` again; the others
              are held until a quorum lifts the freeze, which is the decision to send their same stored bytes
              again (each can be mined at most once, at its own nonce).

A withdrawal is never signed twice at two nonces: it is claimed only while `queued_hot`, and leaves that state
in the same transaction that stores its first signed version.

The hot wallet is also the executor of cold batches (``execTransaction`` on the Safe, see ``custody.cold.batches``)
and sends the call that creates the Safe. Those go through the same nonce allocation, storage and following;
only what a mined version settles differs (a withdrawal, a batch's withdrawals, or nothing).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_typing import HexStr
from hexbytes import HexBytes
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from custody import logs, outage
from custody.chain.ethereum import NONCE_USED, SENT, EthereumNode, Receipt
from custody.clock import Clock
from custody.cold import batches
from custody.errors import BroadcastRefused, ConfigError
from custody.hot.rebalance import rebalance
from custody.ledger import audit, freeze
from custody.ledger.policy import PolicyCache
from custody.ledger.states import State
from custody.ledger.transitions import move
from custody.store.db import Store
from custody.store.models import ChainBalance, ColdWallet, HotTransaction, HotWallet, Withdrawal
from signer.safetx import transfer_call

log = logging.getLogger("custody.hotwallet")
FAILPOINT_ENV = "CUSTODY_FAILPOINT"
SIGNED, BROADCAST, MINED, REPLACED = "signed", "broadcast", "mined", "replaced"
# Mined and settled, then its block left the chain: a rollback deeper than the confirmation depth.
ORPHANED = "orphaned"


def failpoint(name: str) -> None:
    """Crash tests name a point here (CUSTODY_FAILPOINT=after_sign …) and the process dies on the spot."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def bump(value: int) -> int:
    """At least 12.5 % more, rounded up: what nodes require of a replacement."""
    return value + (value + 7) // 8


@dataclass(frozen=True)
class WorkerSettings:
    chain_id: int
    confirmations: int  # blocks, the including one counted: 1 = mined in the newest block
    max_fee_per_gas: int
    stuck_after_seconds: int
    settled_watch_blocks: int = 64  # after confirmation, blocks during which a settled block is re-checked


@dataclass
class _Watched:
    """What the last watch pass compared, so an unchanged chain is not asked again: a head with the same hash
    is the same chain, all the way down."""

    settled: tuple[tuple[int, str], int] | None = None  # the head and the highest settled nonce checked
    orphans: tuple[tuple[int, str], bool] | None = None  # the head and freeze under which orphans were looked at


@dataclass(frozen=True)
class _Settled:
    id: int
    nonce: int
    mined_block: int
    mined_block_hash: str | None


class HotWorker:
    def __init__(
        self, store: Store, node: EthereumNode, account: LocalAccount, settings: WorkerSettings, clock: Clock
    ) -> None:
        if settings.confirmations < 1:
            raise ConfigError("[chain] confirmations must be at least 1 (1 = counted once it is in a block)")
        if settings.settled_watch_blocks < 0:
            raise ConfigError("[chain] settled_watch_blocks must not be negative")
        self.store, self.node, self.account, self.settings, self.clock = store, node, account, settings, clock
        self.address: str = account.address
        self.policies = PolicyCache()
        self._registered = False
        self._watched = _Watched()
        self._told: set[str] = set()  # transactions whose refusal was logged already (one line, not one a pass)

    def __repr__(self) -> str:
        return f"HotWorker({self.address})"

    # -- set-up -----------------------------------------------------------------------------------
    def ensure_wallet(self) -> None:
        """Register the wallet once, starting at the chain's nonce; afterwards the database decides."""
        self.node.check_chain()
        try:
            with self.store.transaction() as s:
                if s.get(HotWallet, self.address) is None:
                    s.add(
                        HotWallet(
                            address=self.address,
                            chain_id=self.settings.chain_id,
                            next_nonce=self.node.transaction_count(self.address),
                            created_at=self.clock.now(),
                        )
                    )
                    audit.append(
                        s, self.clock.now(), "hotwallet.registered", self.address, {"chain_id": self.settings.chain_id}
                    )
        except IntegrityError:  # two replicas starting together: the other one registered it first
            with self.store.read() as s:
                if s.get(HotWallet, self.address) is None:
                    raise
        self._registered = True

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event, idle: float = 0.5) -> None:
        """Passes until ``stop``. The node or the database going away is one log line, and one more when it is
        back (``custody.outage``), with backoff in between; any other failure is logged with its traceback and
        backed off too, so one bad row or answer cannot stop payments or spin."""
        loop = outage.Loop("hot worker", log, idle=idle)

        def one_pass() -> bool:
            logs.REQUEST_ID.set(logs.new_id("w-"))  # every line of one pass carries the same id
            return self.step()

        loop.forever(one_pass, stop)

    def step(self, batch: int = 20) -> bool:
        """One pass: check what was settled still holds, refresh balances, move stored transactions forward,
        sign new ones. True if it did work."""
        if not self._registered:
            self.ensure_wallet()
        watched = self.watch()
        self.refresh_balances()
        busy = bool(rebalance(self.store, self.policies, self.clock, self.address))
        busy = batches.housekeeping(self.store, self.node, self.clock.now()) or busy
        busy = self.follow() or busy
        for _ in range(batch):
            if not self.sign_next():
                break
            busy = True
        return self.follow() or busy or watched

    def frozen(self) -> bool:
        with self.store.read() as s:
            return freeze.active(s) is not None

    # -- 4. watch what was settled -----------------------------------------------------------------
    def watch(self) -> bool:
        """Check that what was settled still holds on chain, and move orphans (settled transactions whose block
        left the chain) forward. True if it found or did something."""
        head = self.node.head()
        with self.store.read() as s:  # the database first: what it says was settled, the chain then confirmed
            frozen = freeze.active(s) is not None
            orphans = list(
                s.execute(
                    select(HotTransaction)
                    .where(HotTransaction.wallet == self.address, HotTransaction.state == ORPHANED)
                    .order_by(HotTransaction.nonce)
                ).scalars()
            )
            top = s.execute(
                select(HotTransaction.nonce)
                .where(HotTransaction.wallet == self.address, HotTransaction.state == MINED)
                .order_by(HotTransaction.nonce.desc())
                .limit(1)
            ).scalar_one_or_none()
            recent: list[_Settled] = []
            if top is not None and (head, top) != self._watched.settled:
                since = head[0] - (self.settings.confirmations - 1) - self.settings.settled_watch_blocks
                recent = self._recent_settled(s, since)
        busy = False
        if top is not None and (head, top) != self._watched.settled:
            busy = self._check_settled(head, top, recent)
            self._watched.settled = None if busy else (head, top)
        if orphans and (head, frozen) != self._watched.orphans:  # a receipt appears only with a new block
            busy = self._orphans(orphans, head[0], frozen) or busy
            self._watched.orphans = (head, frozen)
        return busy

    def _recent_settled(self, s: Session, since_block: int, chunk: int = 500) -> list[_Settled]:
        """Settled versions mined at or after ``since_block``: the newest nonces (a later nonce is never in an
        earlier block), read newest first along the (wallet, nonce) index until one is older."""
        out: list[_Settled] = []
        below: int | None = None
        columns = (HotTransaction.id, HotTransaction.nonce, HotTransaction.mined_block, HotTransaction.mined_block_hash)
        while True:
            query = select(*columns).where(HotTransaction.wallet == self.address, HotTransaction.state == MINED)
            if below is not None:
                query = query.where(HotTransaction.nonce < below)
            rows = s.execute(query.order_by(HotTransaction.nonce.desc()).limit(chunk)).all()
            for row_id, nonce, block, block_hash in rows:
                if block is None:
                    continue
                if block < since_block:
                    return out
                out.append(_Settled(row_id, nonce, block, block_hash))
            if len(rows) < chunk:
                return out
            below = rows[-1][1]

    def _check_settled(self, head: tuple[int, str], top: int, recent: list[_Settled]) -> bool:
        """Compare what was settled with the chain now; on any contradiction, freeze (``_rolled_back``)."""
        # at the head the watch compares against, not "latest": a node answering from another height must not
        # look like a rollback
        count = self.node.transaction_count(self.address, head[0])
        why: dict[int, str] = {}  # row id -> what contradicts it
        if count <= top:
            with self.store.read() as s:
                gone = s.execute(
                    select(HotTransaction.id, HotTransaction.nonce).where(
                        HotTransaction.wallet == self.address,
                        HotTransaction.state == MINED,
                        HotTransaction.nonce >= count,
                        HotTransaction.nonce <= top,
                    )
                ).all()
            for row_id, nonce in gone:
                why[row_id] = (
                    f"the chain's nonce for the hot wallet is {count}, but nonce {nonce} was settled "
                    f"(nonces up to {top} were)"
                )
        canonical: dict[int, str | None] = {}
        for row in recent:
            if row.mined_block_hash is None:
                continue
            if row.mined_block not in canonical:
                canonical[row.mined_block] = self.node.block_hash(row.mined_block)
            now_there = canonical[row.mined_block]
            if now_there != row.mined_block_hash:
                what = f"now {now_there}" if now_there else f"the chain now ends at block {head[0]}"
                why.setdefault(
                    row.id, f"block {row.mined_block} ({row.mined_block_hash}) is no longer canonical ({what})"
                )
        if not why:
            return False
        self._rolled_back(why, head[0], count)
        return True

    def _rolled_back(self, why: dict[int, str], head: int, count: int) -> None:
        """Settled transactions contradicted by the chain: freeze, record ``chain.rollback_detected``, and mark
        them orphaned. Their withdrawals stay as they are; nothing is queued or signed again."""
        with self.store.read() as s:
            rows = list(s.execute(select(HotTransaction).where(HotTransaction.id.in_(why))).scalars())
        where = {}
        for row in rows:  # where each one is now, for the operators (mined again elsewhere, or nowhere)
            receipt = self._canonical_receipt(row.tx_hash)
            where[row.id] = "not on chain" if receipt is None else f"in block {receipt.block_number} now"
        now = self.clock.now()
        with self.store.transaction() as s:
            locked = list(
                s.execute(
                    select(HotTransaction)
                    .where(HotTransaction.id.in_(why))
                    .order_by(HotTransaction.nonce)
                    .with_for_update()
                ).scalars()
            )
            seen = {r.id: (r.mined_block, r.mined_block_hash) for r in rows}
            fresh = [r for r in locked if r.state == MINED and (r.mined_block, r.mined_block_hash) == seen.get(r.id)]
            if not fresh:
                return  # another replica recorded it first
            entries = [
                {
                    "tx_hash": r.tx_hash,
                    "nonce": r.nonce,
                    "withdrawal": r.withdrawal_id,
                    "batch": r.batch_id,
                    "was_in_block": r.mined_block,
                    "was_block_hash": r.mined_block_hash,
                    "why": why[r.id],
                    "now": where.get(r.id, "not on chain"),
                }
                for r in fresh
            ]
            nonces = [r.nonce for r in fresh]
            span = str(nonces[0]) if len(nonces) == 1 else f"{nonces[0]}..{nonces[-1]}"
            reason = (
                f"chain rollback detected: {len(fresh)} settled hot-wallet transaction(s) (nonce {span}) left the "
                f"chain after {self.settings.confirmations} confirmation(s): {why[fresh[0].id]}. Their withdrawals "
                "stay confirmed; nothing is sent or signed again until a quorum lifts this freeze, which sends the "
                "same signed transactions again"
            )
            held, _ = freeze.freeze(s, now, reason, freeze.ROLLBACK, own=True)
            for r in fresh:
                r.state, r.mined_block, r.mined_block_hash = ORPHANED, None, None
            audit.append(
                s,
                now,
                "chain.rollback_detected",
                held.id,
                {"freeze": held.id, "head": head, "chain_nonce": count, "reason": reason, "transactions": entries},
            )
        log.error("%s (freeze %s)", reason, held.id)

    def _orphans(self, orphans: list[HotTransaction], head: int, frozen: bool) -> bool:
        """Each orphan: if a version at its nonce is mined again deep enough, it is settled there again (the
        network re-included it); otherwise, once no freeze is in force, its same bytes are sent again. True if
        one of them moved."""
        moved = False
        for orphan in orphans:
            with self.store.read() as s:
                versions = _versions(s, orphan)
            landed = None
            for version in versions:
                receipt = self._canonical_receipt(version.tx_hash)
                if receipt is not None:
                    landed = (version, receipt)
                    break
            if landed is not None:
                if head - landed[1].block_number + 1 >= self.settings.confirmations:
                    self._remined(orphan, *landed)
                    moved = True
                continue
            if frozen or self.node.knows(orphan.tx_hash):
                continue
            try:
                outcome = self.node.send_raw(bytes.fromhex(orphan.raw))
            except BroadcastRefused as exc:
                self._tell(orphan, "orphaned nonce %s: the node refuses it: %s", orphan.nonce, exc)
                continue
            if outcome == SENT:
                with self.store.transaction() as s:
                    audit.append(
                        s,
                        self.clock.now(),
                        "hottx.rebroadcast",
                        _subject(orphan),
                        {
                            "tx_hash": orphan.tx_hash,
                            "nonce": orphan.nonce,
                            "attempt": orphan.attempt,
                            "why": "orphaned by a chain rollback; sent again since no freeze is in force",
                        },
                    )
                moved = True
        return moved

    def _remined(self, orphan: HotTransaction, version: HotTransaction, receipt: Receipt) -> None:
        """A version at an orphan's nonce is on chain again, deep enough: settled there again. Its withdrawal
        stays confirmed; if the version now reverted, the payment did not happen after all: freeze."""
        now = self.clock.now()
        with self.store.transaction() as s:
            rows = _versions(s, orphan, lock=True)
            if not any(r.state == ORPHANED for r in rows):
                return
            for r in rows:
                r.state = MINED if r.id == version.id else REPLACED
            mined = next(r for r in rows if r.id == version.id)
            mined.mined_block, mined.mined_block_hash = receipt.block_number, receipt.block_hash
            data = {
                "tx_hash": version.tx_hash,
                "nonce": version.nonce,
                "block": receipt.block_number,
                "success": receipt.success,
            }
            audit.append(s, now, "hottx.remined", _subject(version), data)
            if version.withdrawal_id is not None:
                w = s.execute(select(Withdrawal).where(Withdrawal.id == version.withdrawal_id)).scalar_one()
                w.tx_hash = version.tx_hash
            if not receipt.success:
                reason = (
                    f"chain rollback detected: the transaction at nonce {version.nonce} ({_subject(version)}), "
                    f"settled before a rollback, reverted when mined again in block {receipt.block_number}; what it "
                    "settled did not happen"
                )
                row, _ = freeze.freeze(s, now, reason, freeze.ROLLBACK, own=True)
                audit.append(s, now, "chain.rollback_detected", row.id, {"freeze": row.id, "reason": reason, **data})
                log.error("%s (freeze %s)", reason, row.id)

    # -- balances ---------------------------------------------------------------------------------
    def refresh_balances(self) -> None:
        """Read the hot wallet's and, once it exists, the cold wallet's balance of every asset at one block."""
        with self.store.read() as s:
            assets = self.policies.get(s).policy.assets
            cold = s.execute(select(ColdWallet.address).limit(1)).scalar_one_or_none()
        block = self.node.block_number()
        wallets = [self.address] + ([cold] if cold else [])
        readings = {
            (wallet, symbol): self.node.balance(wallet, rule.contract, block)
            for wallet in wallets
            for symbol, rule in assets.items()
        }
        now = self.clock.now()
        for tries in (1, 2):
            try:
                with self.store.transaction() as s:
                    for (wallet, symbol), amount in readings.items():
                        row = s.get(ChainBalance, (wallet, symbol))
                        if row is None:
                            s.add(ChainBalance(wallet=wallet, asset=symbol, amount=amount, block=block, updated_at=now))
                        else:
                            row.amount, row.block, row.updated_at = amount, block, now
                return
            except IntegrityError:  # another replica added the first reading a moment ago: update it instead
                if tries == 2:
                    raise

    # -- 1. sign ----------------------------------------------------------------------------------
    def sign_next(self) -> bool:
        max_fee, priority = self.node.fees(self.settings.max_fee_per_gas)
        now = self.clock.now()
        with self.store.transaction() as s:
            if freeze.active(s) is not None:
                return False
            query = select(Withdrawal).where(Withdrawal.state == State.QUEUED_HOT).order_by(Withdrawal.seq).limit(1)
            if self.store.is_postgres:
                query = query.with_for_update(skip_locked=True)
            w = s.execute(query).scalar_one_or_none()
            if w is None:
                return False
            policy = self.policies.get(s).policy
            if not freeze.check_outflow(s, policy, w, now):
                log.warning("automatic freeze: hot outflow limit of %s reached", w.asset)
                return False
            rule = policy.assets.get(w.asset)
            if rule is None:
                move(s, w, State.CANCELLED, now, by="hot-worker", reason=f"asset {w.asset} is no longer in the policy")
                return True
            to, value, data = transfer_call(rule.contract, w.destination, w.amount)
            gas = self.node.estimate_gas(self.address, to, value, data)
            version = self.sign_at_next_nonce(s, to, value, data, gas, (max_fee, priority), now, withdrawal_id=w.id)
            move(s, w, State.SIGNED, now, by="hot-worker", nonce=version.nonce, tx_hash=version.tx_hash)
        failpoint("after_store")
        return True

    def sign_at_next_nonce(
        self,
        s: Session,
        to: str,
        value: int,
        data: bytes,
        gas: int,
        fees: tuple[int, int],
        now: int,
        *,
        withdrawal_id: str | None = None,
        batch_id: str | None = None,
    ) -> HotTransaction:
        """Sign at the wallet's next nonce, under a lock on its row, and store the version in ``s`` (the
        caller's transaction, which also records why). Nothing is broadcast until it commits."""
        wallet = s.execute(select(HotWallet).where(HotWallet.address == self.address).with_for_update()).scalar_one()
        version = self._sign(withdrawal_id, batch_id, wallet.next_nonce, 0, to, value, data, gas, *fees, now)
        failpoint("after_sign")
        s.add(version)
        wallet.next_nonce += 1
        return version

    def sign_call(self, to: str, value: int, data: bytes, *, gas: int | None = None) -> HotTransaction:
        """A plain call from the hot wallet (creating the Safe): stored, then sent and followed like any other."""
        fees = self.node.fees(self.settings.max_fee_per_gas)
        gas = gas or self.node.estimate_gas(self.address, to, value, data)
        now = self.clock.now()
        with self.store.transaction() as s:
            version = self.sign_at_next_nonce(s, to, value, data, gas, fees, now)
            audit.append(s, now, "hottx.call_signed", _subject(version), {"to": to, "nonce": version.nonce})
        return version

    # -- 2. broadcast and 3. follow ----------------------------------------------------------------
    def follow(self) -> bool:
        with self.store.read() as s:
            pending = list(
                s.execute(
                    select(HotTransaction)
                    .where(HotTransaction.wallet == self.address, HotTransaction.state.in_((SIGNED, BROADCAST)))
                    .order_by(HotTransaction.nonce, HotTransaction.attempt)
                ).scalars()
            )
        if not pending:
            return False
        head = self.node.block_number()
        frozen = self.frozen()
        by_nonce: dict[int, list[HotTransaction]] = {}
        for tx in pending:
            by_nonce.setdefault(tx.nonce, []).append(tx)
        lower_waiting = False  # a lower nonce is still waiting to be mined: later ones queue behind it
        for nonce in sorted(by_nonce):
            versions = by_nonce[nonce]
            landed = False
            for tx in versions:
                if tx.state == SIGNED:
                    if not frozen:  # signed before the freeze: held, nonce and all, until a quorum unfreezes
                        self.broadcast(tx)
                    continue
                receipt = self._canonical_receipt(tx.tx_hash)
                if receipt is None:
                    if tx.mined_block is not None:
                        self._reorged(tx, frozen)
                    continue
                landed = True
                if (tx.mined_block, tx.mined_block_hash) != (receipt.block_number, receipt.block_hash):
                    self._mined_at(tx, receipt.block_number, receipt.block_hash)
                if head - receipt.block_number + 1 >= self.settings.confirmations:
                    self.settle(tx, receipt)
            if not landed:
                self._waiting(versions[-1], lowest=not lower_waiting, frozen=frozen)
                lower_waiting = True
        return True

    def _canonical_receipt(self, tx_hash: str) -> Receipt | None:
        receipt = self.node.receipt(tx_hash)
        if receipt is not None and self.node.block_hash(receipt.block_number) != receipt.block_hash:
            return None  # its block is no longer canonical
        return receipt

    def _waiting(self, tx: HotTransaction, *, lowest: bool, frozen: bool) -> None:
        """The newest version at a nonce none of whose versions is mined: send its bytes again if the node
        has forgotten it; replace it only if the node has it, it is the lowest nonce waiting, and it has waited
        ``stuck_after_seconds`` (then it is the fee that keeps it out of blocks, not a nonce before it)."""
        if tx.state != BROADCAST or tx.mined_block is not None or frozen:
            return  # not sent yet (the loop sends it), reorged out just now (sent again), or held by a freeze
        if not self.node.knows(tx.tx_hash) and self.rebroadcast(tx):
            return
        # the node has it, or refuses its bytes again (a fee too low for its mempool now): a bump is the way out
        waited = None if tx.broadcast_at is None else self.clock.now() - tx.broadcast_at
        if lowest and waited is not None and waited >= self.settings.stuck_after_seconds:
            self.replace(tx)

    def broadcast(self, tx: HotTransaction) -> None:
        try:
            self.node.send_raw(bytes.fromhex(tx.raw))
        except BroadcastRefused as exc:
            self._tell(tx, "nonce %s attempt %s not broadcast yet: %s", tx.nonce, tx.attempt, exc)
            return
        failpoint("after_broadcast")
        now = self.clock.now()
        with self.store.transaction() as s:
            row = s.get_one(HotTransaction, tx.id, with_for_update=True)
            if row.state != SIGNED:
                return
            row.state, row.broadcast_at = BROADCAST, now
            if row.batch_id is not None:
                batches.broadcast(s, row.batch_id, row.tx_hash, now)
                return
            w = None
            if row.withdrawal_id is not None:
                w = s.execute(
                    select(Withdrawal).where(Withdrawal.id == row.withdrawal_id).with_for_update()
                ).scalar_one()
            if w is not None and w.state == State.SIGNED:
                move(s, w, State.BROADCAST, now, by="hot-worker", tx_hash=row.tx_hash)
            else:
                audit.append(s, now, "hottx.broadcast", _subject(row), {"tx_hash": row.tx_hash, "attempt": row.attempt})

    def rebroadcast(self, tx: HotTransaction) -> bool:
        """The node does not know a version it was sent (it restarted without its mempool, or dropped it): the
        same stored bytes again, at once. Its wait for ``stuck_after_seconds`` starts again from now, since
        the node has had it only from now. False if the node refuses the bytes (then only a replacement with
        higher fees can move the nonce)."""
        try:
            outcome = self.node.send_raw(bytes.fromhex(tx.raw))
        except BroadcastRefused as exc:
            self._tell(tx, "nonce %s attempt %s: the node lost it and refuses it again: %s", tx.nonce, tx.attempt, exc)
            return False
        if outcome == NONCE_USED:  # another version is mined (its receipt settles it) or the nonce went elsewhere
            self._tell(tx, "nonce %s attempt %s: the node says the nonce is used", tx.nonce, tx.attempt)
            return True
        if outcome != SENT:
            return True  # another replica sent it a moment ago
        now = self.clock.now()
        with self.store.transaction() as s:
            row = s.get_one(HotTransaction, tx.id, with_for_update=True)
            if row.state != BROADCAST or row.broadcast_at != tx.broadcast_at:
                return True  # settled, or another replica re-sent it and recorded so
            row.broadcast_at = now
            audit.append(
                s,
                now,
                "hottx.rebroadcast",
                _subject(row),
                {"tx_hash": row.tx_hash, "nonce": row.nonce, "attempt": row.attempt, "why": "unknown to the node"},
            )
        log.info("nonce %s attempt %s was unknown to the node: sent the stored bytes again", tx.nonce, tx.attempt)
        return True

    def replace(self, tx: HotTransaction) -> HotTransaction | None:
        """Sign and store a fee-bumped version at ``tx``'s nonce, unless another pass or replica has already
        replaced it or it is settled: decided under the lock on the wallet's row, in the transaction that
        stores the new version, so only one is ever signed per attempt. Returns the new version, if any."""
        est_fee, est_priority = self.node.fees(self.settings.max_fee_per_gas)
        max_fee = max(bump(tx.max_fee), est_fee)
        priority = max(bump(tx.priority_fee), est_priority)
        if max_fee > self.settings.max_fee_per_gas:
            self._tell(tx, "nonce %s is stuck but a 12.5 %% bump would pass the fee cap; waiting", tx.nonce)
            return None
        fields = TypedTransaction.from_bytes(HexBytes(bytes.fromhex(tx.raw))).as_dict()
        now = self.clock.now()
        with self.store.transaction() as s:
            s.execute(select(HotWallet).where(HotWallet.address == self.address).with_for_update()).scalar_one()
            versions = _versions(s, tx)
            newest = max(versions, key=lambda v: v.attempt)
            if newest.id != tx.id or newest.state != BROADCAST or any(v.state != BROADCAST for v in versions):
                return None  # replaced already, or settled, since this pass read it
            version = self._sign(
                tx.withdrawal_id,
                tx.batch_id,
                tx.nonce,
                tx.attempt + 1,
                fields["to"],
                fields["value"],
                fields["data"],
                fields["gas"],
                max_fee,
                min(priority, max_fee),
                now,
            )
            s.add(version)
            audit.append(
                s,
                now,
                "hottx.replacement_signed",
                _subject(tx),
                {
                    "nonce": tx.nonce,
                    "attempt": version.attempt,
                    "tx_hash": version.tx_hash,
                    "replaces": tx.tx_hash,
                    "max_fee": str(max_fee),
                },
            )
        return version

    def _tell(self, tx: HotTransaction, message: str, *args: object) -> None:
        """A warning about one version, logged once per process rather than once per pass."""
        key = f"{tx.tx_hash}:{message}"
        if key not in self._told:
            if len(self._told) >= 10_000:  # a long-lived process: forget, and say it again at worst
                self._told.clear()
            self._told.add(key)
            log.warning(message, *args)

    def _sign(
        self,
        withdrawal_id: str | None,
        batch_id: str | None,
        nonce: int,
        attempt: int,
        to: str,
        value: int,
        data: bytes,
        gas: int,
        max_fee: int,
        priority: int,
        now: int,
    ) -> HotTransaction:
        """Sign one EIP-1559 version of a payment; the row to store before it may be broadcast."""
        signed = self.account.sign_transaction(
            {
                "type": 2,
                "chainId": self.settings.chain_id,
                "nonce": nonce,
                "to": HexStr(to),
                "value": value,
                "data": data,
                "gas": gas,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": priority,
            }
        )
        return HotTransaction(
            withdrawal_id=withdrawal_id,
            batch_id=batch_id,
            wallet=self.address,
            nonce=nonce,
            attempt=attempt,
            tx_hash="0x" + bytes(signed.hash).hex(),
            raw=bytes(signed.raw_transaction).hex(),
            max_fee=max_fee,
            priority_fee=priority,
            state=SIGNED,
            created_at=now,
        )

    def _mined_at(self, tx: HotTransaction, block: int, block_hash: str) -> None:
        with self.store.transaction() as s:
            row = s.get_one(HotTransaction, tx.id, with_for_update=True)
            if row.state == BROADCAST:
                row.mined_block, row.mined_block_hash = block, block_hash

    def _reorged(self, tx: HotTransaction, frozen: bool) -> None:
        """Seen mined, now gone before it was deep enough: forget the block and send the same bytes again
        (once unfrozen, if a freeze is in force)."""
        now = self.clock.now()
        with self.store.transaction() as s:
            row = s.get_one(HotTransaction, tx.id, with_for_update=True)
            if row.state != BROADCAST or row.mined_block is None:
                return  # another pass or replica saw it first
            audit.append(
                s,
                now,
                "hottx.reorged",
                _subject(row),
                {"tx_hash": row.tx_hash, "was_in_block": row.mined_block, "block_hash": row.mined_block_hash},
            )
            row.mined_block = row.mined_block_hash = None
            row.state = SIGNED
        if not frozen:
            self.broadcast(tx)

    def settle(self, tx: HotTransaction, receipt: Receipt) -> None:
        now, block = self.clock.now(), receipt.block_number
        with self.store.transaction() as s:
            versions = _versions(s, tx, lock=True)
            if any(v.state in (MINED, ORPHANED) for v in versions):
                return  # settled already (by another pass or replica)
            for other in versions:
                other.state = MINED if other.id == tx.id else REPLACED
                if other.id == tx.id:  # the block it settled in, which the watch keeps checking
                    other.mined_block, other.mined_block_hash = block, receipt.block_hash
            if tx.batch_id is not None:
                batches.settle(s, tx.batch_id, tx.tx_hash, receipt.success, block, now)
                return
            if tx.withdrawal_id is None:
                audit.append(
                    s, now, "hottx.mined", _subject(tx), {"nonce": tx.nonce, "success": receipt.success, "block": block}
                )
                return
            w = s.execute(select(Withdrawal).where(Withdrawal.id == tx.withdrawal_id).with_for_update()).scalar_one()
            if w.state != State.BROADCAST:
                return
            w.tx_hash = tx.tx_hash
            if receipt.success:
                move(s, w, State.CONFIRMED, now, by="hot-worker", tx_hash=tx.tx_hash, block=block)
            else:
                w.failure = f"reverted in block {block}"
                move(s, w, State.FAILED, now, by="hot-worker", tx_hash=tx.tx_hash, block=block, reason=w.failure)


def _versions(s: Session, tx: HotTransaction, *, lock: bool = False) -> list[HotTransaction]:
    """Every version signed at ``tx``'s nonce (the original and its fee replacements), row-locked if asked."""
    query = select(HotTransaction).where(HotTransaction.wallet == tx.wallet, HotTransaction.nonce == tx.nonce)
    return list(s.execute(query.with_for_update() if lock else query).scalars())


def _subject(tx: HotTransaction) -> str:
    """What an audit entry about this version is about: its withdrawal, its batch, or the call itself (its
    transaction hash without 0x, which fits the audit log's 64-character subject)."""
    return tx.withdrawal_id or tx.batch_id or tx.tx_hash.removeprefix("0x")
