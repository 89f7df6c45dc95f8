"""`/metrics` in the Prometheus text format (prometheus_client).

Counted in the serving process: intake requests by outcome and their latency. Read from the database (and
the node) at each scrape, so every replica reports the same figures: withdrawals by state and asset, hot and
cold balances and the hot share per asset (a bitcoin asset's cold balance is the descriptor wallet's), batches
waiting for signatures, Bitcoin batches by state and those stuck, webhook backlog, whether payments
are frozen, and whether the node answers. Those figures are read by ``custody.ops.figures``, the same read
``custody status`` renders. While the database is unreachable the page still answers: those figures are left
out and ``custody_database_up`` is 0. What this process's loops cannot reach, and since when, comes from
``custody.outage.REGISTRY``.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from custody import outage
from custody.chain.ethereum import EthereumNode
from custody.config import Settings
from custody.ledger.policy import PolicyCache
from custody.ops.figures import Figures, node_answers, read_figures
from custody.store.db import Store, unavailable


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
    """The figures of ``custody.ops.figures``, read at each scrape, and whether the database and node answer."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store, self.cache = settings, store, PolicyCache()
        self.node = EthereumNode(settings.rpc_url, settings.chain_id, timeout=1.0) if settings.rpc_url else None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            figures: Figures | None = read_figures(self.store, self.cache, self.settings.webhook_urls)
        except Exception as exc:
            if not unavailable(exc):
                raise
            figures = None  # the page still says what it can: which dependency is down
        if figures is not None:
            yield from families(figures)
        database = GaugeMetricFamily("custody_database_up", "1 if this scrape could read the database")
        database.add_metric([], 0 if figures is None else 1)
        yield database
        up = GaugeMetricFamily("custody_node_up", "1 if the Ethereum node answered with the configured chain id")
        up.add_metric([], 1 if node_answers(self.node) else 0)
        yield up


def families(f: Figures) -> list[GaugeMetricFamily]:
    """The figures as gauges, in the page's order."""
    by_state = GaugeMetricFamily("custody_withdrawals", "Withdrawals by state and asset", labels=["state", "asset"])
    for c in f.withdrawals:
        by_state.add_metric([c.state, c.asset], c.n)
    waiting = GaugeMetricFamily("custody_batches_waiting", "Exported batches waiting for owners' signatures")
    waiting.add_metric([], len(f.batches_waiting))
    frozen = GaugeMetricFamily("custody_frozen", "1 while every outgoing payment is frozen")
    frozen.add_metric([], 1 if f.frozen else 0)
    freezes = GaugeMetricFamily(
        "custody_freezes",
        "Freezes in force by who made them (auto:chain-rollback: a deep rollback)",
        labels=["by"],
    )
    for by, n in Tally(x.by for x in f.freezes).items():
        freezes.add_metric([by], n)
    orphaned = GaugeMetricFamily(
        "custody_hot_orphaned_transactions",
        "Settled hot-wallet transactions whose block left the chain after confirmation (a deep rollback)",
    )
    orphaned.add_metric([], len(f.orphaned))
    hooks = GaugeMetricFamily("custody_webhook_backlog", "Events still to deliver, per URL", labels=["url"])
    for url, n in f.webhook_backlog.items():
        hooks.add_metric([url], n)
    return [by_state, *_balances(f), waiting, frozen, freezes, orphaned, hooks, *_bitcoin(f)]


def _bitcoin(f: Figures) -> list[GaugeMetricFamily]:
    """Bitcoin cold batches not settled yet by state, and those stuck in the mempool (a fee bump is due)."""
    batches = GaugeMetricFamily(
        "custody_btc_batches", "Bitcoin cold batches not settled yet, by state", labels=["state"]
    )
    for state, n in sorted(Tally(b.batch.state for b in f.btc_batches).items()):
        batches.add_metric([state], n)
    stuck = GaugeMetricFamily(
        "custody_btc_batches_stuck", "Broadcast Bitcoin batches not mined within [bitcoin] stuck_after"
    )
    stuck.add_metric([], sum(1 for b in f.btc_batches if b.stuck))
    return [batches, stuck]


def _balances(f: Figures) -> list[GaugeMetricFamily]:
    hot = GaugeMetricFamily("custody_hot_balance", "Hot wallet balance, in the asset's units", labels=["asset"])
    cold = GaugeMetricFamily(
        "custody_cold_balance", "Cold wallet (Safe) balance, in the asset's units", labels=["asset"]
    )
    share = GaugeMetricFamily("custody_hot_share", "Hot balance / (hot + cold), 0 to 1", labels=["asset"])
    for p in f.balances:
        unit = 10**p.decimals
        if p.hot.block is not None:
            hot.add_metric([p.asset], p.hot.balance / unit)
        if p.cold is not None:
            cold.add_metric([p.asset], p.cold / unit)
        if p.hot_share_bp is not None:
            share.add_metric([p.asset], p.hot_share_bp / 10_000)
    return [hot, cold, share]


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
