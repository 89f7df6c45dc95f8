"""The hot wallet's transaction sender: the one place that signs from the hot EOA, whatever the transaction is
for (a hot payment, a cold batch's execution, the call that creates the Safe), so that nonces are allocated in
one place and every signed version survives a crash.

Each transaction goes through these steps, each its own database transaction:

1. sign:      allocate the wallet's next nonce under a lock on its row, sign an EIP-1559 transaction, and
              store the raw bytes in the caller's transaction, which records why (a withdrawal -> signed, a
              batch -> executing). Nothing is broadcast yet.
2. broadcast: send the stored bytes. After a crash, stored bytes are simply sent again: the same bytes can
              only be mined once.
3. follow:    read receipts and move each version forward: settle it, send it again, replace it with higher
              fees, or forget a block that left the chain. ``custody.hot.following`` decides (a pure function);
              this module does the I/O.
4. watch:     what was settled is re-checked for a while after (``custody.hot.rollback``).

The sender knows nothing of withdrawals or batches, and imports nothing of the cold wallet. When a version is
broadcast or settles, it calls the ``Settler`` for what the transaction is for, read from its row: a hot payment
(``withdrawal_id``: the payer's, ``custody.hot.payer``), a cold batch's execution (``batch_id``: the cold
batches' own), or nothing (a plain call such as creating the Safe). The worker (``custody.loops.worker``) hands
them over. A settler runs inside the same database transaction as the version's own change, with that row
locked, so a crash leaves both or neither.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import Protocol

from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_typing import HexStr
from hexbytes import HexBytes
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from custody.chain.ethereum import NONCE_USED, SENT, EthereumNode, Receipt
from custody.clock import Clock
from custody.errors import BroadcastRefused, ConfigError
from custody.hot.following import FOLLOWED, Action, Followed, Rules, block_moved, next_action
from custody.ledger import audit, freeze
from custody.ledger.states import TxState
from custody.store.db import Store
from custody.store.models import HotTransaction, HotWallet

log = logging.getLogger("custody.hotwallet")
FAILPOINT_ENV = "CUSTODY_FAILPOINT"


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


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fees per gas, in wei."""

    max_fee: int
    priority: int


@dataclass(frozen=True)
class Call:
    """What one transaction from the hot wallet does: everything signed but the chain, the nonce and the
    attempt, which the sender chooses."""

    to: str
    value: int
    data: bytes
    gas: int
    fees: Fees


class Settler(Protocol):
    """What a transaction's purpose does when one of its versions is sent or settles. Each method runs inside
    the sender's database transaction (``s``), with the version's row locked; it must not commit."""

    def broadcast(self, s: Session, tx: HotTransaction, now: int) -> bool:
        """``tx`` was just sent for the first time. True if this recorded it; otherwise the sender records
        ``hottx.broadcast`` in the audit log itself."""
        ...

    def settle(self, s: Session, tx: HotTransaction, receipt: Receipt, now: int) -> None:
        """``tx`` is deep enough (``receipt``: where, and whether it reverted); its other versions are
        replaced."""
        ...

    def remined(self, s: Session, tx: HotTransaction) -> None:
        """An orphaned nonce is on chain again, deep enough, with version ``tx``: what it settled now points
        at that version."""
        ...


@dataclass(frozen=True)
class Settlers:
    """Who settles a transaction, by what its row says it is for."""

    withdrawal: Settler  # ``withdrawal_id`` set: a hot payment
    batch: Settler  # ``batch_id`` set: a cold batch's execution

    def of(self, tx: HotTransaction) -> Settler | None:
        if tx.batch_id is not None:
            return self.batch
        if tx.withdrawal_id is not None:
            return self.withdrawal
        return None  # a plain call (creating the Safe): nothing but the audit log records it


class TransactionSender(Protocol):
    """What another subsystem needs to have a transaction of its own sent from the hot wallet (the cold wallet:
    a batch's execution, the Safe's creation). ``Sender`` is one, and so is the worker that holds it."""

    @property
    def address(self) -> str: ...

    @property
    def settings(self) -> WorkerSettings: ...

    @property
    def clock(self) -> Clock: ...

    def ensure_wallet(self) -> None: ...

    def fees(self) -> Fees: ...

    def follow(self) -> bool: ...

    def sign_at_next_nonce(
        self, s: Session, call: Call, now: int, *, withdrawal_id: str | None = None, batch_id: str | None = None
    ) -> HotTransaction: ...

    def sign_call(self, to: str, value: int, data: bytes, *, gas: int | None = None) -> HotTransaction: ...


