"""Paying hot Bitcoin withdrawals: the oldest ``queued_hot`` withdrawals of the node's network's bitcoin asset
become one transaction from the hot wallet (many outputs, one change on branch 1), exactly once, whatever
crashes.

    sign:   under a lock on the hot wallet's row: claim the withdrawals, choose coins the database does not hold
            for another payment, reserve them (``btc_hot_inputs``, keyed by outpoint: a coin is never in two
            payments, even from two workers), sign in-process with the hot key, and store the signed bytes, the
            payouts and the withdrawals' move to ``signed``, all in one database transaction. Nothing is sent
            yet: ``custody.hot.btcfollow`` sends the stored bytes, follows them, and replaces them when stuck.

A withdrawal leaves ``queued_hot`` in the same transaction that stores the only transaction (and later its fee
replacements, which spend the very same coins) that can pay it. The fee rate is the node's estimate, else the
configured fallback, capped by the asset's ``max_fee_rate``; the fee is at most its ``max_fee`` (fewer
withdrawals go in one payment if needed).
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import select

from custody.chain.bitcoin import BitcoinNode
from custody.clock import Clock
from custody.errors import BitcoinNodeError
from custody.hot import btcbuild, btcwallet
from custody.hot.sender import failpoint
from custody.keys import BtcHotAccount
from custody.ledger import audit, freeze
from custody.ledger.policy import PolicyCache
from custody.ledger.positions import REBALANCER
from custody.ledger.states import State
from custody.ledger.transitions import move
from custody.store.db import Store
from custody.store.models import BtcHotInput, BtcHotPayout, BtcHotTransaction, BtcHotWallet, Withdrawal
from policies.addresses import bitcoin_script
from policies.model import AssetRule, Policy

log = logging.getLogger("custody.bitcoin")
SAT = Decimal(10) ** 8


class BtcTxState(StrEnum):
    SIGNED = "signed"  # stored, not sent yet
    BROADCAST = "broadcast"  # sent; perhaps seen in a block not yet deep enough (``block_hash``)
    CONFIRMED = "confirmed"  # deep enough: it settled its payment's withdrawals
    REPLACED = "replaced"  # another version of its payment confirmed
    # confirmed, then a reorg deeper than ``confirmations`` took it out of the chain: its withdrawals stay
    # confirmed (nothing pays them again), its same bytes are sent again until it is deep enough once more
    ORPHANED = "orphaned"


@dataclass(frozen=True)
class BtcHotSettings:
    confirmations: int  # blocks, the including one counted
    stuck_after_seconds: int  # sent and not mined this long: replaced with a higher fee (BIP-125)
    fallback_fee_rate: int = 10  # sat/vB when the node has no estimate (regtest, a young node)
    max_outputs: int = 100  # withdrawals per payment
    conf_target: int = 2  # blocks: the estimate a hot payment asks for
    # blocks after its confirmation during which a confirmed payment's block is checked to stay in the chain
    # (``custody.hot.btcfollow``: the watch), as ``settled_watch_blocks`` does for Ethereum
    settled_watch_blocks: int = 64


def fee_rate(node: BitcoinNode, rule: AssetRule, settings: BtcHotSettings) -> int:
    """sat/vB: the node's estimate, else the fallback, capped by the policy's ``max_fee_rate``."""
    try:
        btc_per_kvb = node.call("estimatesmartfee", settings.conf_target).get("feerate")
    except BitcoinNodeError:
        btc_per_kvb = None
    rate = math.ceil(Decimal(btc_per_kvb) * SAT / 1000) if btc_per_kvb is not None else settings.fallback_fee_rate
    return max(1, min(rate, rule.max_fee_rate or rate))


def asset_of(policy: Policy, network: str) -> tuple[str, AssetRule] | None:
    """The bitcoin asset of ``network`` (the policy allows one native coin per network)."""
    for symbol, rule in sorted(policy.assets.items()):
        if rule.chain == "bitcoin" and rule.network == network:
            return symbol, rule
    return None


class BtcPayer:
    """Signs and stores payments of queued hot withdrawals from the hot wallet's Bitcoin account."""

    def __init__(
        self,
        store: Store,
        node: BitcoinNode,
        accounts: dict[int, BtcHotAccount],
        settings: BtcHotSettings,
        clock: Clock,
        policies: PolicyCache | None = None,
    ) -> None:
        self.store, self.node, self.accounts, self.settings, self.clock = store, node, accounts, settings, clock
        self.policies = policies or PolicyCache()
        self.acct: btcwallet.HotAccount | None = None
        self.watch: BitcoinNode | None = None
        self._short = False  # "cannot fund" was logged (once, until a payment goes out again)
        self._told: set[str] = set()  # warnings about one transaction, logged once per process
        self._watched: tuple[int, str] | None = None  # the best block the watch last found nothing at

    def __repr__(self) -> str:
        return f"BtcPayer({self.acct.wallet if self.acct else 'not ready'})"

    def ready(self) -> tuple[btcwallet.HotAccount, BitcoinNode]:
        """The account of the node's network and its watch-only wallet (made and recorded the first time)."""
        if self.acct is None or self.watch is None:
            network = btcwallet.node_network(self.node)
            acct = btcwallet.account(self.node, network, self.accounts)
            self.watch = btcwallet.ensure(self.store, self.node, acct, self.clock.now())
            self.acct = acct
        return self.acct, self.watch

    def asset(self) -> tuple[str, AssetRule] | None:
        acct, _ = self.ready()
        with self.store.read() as s:
            return asset_of(self.policies.get(s).policy, acct.network)

    def read_balance(self) -> int:
        acct, watch = self.ready()
        found = self.asset()
        symbol = found[0] if found else None
        return btcwallet.read_balance(self.store, self.node, watch, acct.network, symbol, self.clock.now())

    def sign_next(self) -> BtcHotTransaction | None:
        """Sign and store one payment of the oldest queued hot withdrawals; None if there was nothing to pay (or
        a freeze, or no coin to pay with)."""
        acct, watch = self.ready()
        found = self.asset()
        if found is None:
            return None
        symbol, rule = found
        rate = fee_rate(self.node, rule, self.settings)
        now = self.clock.now()
        with self.store.transaction() as s:
            if freeze.active(s) is not None:
                return None
            wallet = s.execute(
                select(BtcHotWallet).where(BtcHotWallet.network == acct.network).with_for_update()
            ).scalar_one()
            policy = self.policies.get(s).policy
            query = (
                select(Withdrawal)
                .where(Withdrawal.state == State.QUEUED_HOT, Withdrawal.asset == symbol)
                .order_by(Withdrawal.seq)
                .limit(self.settings.max_outputs)
            )
            if self.store.is_postgres:
                query = query.with_for_update(skip_locked=True)
            withdrawals = list(s.execute(query).scalars())
            along = 0  # what the withdrawals before it in this payment pay to others
            for w in withdrawals:
                if not freeze.check_outflow(s, policy, w, now, along=along):
                    log.warning("automatic freeze: hot outflow limit of %s reached", w.asset)
                    return None
                along += 0 if w.api_key == REBALANCER else w.amount
            if not withdrawals:
                return None
            held = {(str(t), int(v)) for t, v in s.execute(select(BtcHotInput.txid, BtcHotInput.vout)).all()}
            coins = self._coins(acct, watch, held)
            outputs = [(bitcoin_script(acct.network, w.destination), w.amount) for w in withdrawals]
            p = None
            while withdrawals:
                p = btcbuild.plan(coins, outputs, rate, rule.max_fee or 0)
                if p is not None:
                    break
                withdrawals, outputs = withdrawals[:-1], outputs[:-1]
            if p is None:
                if not self._short:
                    log.warning("the Bitcoin hot wallet cannot pay the oldest queued %s withdrawal yet", symbol)
                self._short = True
                return None
            self._short = False
            change_index = wallet.next_change
            if p.change:
                wallet.next_change += 1
            signed = btcbuild.sign(p, acct.script(1, change_index), acct.key.child)
            payment = str(uuid.uuid4())
            version = BtcHotTransaction(
                id=payment,
                payment=payment,
                wallet=wallet.wallet,
                asset=symbol,
                attempt=0,
                state=BtcTxState.SIGNED,
                txid=signed.txid,
                raw=signed.raw,
                fee=p.fee,
                fee_rate=p.fee_rate,
                vsize=p.vsize,
                created_at=now,
                updated_at=now,
            )
            s.add(version)
            for c in p.coins:
                s.add(
                    BtcHotInput(
                        txid=c.txid, vout=c.vout, payment=payment, amount=c.amount, branch=c.branch, index=c.index
                    )
                )
            for w in withdrawals:
                s.add(BtcHotPayout(withdrawal_id=w.id, payment=payment))
                move(s, w, State.SIGNED, now, by="hot-worker", chain="bitcoin", payment=payment, tx_hash=signed.txid)
            audit.append(
                s,
                now,
                "btchot.signed",
                payment,
                {
                    "asset": symbol,
                    "txid": signed.txid,
                    "fee": str(p.fee),
                    "fee_rate": p.fee_rate,
                    "inputs": [f"{c.txid}:{c.vout}" for c in p.coins],
                    "withdrawals": [w.id for w in withdrawals],
                    "change": str(p.change),
                },
            )
            s.flush()  # a coin another payment holds fails here (its key), and nothing is stored
        failpoint("btc_after_store")
        return version

    def _coins(self, acct: btcwallet.HotAccount, watch: BitcoinNode, held: set[tuple[str, int]]) -> list[btcbuild.Coin]:
        """Confirmed coins of the account not held by any payment, each checked against its key's script.
        Unconfirmed change is left alone: spending it would tie a payment to another one that a fee bump may
        replace."""
        coins = []
        for u in btcwallet.unspent(watch, 1):
            if (u.txid, u.vout) in held or u.branch not in (0, 1) or u.index is None:
                continue
            if btcbuild.coin_script(acct.key.child(u.branch, u.index)) != u.script:
                log.warning("coin %s:%s is not the key its derivation names: left alone", u.txid, u.vout)
                continue
            coins.append(btcbuild.Coin(u.txid, u.vout, u.amount, u.branch, u.index))
        return coins
