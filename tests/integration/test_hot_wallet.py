"""The hot wallet on a real anvil node: paid once, nonces contiguous, through the API and the client."""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

from sqlalchemy import select

from custody.api.client import CustodyClient
from custody.store.models import HotTransaction, Withdrawal
from tests.conftest import running_server
from tests.integration.conftest import make_daemon


def wait_until(predicate, timeout: float = 120, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def states_of(store) -> dict[str, int]:
    with store.read() as s:
        rows = s.execute(select(Withdrawal.state)).scalars().all()
    return {st: rows.count(st) for st in set(rows)}


def assert_paid_once(daemon, chain, expected: dict[str, tuple[str, int]], start_nonce: int) -> None:
    """Every recipient holds exactly its amount; the hot wallet's mined nonces are contiguous."""
    for recipient, (asset, amount) in expected.items():
        held = chain.eth_balance(recipient) if asset == "ETH" else chain.token_balance(recipient)
        assert held == amount, (recipient, asset, held, amount)
    with daemon.store.read() as s:
        mined = sorted(s.execute(select(HotTransaction.nonce).where(HotTransaction.state == "mined")).scalars())
    assert mined == list(range(start_nonce, start_nonce + len(expected)))
    assert chain.w3.eth.get_transaction_count(daemon.hot) == start_nonce + len(expected)


def test_two_hundred_hot_withdrawals_each_paid_exactly_once(tmp_path, db_url, chain):
    daemon = make_daemon(tmp_path, db_url, chain, n_recipients=200)
    worker = daemon.worker(chain)
    worker.step()  # registers the wallet and reads its balances, so intake can route hot
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, 0.1), daemon=True)
    thread.start()
    expected = {}
    try:
        with (
            running_server(daemon.store, tmp_path) as srv,
            CustodyClient(srv.url, daemon.client_key.name, daemon.client_key.key) as client,
        ):
            for i, recipient in enumerate(daemon.recipients):
                asset, amount, base = (
                    ("ETH", f"0.{i + 1:03d}", (i + 1) * 10**15)
                    if i % 2
                    else ("TOK", f"{i + 1}.5", (i + 1) * 10**6 + 500_000)
                )
                w = client.create_withdrawal(asset, amount, recipient, idempotency_key=str(uuid.uuid4()))
                assert w["decision"]["route"] == "hot", w["decision"]
                expected[recipient] = (asset, base)
            wait_until(lambda: states_of(daemon.store).get("confirmed") == 200, timeout=240)
            sample = client.list_withdrawals(state="confirmed", limit=1)["items"][0]
            assert sample["state"] == "confirmed"
            worker.refresh_balances()
            eth = {b["asset"]: b for b in client.balances()["assets"]}["ETH"]
            paid_eth = sum(amount for asset, amount in expected.values() if asset == "ETH")
            assert eth["reserved"] == "0" and eth["cold"] is None and eth["hot"] == eth["free"]
            assert 0 < 500 * 10**18 - paid_eth - int(Decimal(eth["hot"]) * 10**18) < 10**17  # only gas is missing
    finally:
        stop.set()
        thread.join(30)
    assert_paid_once(daemon, chain, expected, start_nonce=0)