class Sender:
    """Sends from one hot EOA: nonces, signing, storage, broadcast, following, replacement, reorgs."""

    def __init__(
        self,
        store: Store,
        node: EthereumNode,
        account: LocalAccount,
        settings: WorkerSettings,
        clock: Clock,
        settlers: Settlers,
    ) -> None:
        if settings.confirmations < 1:
            raise ConfigError("[chain] confirmations must be at least 1 (1 = counted once it is in a block)")
        if settings.settled_watch_blocks < 0:
            raise ConfigError("[chain] settled_watch_blocks must not be negative")
        self.store, self.node, self.account, self.settings, self.clock = store, node, account, settings, clock
        self.settlers = settlers
        self.address: str = account.address
        self.registered = False  # the wallet's row exists (``ensure_wallet``)
        self._told: set[str] = set()  # transactions whose refusal was logged already (one line, not one a pass)

    def __repr__(self) -> str:
        return f"Sender({self.address})"

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
        self.registered = True

    def frozen(self) -> bool:
        with self.store.read() as s:
            return freeze.active(s) is not None

    def fees(self) -> Fees:
        """The fees the node suggests for the next block, within the configured cap."""
        return Fees(*self.node.fees(self.settings.max_fee_per_gas))

    # -- 1. sign ----------------------------------------------------------------------------------
    def sign_at_next_nonce(
        self, s: Session, call: Call, now: int, *, withdrawal_id: str | None = None, batch_id: str | None = None
    ) -> HotTransaction:
        """Sign at the wallet's next nonce, under a lock on its row, and store the version in ``s`` (the
        caller's transaction, which also records why). Nothing is broadcast until it commits."""
        wallet = s.execute(select(HotWallet).where(HotWallet.address == self.address).with_for_update()).scalar_one()
        version = self._sign(call, wallet.next_nonce, 0, now, withdrawal_id=withdrawal_id, batch_id=batch_id)
        failpoint("after_sign")
        s.add(version)
        wallet.next_nonce += 1
        return version

    def sign_call(self, to: str, value: int, data: bytes, *, gas: int | None = None) -> HotTransaction:
        """A plain call from the hot wallet (creating the Safe): stored, then sent and followed like any other."""
        fees = self.fees()
        gas = gas or self.node.estimate_gas(self.address, to, value, data)
        now = self.clock.now()
        with self.store.transaction() as s:
            version = self.sign_at_next_nonce(s, Call(to, value, data, gas, fees), now)
            audit.append(s, now, "hottx.call_signed", subject(version), {"to": to, "nonce": version.nonce})
        return version

    def _sign(
        self, call: Call, nonce: int, attempt: int, now: int, *, withdrawal_id: str | None, batch_id: str | None
    ) -> HotTransaction:
        """Sign one EIP-1559 version of a transaction; the row to store before it may be broadcast."""
        signed = self.account.sign_transaction(
            {
                "type": 2,
                "chainId": self.settings.chain_id,
                "nonce": nonce,
                "to": HexStr(call.to),
                "value": call.value,
                "data": call.data,
                "gas": call.gas,
                "maxFeePerGas": call.fees.max_fee,
                "maxPriorityFeePerGas": call.fees.priority,
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
            max_fee=call.fees.max_fee,
            priority_fee=call.fees.priority,
            state=TxState.SIGNED,
            created_at=now,
        )

    # -- 2. broadcast and 3. follow ----------------------------------------------------------------
    def follow(self) -> bool:
        """One pass over every version still signed or broadcast, lowest nonce first. True if there were any."""
        with self.store.read() as s:
            pending = list(
                s.execute(
                    select(HotTransaction)
                    .where(HotTransaction.wallet == self.address, HotTransaction.state.in_(FOLLOWED))
                    .order_by(HotTransaction.nonce, HotTransaction.attempt)
                ).scalars()
            )
        if not pending:
            return False
        head = self.node.block_number()
        frozen = self.frozen()
        rules = Rules(self.settings.confirmations, self.settings.stuck_after_seconds)
        by_nonce: dict[int, list[HotTransaction]] = {}
        for tx in pending:
            by_nonce.setdefault(tx.nonce, []).append(tx)
        lower_waiting = False  # a lower nonce is still waiting to be mined: later ones queue behind it
        for nonce in sorted(by_nonce):
            at_nonce = by_nonce[nonce]
            landed = False  # a version at this nonce is in a canonical block
            for tx in at_nonce:
                receipt = None if tx.state == TxState.SIGNED else self.canonical_receipt(tx.tx_hash)
                seen = Followed(
                    tx.state,
                    tx.mined_block,
                    tx.broadcast_at,
                    newest=tx is at_nonce[-1],
                    nonce_landed=landed,
                    lowest=not lower_waiting,
                )
                action = next_action(seen, receipt, head, self.clock.now(), rules=rules, frozen=frozen)
                self._act(action, tx, receipt, frozen)
                landed = landed or receipt is not None
            lower_waiting = lower_waiting or not landed
        return True

    def _act(self, action: Action, tx: HotTransaction, receipt: Receipt | None, frozen: bool) -> None:
        """The I/O ``following.next_action`` asked for."""
        if action == Action.BROADCAST:
            self.broadcast(tx)
        elif action == Action.REORGED:
            self._reorged(tx, frozen)
        elif action in (Action.MINED, Action.SETTLE) and receipt is not None:
            if block_moved(tx.mined_block, tx.mined_block_hash, receipt):
                self._mined_at(tx, receipt.block_number, receipt.block_hash)
            if action == Action.SETTLE:
                self.settle(tx, receipt)
        elif action in (Action.RESEND_IF_LOST, Action.REPLACE):
            if not self.node.knows(tx.tx_hash) and self.rebroadcast(tx):
                return
            # the node has it, or refuses its bytes again (a fee too low for its mempool now): a bump is the way out
            if action == Action.REPLACE:
                self.replace(tx)

    def canonical_receipt(self, tx_hash: str) -> Receipt | None:
        """The receipt, if the block it names is still canonical."""
        receipt = self.node.receipt(tx_hash)
        if receipt is not None and self.node.block_hash(receipt.block_number) != receipt.block_hash:
            return None  # its block is no longer canonical
        return receipt

    def broadcast(self, tx: HotTransaction) -> None:
        try:
            self.node.send_raw(bytes.fromhex(tx.raw))
        except BroadcastRefused as exc:
            self.tell(tx, "nonce %s attempt %s not broadcast yet: %s", tx.nonce, tx.attempt, exc)
            return
        failpoint("after_broadcast")
        now = self.clock.now()
        with self.store.transaction() as s:
            row = s.get_one(HotTransaction, tx.id, with_for_update=True)
            if row.state != TxState.SIGNED:
                return
            row.state, row.broadcast_at = TxState.BROADCAST, now
            settler = self.settlers.of(row)
            if settler is None or not settler.broadcast(s, row, now):
                audit.append(s, now, "hottx.broadcast", subject(row), {"tx_hash": row.tx_hash, "attempt": row.attempt})

    def rebroadcast(self, tx: HotTransaction) -> bool:
        """The node does not know a version it was sent (it restarted without its mempool, or dropped it): the
        same stored bytes again, at once. Its wait for ``stuck_after_seconds`` starts again from now, since
        the node has had it only from now. False if the node refuses the bytes (then only a replacement with
        higher fees can move the nonce)."""
        try:
            outcome = self.node.send_raw(bytes.fromhex(tx.raw))
        except BroadcastRefused as exc:
            self.tell(tx, "nonce %s attempt %s: the node lost it and refuses it again: %s", tx.nonce, tx.attempt, exc)
            return False
        if outcome == NONCE_USED:  # another version is mined (its receipt settles it) or the nonce went elsewhere
            self.tell(tx, "nonce %s attempt %s: the node says the nonce is used", tx.nonce, tx.attempt)
            return True
        if outcome != SENT:
            return True  # another replica sent it a moment ago
        now = self.clock.now()
        with self.store.transaction() as s:
            row = s.get_one(HotTransaction, tx.id, with_for_update=True)
            if row.state != TxState.BROADCAST or row.broadcast_at != tx.broadcast_at:
                return True  # settled, or another replica re-sent it and recorded so
            row.broadcast_at = now
            audit.append(
                s,
                now,
                "hottx.rebroadcast",
                subject(row),
                {"tx_hash": row.tx_hash, "nonce": row.nonce, "attempt": row.attempt, "why": "unknown to the node"},
            )
        log.info("nonce %s attempt %s was unknown to the node: sent the stored bytes again", tx.nonce, tx.attempt)
        return True

    def replace(self, tx: HotTransaction) -> HotTransaction | None:
        """Sign and store a fee-bumped version at ``tx``'s nonce, unless another pass or replica has already
        replaced it or it is settled: decided under the lock on the wallet's row, in the transaction that
        stores the new version, so only one is ever signed per attempt. Returns the new version, if any."""
        estimate = self.fees()
        max_fee = max(bump(tx.max_fee), estimate.max_fee)
        priority = max(bump(tx.priority_fee), estimate.priority)
        if max_fee > self.settings.max_fee_per_gas:
            self.tell(tx, "nonce %s is stuck but a 12.5 %% bump would pass the fee cap; waiting", tx.nonce)
            return None
        fields = TypedTransaction.from_bytes(HexBytes(bytes.fromhex(tx.raw))).as_dict()
        call = Call(fields["to"], fields["value"], fields["data"], fields["gas"], Fees(max_fee, min(priority, max_fee)))
        now = self.clock.now()
        with self.store.transaction() as s:
            s.execute(select(HotWallet).where(HotWallet.address == self.address).with_for_update()).scalar_one()
            others = versions(s, tx)
            newest = max(others, key=lambda v: v.attempt)
            if (
                newest.id != tx.id
                or newest.state != TxState.BROADCAST
                or any(v.state != TxState.BROADCAST for v in others)
            ):
                return None  # replaced already, or settled, since this pass read it
            version = self._sign(
                call, tx.nonce, tx.attempt + 1, now, withdrawal_id=tx.withdrawal_id, batch_id=tx.batch_id
            )
            s.add(version)
            audit.append(
                s,
                now,
                "hottx.replacement_signed",
                subject(tx),
                {
                    "nonce": tx.nonce,
                    "attempt": version.attempt,
                    "tx_hash": version.tx_hash,
                    "replaces": tx.tx_hash,
                    "max_fee": str(max_fee),
                },
            )
        return version

    def _mined_at(self, tx: HotTransaction, block: int, block_hash: str) -> None:
        with self.store.transaction() as s:
            row = s.get_one(HotTransaction, tx.id, with_for_update=True)
            if row.state == TxState.BROADCAST:
                row.mined_block, row.mined_block_hash = block, block_hash

    def _reorged(self, tx: HotTransaction, frozen: bool) -> None:
        """Seen mined, now gone before it was deep enough: forget the block and send the same bytes again
        (once unfrozen, if a freeze is in force)."""
        now = self.clock.now()
        with self.store.transaction() as s:
            row = s.get_one(HotTransaction, tx.id, with_for_update=True)
            if row.state != TxState.BROADCAST or row.mined_block is None:
                return  # another pass or replica saw it first
            audit.append(
                s,
                now,
                "hottx.reorged",
                subject(row),
                {"tx_hash": row.tx_hash, "was_in_block": row.mined_block, "block_hash": row.mined_block_hash},
            )
            row.mined_block = row.mined_block_hash = None
            row.state = TxState.SIGNED
        if not frozen:
            self.broadcast(tx)

    def settle(self, tx: HotTransaction, receipt: Receipt) -> None:
        """``tx`` is deep enough: it is mined, its other versions replaced, and its settler told, in one
        transaction."""
        now, block = self.clock.now(), receipt.block_number
        with self.store.transaction() as s:
            rows = versions(s, tx, lock=True)
            if any(v.state in (TxState.MINED, TxState.ORPHANED) for v in rows):
                return  # settled already (by another pass or replica)
            for other in rows:
                other.state = TxState.MINED if other.id == tx.id else TxState.REPLACED
                if other.id == tx.id:  # the block it settled in, which the watch keeps checking
                    other.mined_block, other.mined_block_hash = block, receipt.block_hash
            mined = next(v for v in rows if v.id == tx.id)
            settler = self.settlers.of(mined)
            if settler is None:
                audit.append(
                    s, now, "hottx.mined", subject(tx), {"nonce": tx.nonce, "success": receipt.success, "block": block}
                )
            else:
                settler.settle(s, mined, receipt, now)

    def tell(self, tx: HotTransaction, message: str, *args: object) -> None:
        """A warning about one version, logged once per process rather than once per pass."""
        key = f"{tx.tx_hash}:{message}"
        if key not in self._told:
            if len(self._told) >= 10_000:  # a long-lived process: forget, and say it again at worst
                self._told.clear()
            self._told.add(key)
            log.warning(message, *args)


def versions(s: Session, tx: HotTransaction, *, lock: bool = False) -> list[HotTransaction]:
    """Every version signed at ``tx``'s nonce (the original and its fee replacements), row-locked if asked."""
    query = select(HotTransaction).where(HotTransaction.wallet == tx.wallet, HotTransaction.nonce == tx.nonce)
    return list(s.execute(query.with_for_update() if lock else query).scalars())


def subject(tx: HotTransaction) -> str:
    """What an audit entry about this version is about: its withdrawal, its batch, or the call itself (its
    transaction hash without 0x, which fits the audit log's 64-character subject)."""
    return tx.withdrawal_id or tx.batch_id or tx.tx_hash.removeprefix("0x")
