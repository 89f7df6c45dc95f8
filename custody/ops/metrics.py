"""`/metrics` in the Prometheus text format (prometheus_client).

Counted in the serving process: intake requests by outcome and their latency. Read from the database (and
the node) at each scrape, so every replica reports the same figures: withdrawals by state and asset, hot and
cold balances and the hot share per asset, batches waiting for signatures, webhook backlog, whether payments
are frozen, and whether the node answers. While the database is unreachable the page still answers: those
figures are left out and ``custody_database_up`` is 0. What this process's loops cannot reach, and since when,
comes from ``custody.outage.REGISTRY``.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from web3.exceptions import Web3RPCError

from custody import outage
from custody.chain.ethereum import EthereumNode
from custody.cold import batches
from custody.config import Settings
from custody.errors import DaemonError, NoActivePolicy
from custody.ledger import freeze
from custody.ledger.policy import PolicyCache
from custody.ledger.positions import cold_balance, hot_position, hot_share
from custody.ops.webhooks import backlog
from custody.store.db import Store, unavailable
from custody.store.models import Batch, HotTransaction, Withdrawal


class Metrics:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.intake = Counter(
            "custody_intake_requests",
            "Withdrawal requests by outcome (HTTP status class)",
            ["status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "custody_intake_seconds",
            "Time to answer a withdrawal request",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.registry.register(_FromDatabase(settings, store))
        self.registry.register(_Outages())

    def observe_intake(self, status: int, seconds: float) -> None:
        self.intake.labels(f"{status // 100}xx").inc()
        self.latency.observe(seconds)


class _FromDatabase(Collector):
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store, self.cache = settings, store, PolicyCache()
        self.node = EthereumNode(settings.rpc_url, settings.chain_id, timeout=1.0) if settings.rpc_url else None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            families, reachable = list(self._from_database()), 1
        except Exception as exc:
            if not unavailable(exc):
                raise
            families, reachable = [], 0  # the page still says what it can: which dependency is down
        database = GaugeMetricFamily("custody_database_up", "1 if this scrape could read the database")
        database.add_metric([], reachable)
        yield from families
        yield database
        up = GaugeMetricFamily("custody_node_up", "1 if the Ethereum node answered with the configured chain id")
        up.add_metric([], 1 if self._node_answers() else 0)
        yield up

    def _from_database(self) -> Iterator[GaugeMetricFamily]:
        by_state = GaugeMetricFamily("custody_withdrawals", "Withdrawals by state and asset", labels=["state", "asset"])
        hot = GaugeMetricFamily("custody_hot_balance", "Hot wallet balance, in the asset's units", labels=["asset"])
        cold = GaugeMetricFamily(
            "custody_cold_balance", "Cold wallet (Safe) balance, in the asset's units", labels=["asset"]
        )
        share = GaugeMetricFamily("custody_hot_share", "Hot balance / (hot + cold), 0 to 1", labels=["asset"])
        waiting = GaugeMetricFamily("custody_batches_waiting", "Exported batches waiting for owners' signatures")
        frozen = GaugeMetricFamily("custody_frozen", "1 while every outgoing payment is frozen")
        with self.store.read() as s:
            for state, asset, n in s.execute(
                select(Withdrawal.state, Withdrawal.asset, func.count()).group_by(Withdrawal.state, Withdrawal.asset)
            ).all():
                by_state.add_metric([state, asset], n)
            try:
                assets = self.cache.get(s).policy.assets
            except NoActivePolicy:
                assets = {}
            for symbol, rule in assets.items():
                unit = 10**rule.decimals
                h = hot_position(s, symbol)
                c = cold_balance(s, symbol)
                if h.block is not None:
                    hot.add_metric([symbol], h.balance / unit)
                if c is not None:
                    cold.add_metric([symbol], c / unit)
                basis_points = hot_share(h, c)
                if basis_points is not None:
                    share.add_metric([symbol], basis_points / 10_000)
            waiting.add_metric([], s.execute(select(func.count()).where(Batch.state == batches.EXPORTED)).scalar_one())
            frozen.add_metric([], 0 if freeze.active(s) is None else 1)
            freezes = GaugeMetricFamily(
                "custody_freezes",
                "Freezes in force by who made them (auto:chain-rollback: a deep rollback)",
                labels=["by"],
            )
            for by, n in Tally(f.by for f in freeze.all_active(s)).items():
                freezes.add_metric([by], n)
            orphaned = GaugeMetricFamily(
                "custody_hot_orphaned_transactions",
                "Settled hot-wallet transactions whose block left the chain after confirmation (a deep rollback)",
            )
            orphaned.add_metric(
                [], s.execute(select(func.count()).where(HotTransaction.state == "orphaned")).scalar_one()
            )
        yield from (by_state, hot, cold, share, waiting, frozen, freezes, orphaned)
        hooks = GaugeMetricFamily("custody_webhook_backlog", "Events still to deliver, per URL", labels=["url"])
        for url, n in backlog(self.store, self.settings.webhook_urls).items():
            hooks.add_metric([url], n)
        yield hooks

    def _node_answers(self) -> bool:
        if self.node is None:
            return False
        try:
            self.node.check_chain()
        except (DaemonError, ValueError, Web3RPCError):  # unreachable, another chain, or a bad answer
            return False
        return True


class _Outages(Collector):
    """``custody_dependency_down{loop,dependency}`` and how long, for each loop of this process (the API's
    requests, serve's scheduler) that cannot reach the database or the node right now; none while all is well."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["loop", "dependency"]
        down = GaugeMetricFamily("custody_dependency_down", "1 while a loop cannot reach a dependency", labels=labels)
        since = GaugeMetricFamily(
            "custody_dependency_down_seconds", "Seconds since a loop lost a dependency", labels=labels
        )
        now = time.time()
        for (loop, dependency), started in sorted(outage.REGISTRY.snapshot().items()):
            down.add_metric([loop, dependency], 1)
            since.add_metric([loop, dependency], round(now - started, 1))
        yield from (down, since)
