"""The hot worker: pays `queued_hot` withdrawals from the hot EOA, exactly once, whatever crashes.

Each payment goes through these steps, each its own database transaction:

1. sign:      claim one queued withdrawal, allocate the wallet's next nonce under a lock on its row, sign an
              EIP-1559 transaction, and store the raw bytes (withdrawal -> signed). Nothing is broadcast yet.
2. broadcast: send the stored bytes (withdrawal -> broadcast). After a crash, stored bytes are simply sent
              again: the same bytes can only be mined once.
3. follow:    read receipts. Deep enough -> confirmed (or failed if it reverted); gone from the chain after
              being seen (a reorg) -> broadcast again; not mined for too long -> a replacement at the same
              nonce with fees at least 12.5 % higher. Whichever version is mined settles the withdrawal.

A withdrawal is never signed twice at two nonces: it is claimed only while `queued_hot`, and leaves that state
in the same transaction that stores its first signed version.

The hot wallet is also the executor of cold batches (``execTransaction`` on the Safe, see ``custody.batches``)
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
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody import audit, batches, freeze, logs, states
from custody.chain.ethereum import BroadcastRefused, EthereumNode, NodeUnavailable
from custody.clock import Clock
from custody.policy import PolicyCache
from custody.rebalance import rebalance
from custody.store.db import Store
from custody.store.models import ChainBalance, ColdWallet, HotTransaction, HotWallet, Withdrawal
from custody.transitions import move
from signer.safetx import transfer_call

log = logging.getLogger("custody.hotwallet")
FAILPOINT_ENV = "CUSTODY_FAILPOINT"
SIGNED, BROADCAST, MINED, REPLACED = "signed", "broadcast", "mined", "replaced"


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
    confirmations: int
    max_fee_per_gas: int
    stuck_after_seconds: int


class HotWorker:
    def __init__(
        self, store: Store, node: EthereumNode, account: LocalAccount, settings: WorkerSettings, clock: Clock
    ) -> None:
        self.store, self.node, self.account, self.settings, self.clock = store, node, account, settings, clock
        self.address: str = account.address
        self.policies = PolicyCache()
        self._registered = False

    def __repr__(self) -> str:
        return f"HotWorker({self.address})"

    # -- set-up -----------------------------------------------------------------------------------
    def ensure_wallet(self) -> None:
        """Register the wallet once, starting at the chain's nonce; afterwards the database decides."""
        self.node.check_chain()
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
        self._registered = True

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event, idle: float = 0.5) -> None:
        backoff = idle
        while not stop.is_set():
            logs.REQUEST_ID.set(logs.new_id("w-"))  # every line of one pass carries the same id
            try:
                busy = self.step()
                backoff = idle
            except NodeUnavailable as exc:
                log.warning("node unavailable, retrying in %.1f s: %s", backoff, exc)
                busy, backoff = False, min(backoff * 2, 10.0)
            except Exception:  # one bad row or answer must not stop payments: log it, back off, go on
                log.exception("hot worker pass failed; retrying in %.1f s", backoff)
                busy, backoff = False, min(backoff * 2, 10.0)
            if not busy:
                stop.wait(backoff)

    def step(self, batch: int = 20) -> bool:
        """One pass: refresh balances, move stored transactions forward, sign new ones. True if it did work."""
        if not self._registered:
            self.ensure_wallet()
        self.refresh_balances()
        busy = bool(rebalance(self.store, self.policies, self.clock, self.address))
        busy = batches.housekeeping(self.store, self.node, self.clock.now()) or busy
        busy = self.follow() or busy
        for _ in range(batch):
            if not self.sign_next():
                break
            busy = True
        return self.follow() or busy

    def frozen(self) -> bool:
        with self.store.read() as s:
            return freeze.active(s) is not None

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
        with self.store.transaction() as s:
            for (wallet, symbol), amount in readings.items():
                row = s.get(ChainBalance, (wallet, symbol))
                if row is None:
                    s.add(ChainBalance(wallet=wallet, asset=symbol, amount=amount, block=block, updated_at=now))
                else:
                    row.amount, row.block, row.updated_at = amount, block, now

    # -- 1. sign ----------------------------------------------------------------------------------
    def sign_next(self) -> bool:
        max_fee, priority = self.node.fees(self.settings.max_fee_per_gas)
        now = self.clock.now()
        with self.store.transaction() as s:
            if freeze.active(s) is not None:
                return False
            query = select(Withdrawal).where(Withdrawal.state == states.QUEUED_HOT).order_by(Withdrawal.seq).limit(1)
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
                move(s, w, states.CANCELLED, now, by="hot-worker", reason=f"asset {w.asset} is no longer in the policy")
                return True
            to, value, data = transfer_call(rule.contract, w.destination, w.amount)
            gas = self.node.estimate_gas(self.address, to, value, data)
            version = self.sign_at_next_nonce(s, to, value, data, gas, (max_fee, priority), now, withdrawal_id=w.id)
            move(s, w, states.SIGNED, now, by="hot-worker", nonce=version.nonce, tx_hash=version.tx_hash)
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
        latest_attempt: dict[int, int] = {}
        for tx in pending:
            latest_attempt[tx.nonce] = max(latest_attempt.get(tx.nonce, 0), tx.attempt)
        for tx in pending:
            if tx.state == SIGNED:
                if not frozen:  # signed before the freeze: held, nonce and all, until a quorum unfreezes
                    self.broadcast(tx)
                continue
            receipt = self.node.receipt(tx.tx_hash)
            if receipt is not None and self.node.block_hash(receipt.block_number) != receipt.block_hash:
                receipt = None  # its block is no longer canonical
            if receipt is None:
                if tx.mined_block is not None:
                    self._reorged(tx)
                elif (
                    tx.attempt == latest_attempt[tx.nonce]
                    and tx.broadcast_at is not None
                    and self.clock.now() - tx.broadcast_at >= self.settings.stuck_after_seconds
                ):
                    self.replace(tx)
                continue
            if tx.mined_block != receipt.block_number:
                self._mined_at(tx, receipt.block_number, receipt.block_hash)
            if head - receipt.block_number + 1 >= self.settings.confirmations:
                self.settle(tx, receipt.success, receipt.block_number)
        return True

    def broadcast(self, tx: HotTransaction) -> None:
        try:
            self.node.send_raw(bytes.fromhex(tx.raw))
        except BroadcastRefused as exc:
            log.warning("nonce %s attempt %s not broadcast yet: %s", tx.nonce, tx.attempt, exc)
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
            if w is not None and w.state == states.SIGNED:
                move(s, w, states.BROADCAST, now, by="hot-worker", tx_hash=row.tx_hash)
            else:
                audit.append(s, now, "hottx.broadcast", _subject(row), {"tx_hash": row.tx_hash, "attempt": row.attempt})

    def replace(self, tx: HotTransaction) -> None:
        est_fee, est_priority = self.node.fees(self.settings.max_fee_per_gas)
        max_fee = max(bump(tx.max_fee), est_fee)
        priority = max(bump(tx.priority_fee), est_priority)
        if max_fee > self.settings.max_fee_per_gas:
            log.warning("nonce %s is stuck but a 12.5 %% bump would pass the fee cap; waiting", tx.nonce)
            return
        fields = TypedTransaction.from_bytes(HexBytes(bytes.fromhex(tx.raw))).as_dict()
        now = self.clock.now()
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
        with self.store.transaction() as s:
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
                "to": to,
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
            row.mined_block, row.mined_block_hash = block, block_hash

    def _reorged(self, tx: HotTransaction) -> None:
        """Seen mined, now gone: forget the block and send the same bytes again."""
        now = self.clock.now()
        with self.store.transaction() as s:
            row = s.get_one(HotTransaction, tx.id, with_for_update=True)
            audit.append(
                s,
                now,
                "hottx.reorged",
                _subject(row),
                {"tx_hash": row.tx_hash, "was_in_block": row.mined_block, "block_hash": row.mined_block_hash},
            )
            row.mined_block = row.mined_block_hash = None
            row.state = SIGNED
        self.broadcast(tx)

    def settle(self, tx: HotTransaction, success: bool, block: int) -> None:
        now = self.clock.now()
        with self.store.transaction() as s:
            versions = list(
                s.execute(
                    select(HotTransaction)
                    .where(HotTransaction.wallet == tx.wallet, HotTransaction.nonce == tx.nonce)
                    .with_for_update()
                ).scalars()
            )
            if any(v.state == MINED for v in versions):
                return  # settled already (by another pass or replica)
            for other in versions:
                other.state = MINED if other.id == tx.id else REPLACED
            if tx.batch_id is not None:
                batches.settle(s, tx.batch_id, tx.tx_hash, success, block, now)
                return
            if tx.withdrawal_id is None:
                audit.append(
                    s, now, "hottx.mined", _subject(tx), {"nonce": tx.nonce, "success": success, "block": block}
                )
                return
            w = s.execute(select(Withdrawal).where(Withdrawal.id == tx.withdrawal_id).with_for_update()).scalar_one()
            if w.state != states.BROADCAST:
                return
            w.tx_hash = tx.tx_hash
            if success:
                move(s, w, states.CONFIRMED, now, by="hot-worker", tx_hash=tx.tx_hash, block=block)
            else:
                w.failure = f"reverted in block {block}"
                move(s, w, states.FAILED, now, by="hot-worker", tx_hash=tx.tx_hash, block=block, reason=w.failure)


def _subject(tx: HotTransaction) -> str:
    """What an audit entry about this version is about: its withdrawal, its batch, or the call itself (its
    transaction hash without 0x, which fits the audit log's 64-character subject)."""
    return tx.withdrawal_id or tx.batch_id or tx.tx_hash.removeprefix("0x")
