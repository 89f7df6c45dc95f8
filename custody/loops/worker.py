"""The worker: the daemon's loop that pays `queued_hot` withdrawals from the hot EOA, exactly once, whatever
crashes, and keeps everything else the hot wallet does moving. It holds no rules of its own: it composes the
hot wallet's parts (``custody.hot``) with the cold wallet's housekeeping (``custody.cold.batches``).

Each payment goes through these steps, each its own database transaction:

1. sign:      claim one queued withdrawal, allocate the wallet's next nonce under a lock on its row, sign an
              EIP-1559 transaction, and store the raw bytes (withdrawal -> signed). Nothing is broadcast yet.
              (``custody.hot.payer``, through ``custody.hot.sender``)
2. broadcast: send the stored bytes (withdrawal -> broadcast). After a crash, stored bytes are simply sent
              again: the same bytes can only be mined once. (``custody.hot.sender``)
3. follow:    read receipts. Deep enough -> confirmed (or failed if it reverted); gone from the chain after
              being seen (a reorg) -> broadcast again; forgotten by the node -> the same bytes again; stuck at
              the lowest nonce waiting -> a replacement with higher fees. Whichever version is mined settles
              the withdrawal. (``custody.hot.following`` decides, ``custody.hot.sender`` acts)
4. watch:     a settled transaction is not forgotten: a rollback deeper than the confirmation depth freezes the
              service and marks what it took back ``orphaned``; nothing is paid again until a quorum decides.
              (``custody.hot.rollback``)

A withdrawal is never signed twice at two nonces: it is claimed only while `queued_hot`, and leaves that state
in the same transaction that stores its first signed version.

The hot wallet is also the executor of cold batches (``execTransaction`` on the Safe, see ``custody.cold.batches``)
and sends the call that creates the Safe. Those go through the same nonce allocation, storage and following;
only what a mined version settles differs (a withdrawal, a batch's withdrawals, or nothing). This is where the
sender is given a settler for each (``Settlers``), so that ``custody.hot`` never imports ``custody.cold``.

With a Bitcoin node configured, each pass also moves the Bitcoin cold batches along
(``custody.cold.btcexecution.BtcFollower``: expiry, sending stored transactions, confirmations, reorgs) and pays
``queued_hot`` Bitcoin withdrawals from the hot wallet's BIP-84 account (``custody.hot.btcfollow.BtcHot``: batched
payments from coins reserved in the database, stored before they are sent, followed to confirmation, sent again
after a reorg, fee-bumped by replacement when stuck), then keeps that network's Bitcoin hot band
(``custody.hot.rebalance.rebalance_bitcoin``: sweeps to the cold descriptor, top-ups from it); bitcoind being
away is logged and never holds up the Ethereum work.
"""

from __future__ import annotations

import logging
import threading

from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from custody import logs, outage
from custody.chain.ethereum import EthereumNode
from custody.clock import Clock
from custody.cold import batches, execution
from custody.cold.btcexecution import BtcFollower
from custody.errors import BitcoinNodeError, ColdWalletMismatch
from custody.hot.btcfollow import BtcHot
from custody.hot.payer import Payer, PaymentSettler
from custody.hot.rebalance import rebalance, rebalance_bitcoin
from custody.hot.rollback import RollbackWatch
from custody.hot.sender import Call, Fees, Sender, Settlers, WorkerSettings
from custody.ledger.policy import PolicyCache
from custody.store.db import Store
from custody.store.models import ChainBalance, ColdWallet, HotTransaction
from policies.chains import ETHEREUM

__all__ = ["Worker", "WorkerSettings"]

log = logging.getLogger("custody.hotwallet")


