"""Velocity-window usage kept per asset, key and second equals the sum over the withdrawals that count,
through intake, cancellation and the migration that fills it from an existing database."""

from __future__ import annotations

import random
import time

from alembic import command
from alembic.config import Config
from sqlalchemy import select

from custody.clock import FixedClock
from custody.intake.apikeys import Principal
from custody.intake.withdrawals import Intake, NewWithdrawal, Withdrawals
from custody.ledger import usage
from custody.ledger.policy import PolicyCache
from custody.store.db import MIGRATIONS, Store
from custody.store.models import WindowUsage, Withdrawal
from policies.evaluate import window_totals
from tests.conftest import OMNIBUS, add_client, seed_policy

PERIODS = [1, 60, 3600, 86400]


def from_withdrawals(store: Store, asset: str, api_key: str, now: int) -> tuple[dict[int, int], dict[int, int]]:
    with store.read() as s:
        rows = s.execute(
            select(Withdrawal.created_at, Withdrawal.amount, Withdrawal.api_key, Withdrawal.state).where(
                Withdrawal.asset == asset
            )
        ).all()
    counting = [r for r in rows if usage.counts(r[3])]
    return (
        window_totals(((r[0], r[1]) for r in counting), now, PERIODS),
        window_totals(((r[0], r[1]) for r in counting if r[2] == api_key), now, PERIODS),
    )


def from_usage(store: Store, asset: str, api_key: str, now: int) -> tuple[dict[int, int], dict[int, int]]:
    with store.read() as s:
        return usage.totals(s, asset, api_key, now, PERIODS, PERIODS)


def test_usage_follows_intake_and_cancellation_exactly(seeded):
    rng = random.Random(7)
    now = int(time.time())
    clock = FixedClock(now)
    service = Withdrawals(seeded, PolicyCache(), clock)
    keys = [Principal(add_client(seeded, name).name, frozenset({"withdraw", "cancel"})) for name in ("k1", "k2")]
    made = []
    for round_ in range(12):
        batch = [
            Intake(rng.choice(keys), f"r{round_}-{i}", NewWithdrawal("ETH", str(rng.choice([1, 3, 60, 99])), OMNIBUS))
            for i in range(rng.randint(1, 6))
        ]
        made += [r[0] for r in service.create_many(batch) if isinstance(r, tuple)]
        for w in rng.sample(made, k=min(2, len(made))):
            if w.state in ("delayed", "queued_cold", "queued_hot"):
                who = next(k for k in keys if k.name == w.api_key)
                w.state = service.cancel(who, w.id).state
        clock.advance(rng.choice([0, 1, 30, 700]))
        for key in keys:
            assert from_usage(seeded, "ETH", key.name, clock.now()) == from_withdrawals(
                seeded, "ETH", key.name, clock.now()
            )
    assert any(w.state == "cancelled" for w in made) and any(w.state == "rejected" for w in made)


def test_the_migration_fills_usage_from_existing_withdrawals(db_url):
    now = int(time.time())
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    store = Store(db_url)
    try:
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        seed_policy(store, now)
        ck = add_client(store)
        service = Withdrawals(store, PolicyCache(), FixedClock(now))
        who = Principal(ck.name, frozenset({"withdraw", "cancel"}))
        ws = [service.create(who, f"m{i}", NewWithdrawal("ETH", "2", OMNIBUS))[0] for i in range(4)]
        service.cancel(who, ws[0].id)
        expected = from_withdrawals(store, "ETH", ck.name, now)
        with store.transaction() as s:
            s.query(WindowUsage).delete()
        with store.engine.begin() as conn:  # as a database made before usage was kept
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0006")
            command.upgrade(cfg, "head")
        assert expected[0][3600] == 6 * 10**18
        assert from_usage(store, "ETH", ck.name, now) == expected
    finally:
        store.dispose()
