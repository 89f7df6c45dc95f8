"""Chaos: three replicas (each a `custody serve` and a `custody worker` process) on one PostgreSQL and anvil.
A load generator submits 200 withdrawals (500 under `make chaos`), 10 % of them sent again with the same
idempotency key to another replica, while one replica after another is killed with SIGKILL and restarted.
Afterwards every accepted withdrawal is paid exactly once, none is lost, the hot wallet's nonces have no gap, and
the audit log verifies."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from custody.api.client import CustodyClient
from custody.store.models import ChainBalance, HotTransaction, Withdrawal
from tests.cli_helpers import custody
from tests.conftest import free_port
from tests.integration.conftest import ETH, make_daemon

BIN = Path(sys.executable).parent
LONG = os.environ.get("CUSTODY_CHAOS_LONG") == "1"
# `make test` runs a shorter storm (still several kills), `make chaos` the full one
WITHDRAWALS, RETRIED_SHARE, REPLICAS = (500 if LONG else 200), 0.10, 3


class Replica:
    def __init__(self, daemon, port: int) -> None:
        self.daemon, self.port, self.url = daemon, port, f"http://127.0.0.1:{port}"
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "CUSTODY_DATABASE_URL"}
        cfg = ["--config", str(self.daemon.config)]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        self.procs = [
            subprocess.Popen([str(BIN / "custody"), "serve", *cfg, "--port", str(self.port)], **quiet),
            subprocess.Popen(
                [str(BIN / "custody"), "worker", *cfg, "--passphrase-file", str(self.daemon.passphrase_file)], **quiet
            ),
        ]

    def kill(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGKILL)
            p.wait(10)

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_ready(replicas: list[Replica], timeout: float = 30) -> None:
    deadline = time.time() + timeout
    for r in replicas:
        while time.time() < deadline:
            try:
                if httpx.get(r.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_replicas_killed_at_random_pay_every_withdrawal_exactly_once(tmp_path, db_url, chain):
    daemon = make_daemon(tmp_path, db_url, chain, n_recipients=50)
    replicas = [Replica(daemon, free_port()) for _ in range(REPLICAS)]
    for r in replicas:
        r.start()
    wait_ready(replicas)
    deadline = time.time() + 60
    while time.time() < deadline:  # a worker has read the hot balance: from now on small withdrawals go hot
        with daemon.store.read() as s:
            if s.execute(select(ChainBalance).where(ChainBalance.wallet == daemon.hot)).first():
                break
        time.sleep(0.1)

    stop, kills = threading.Event(), []

    def chaos() -> None:
        rng = random.Random(7)
        while not stop.wait(3.0):
            victim = rng.choice(replicas)
            victim.kill()
            kills.append(victim.port)
            time.sleep(0.5)
            victim.start()

    accepted: dict[str, tuple[str, int]] = {}  # withdrawal id -> (recipient, base units)
    lock = threading.Lock()

    def send(first: int, key: str, amount: Decimal, recipient: str) -> tuple[dict, int]:
        """Like a backend would: try the replicas in turn until one answers; returns the answer and which
        replica gave it."""
        for tries in range(300):
            replica = (first + tries) % REPLICAS
            try:
                with CustodyClient(
                    replicas[replica].url, daemon.client_key.name, daemon.client_key.key, timeout=10
                ) as c:
                    return c.create_withdrawal("ETH", str(amount), recipient, idempotency_key=key, retries=1), replica
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("no replica answered")

    def submit(i: int) -> None:
        recipient = daemon.recipients[i % len(daemon.recipients)]
        amount = Decimal("0.01") + Decimal(i) / 10**6
        key = uuid.uuid4().hex
        w, replica = send(i, key, amount, recipient)
        assert w["decision"]["route"] == "hot" and w["state"] != "rejected", w  # a retry may find it paid already
        if i % int(1 / RETRIED_SHARE) == 0:  # the same request again, from another connection and replica
            again, _ = send(replica + 1, key, amount, recipient)
            assert again["id"] == w["id"]
        with lock:
            accepted[w["id"]] = (recipient, int(w["amount_base_units"]))

    killer = threading.Thread(target=chaos)
    killer.start()
    try:
        with ThreadPoolExecutor(12) as pool:
            list(pool.map(submit, range(WITHDRAWALS)))
        deadline = time.time() + 300
        while time.time() < deadline:
            with daemon.store.read() as s:
                states = Counter(s.execute(select(Withdrawal.state)).scalars())
            if states == Counter({"confirmed": WITHDRAWALS}):
                break
            time.sleep(1)
        stop.set()
        killer.join()
    finally:
        stop.set()
        for r in replicas:
            r.stop()

    assert len(kills) >= 3, kills
    assert len(accepted) == WITHDRAWALS
    with daemon.store.read() as s:
        rows = list(s.execute(select(Withdrawal.id, Withdrawal.state)).all())
        mined = list(
            s.execute(
                select(HotTransaction.nonce).where(HotTransaction.state == "mined").order_by(HotTransaction.nonce)
            ).scalars()
        )
    assert {wid for wid, _ in rows} == set(accepted) and {st for _, st in rows} == {"confirmed"}, Counter(
        st for _, st in rows
    )
    owed: dict[str, int] = defaultdict(int)
    for recipient, amount in accepted.values():
        owed[recipient] += amount
    for recipient, amount in owed.items():
        assert chain.eth_balance(recipient) == amount, recipient  # paid exactly once
    assert mined == list(range(WITHDRAWALS))  # one mined version per nonce, no gap
    assert chain.w3.eth.get_transaction_count(daemon.hot) == WITHDRAWALS
    assert "intact" in custody("audit", "verify", "--config", daemon.config).output
    assert sum(owed.values()) < 10 * ETH