class Worker:
    """The worker of one hot EOA: its sender (with the payer's and the cold batches' settlers), the rollback
    watch, the payer, the rebalancer, batch housekeeping and balance readings, one pass at a time."""

    def __init__(
        self,
        store: Store,
        node: EthereumNode,
        account: LocalAccount,
        settings: WorkerSettings,
        clock: Clock,
        *,
        bitcoin: BtcFollower | None = None,
        bitcoin_hot: BtcHot | None = None,
    ) -> None:
        self.sender = Sender(
            store, node, account, settings, clock, Settlers(withdrawal=PaymentSettler(), batch=execution.BatchSettler())
        )
        self.rollback = RollbackWatch(self.sender)
        self.policies = PolicyCache()
        self.payer = Payer(self.sender, self.policies)
        self.store, self.node, self.account, self.settings, self.clock = store, node, account, settings, clock
        self.address: str = account.address
        self.bitcoin = bitcoin
        self.bitcoin_hot_wallet = bitcoin_hot
        self._bitcoin_down = False
        self._bitcoin_hot_down = False

    def __repr__(self) -> str:
        return f"Worker({self.address})"

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
        """One pass: check what was settled still holds, refresh balances, rebalance, release expired batches
        and reconcile exported ones, move stored transactions forward, sign new ones. True if it did work."""
        if not self.sender.registered:
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
        busy = self.follow_bitcoin() or busy
        busy = self.bitcoin_hot() or busy
        return self.follow() or busy or watched

    def follow_bitcoin(self) -> bool:
        """One pass over the Bitcoin cold batches, if a Bitcoin node is configured; True if it did work."""
        if self.bitcoin is None:
            return False
        try:
            busy = self.bitcoin.step()
        except BitcoinNodeError as exc:
            if not self._bitcoin_down:
                log.warning("bitcoind is unavailable; Bitcoin batches wait: %s", exc.message)
            self._bitcoin_down = True
            return False
        if self._bitcoin_down:
            log.info("bitcoind is back; following Bitcoin batches again")
        self._bitcoin_down = False
        return busy

    def bitcoin_hot(self) -> bool:
        """One pass of the hot wallet's Bitcoin payments, if a Bitcoin node is configured; True if it did work."""
        if self.bitcoin_hot_wallet is None:
            return False
        try:
            busy = self.bitcoin_hot_wallet.step()
            busy = self.rebalance_bitcoin() or busy
        except BitcoinNodeError as exc:
            if not self._bitcoin_hot_down:
                log.warning("bitcoind is unavailable; hot Bitcoin payments wait: %s", exc.message)
            self._bitcoin_hot_down = True
            return False
        if self._bitcoin_hot_down:
            log.info("bitcoind is back; paying hot Bitcoin withdrawals again")
        self._bitcoin_hot_down = False
        return busy

    def rebalance_bitcoin(self) -> bool:
        """The Bitcoin band of the hot wallet's network (``custody.hot.rebalance``), after its balance was read: a
        sweep it raises is paid on the next pass, a top-up goes into the next Bitcoin cold batch."""
        if self.bitcoin_hot_wallet is None:
            return False
        acct, _ = self.bitcoin_hot_wallet.ready()
        node = self.bitcoin_hot_wallet.node
        try:
            return bool(rebalance_bitcoin(self.store, self.policies, self.clock, node, acct.network))
        except ColdWalletMismatch as exc:  # the node answered an address not of the cold wallet: no sweep, say so
            log.error("Bitcoin sweep not raised: %s", exc.message)
            return False

    # -- the parts, for the commands and tests that drive one step by hand ---------------------------
    def ensure_wallet(self) -> None:
        self.sender.ensure_wallet()

    def frozen(self) -> bool:
        return self.sender.frozen()

    def watch(self) -> bool:
        return self.rollback.watch()

    def follow(self) -> bool:
        return self.sender.follow()

    def sign_next(self) -> bool:
        return self.payer.sign_next()

    def fees(self) -> Fees:
        return self.sender.fees()

    def sign_call(self, to: str, value: int, data: bytes, *, gas: int | None = None) -> HotTransaction:
        return self.sender.sign_call(to, value, data, gas=gas)

    def sign_at_next_nonce(
        self, s: Session, call: Call, now: int, *, withdrawal_id: str | None = None, batch_id: str | None = None
    ) -> HotTransaction:
        return self.sender.sign_at_next_nonce(s, call, now, withdrawal_id=withdrawal_id, batch_id=batch_id)

    # -- balances ---------------------------------------------------------------------------------
    def refresh_balances(self) -> None:
        """Read the hot wallet's and, once it exists, the cold wallet's balance of every asset at one block."""
        with self.store.read() as s:
            assets = self.policies.get(s).policy.assets
            cold = s.execute(select(ColdWallet.address).limit(1)).scalar_one_or_none()
        block = self.node.block_number()
        wallets = [self.address] + ([cold] if cold else [])
        readings = {  # this node is Ethereum's: a Bitcoin asset's "native coin" here would be ETH
            (wallet, symbol): self.node.balance(wallet, rule.contract, block)
            for wallet in wallets
            for symbol, rule in assets.items()
            if rule.chain == ETHEREUM
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
