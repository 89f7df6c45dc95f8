"""Crashes, stuck fees, reorgs and node outages: every withdrawal is still paid exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from eth_account import Account
from sqlalchemy import select

from custody.api.client import CustodyClient
from custody.chain.devnode import FUNDER_KEY, Anvil
from custody.clock import SystemClock
from custody.hot.sender import FAILPOINT_ENV
from custody.intake.withdrawals import NewWithdrawal, Withdrawals
from custody.ledger.policy import PolicyCache
from custody.store.models import HotTransaction, Withdrawal
from tests.conftest import running_server
from tests.integration.conftest import deploy_token, make_daemon
from tests.integration.test_hot_wallet import assert_paid_once, states_of, wait_until

CUSTODY = str(Path(sys.executable).parent / "custody")


def drive(worker, done, timeout: float = 60) -> None:
    """Run worker passes until ``done()`` holds."""

    def step_then_check() -> bool:
        worker.step()
        return bool(done())

    wait_until(step_then_check, timeout=timeout)


def submit(daemon, n: int) -> dict[str, tuple[str, int]]:
    """n hot withdrawals straight through the service, alternating ETH and the token."""
    from custody.intake.apikeys import Principal

    service = Withdrawals(daemon.store, PolicyCache(), SystemClock())
    who = Principal(daemon.client_key.name, frozenset({"withdraw"}))
    expected = {}
    for i, recipient in enumerate(daemon.recipients[:n]):
        asset, text, base = (
            ("ETH", f"0.0{i + 1}", (i + 1) * 10**16) if i % 2 == 0 else ("TOK", f"{i + 1}", (i + 1) * 10**6)
        )
        w, _ = service.create(who, f"crash-{i}", NewWithdrawal(asset, text, recipient))
        assert w.route == "hot" and w.state == "queued_hot"
        expected[recipient] = (asset, base)
    return expected


def worker_process(daemon, failpoint: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in (FAILPOINT_ENV, "CUSTODY_DATABASE_URL")}
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    with open(daemon.data_dir / "worker.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [CUSTODY, "worker", "--config", str(daemon.config), "--passphrase-file", str(daemon.passphrase_file)],
            env=env,
            stdout=log,
            stderr=log,
        )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def restart_until_paid(daemon, chain, expected: dict[str, tuple[str, int]]) -> None:
    """Start a fresh worker process, wait until everything is confirmed, and check it was paid once."""
    restarted = worker_process(daemon)
    try:
        wait_until(lambda: states_of(daemon.store).get("confirmed") == len(expected), timeout=90)
    finally:
        stop(restarted)
    assert_paid_once(daemon, chain, expected, start_nonce=0)


def prepared(tmp_path, chain, n: int, confirmations: int = 1):
    daemon = make_daemon(
        tmp_path, f"sqlite:///{tmp_path / 'custody.db'}", chain, n_recipients=n, confirmations=confirmations
    )
    daemon.worker(chain, confirmations=confirmations).step()  # registers the wallet and reads balances
    return daemon, submit(daemon, n)


@pytest.mark.parametrize("point", ["after_sign", "after_store", "after_broadcast"])
def test_sigkill_at_each_step_then_restart_pays_exactly_once(tmp_path, chain, point):
    daemon, expected = prepared(tmp_path, chain, 4)
    crashed = worker_process(daemon, point)
    assert crashed.wait(60) == -signal.SIGKILL, (daemon.data_dir / "worker.log").read_text()
    with daemon.store.read() as s:
        stored = s.execute(select(HotTransaction)).scalars().all()
    if point == "after_sign":
        assert stored == []  # signed in memory only: nothing stored, no nonce used
    elif point == "after_store":
        assert [(t.nonce, t.state) for t in stored] == [(0, "signed")]
    else:  # a pass stores its whole batch before broadcasting; the node has nonce 0, the database does not know
        assert {t.state for t in stored} == {"signed"} and chain.w3.eth.get_transaction_count(daemon.hot) == 1
    restart_until_paid(daemon, chain, expected)
    with daemon.store.read() as s:
        assert len(s.execute(select(HotTransaction)).scalars().all()) == 4


def test_sigkill_while_waiting_for_confirmations(tmp_path, chain):
    daemon, expected = prepared(tmp_path, chain, 3, confirmations=4)
    proc = worker_process(daemon)
    wait_until(lambda: states_of(daemon.store).get("broadcast") == 3, timeout=60)
    wait_until(lambda: chain.w3.eth.get_transaction_count(daemon.hot) == 3, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert states_of(daemon.store) == {"broadcast": 3}
    chain.anvil.rpc("anvil_mine", "0x5")
    restart_until_paid(daemon, chain, expected)


def test_a_stuck_payment_is_replaced_and_paid_once(tmp_path, chain):
    daemon, expected = prepared(tmp_path, chain, 1)
    chain.anvil.rpc("evm_setAutomine", False)
    worker = daemon.worker(chain, stuck_after=1)
    worker.step()
    with daemon.store.read() as s:
        first = s.execute(select(HotTransaction)).scalar_one()
    assert first.state == "broadcast"
    time.sleep(1.2)
    worker.step()  # not mined after 1 s: a replacement is signed and stored
    worker.step()  # ... and broadcast
    with daemon.store.read() as s:
        versions = s.execute(select(HotTransaction).order_by(HotTransaction.attempt)).scalars().all()
    assert [v.attempt for v in versions] == [0, 1] and {v.nonce for v in versions} == {first.nonce}
    assert versions[1].max_fee >= first.max_fee + first.max_fee // 8
    chain.anvil.rpc("evm_mine")
    drive(worker, lambda: states_of(daemon.store).get("confirmed") == 1, timeout=30)
    with daemon.store.read() as s:
        final = {v.attempt: v.state for v in s.execute(select(HotTransaction)).scalars()}
        w = s.execute(select(Withdrawal)).scalar_one()
    assert sorted(final.values()) == ["mined", "replaced"]
    assert w.tx_hash == versions[1].tx_hash  # the higher bid won the mempool
    assert_paid_once(daemon, chain, expected, start_nonce=0)


def test_a_reorged_out_payment_is_rebroadcast_and_confirmed_once(tmp_path, chain):
    daemon, expected = prepared(tmp_path, chain, 1, confirmations=3)
    snapshot = chain.anvil.rpc("evm_snapshot")
    worker = daemon.worker(chain, confirmations=3)
    worker.step()
    worker.step()  # mined (automine) at depth 1: recorded, not yet confirmed
    with daemon.store.read() as s:
        tx = s.execute(select(HotTransaction)).scalar_one()
    assert tx.mined_block is not None and states_of(daemon.store) == {"broadcast": 1}
    chain.anvil.rpc("evm_revert", snapshot)  # the block holding the payment is gone
    assert chain.w3.eth.get_transaction_count(daemon.hot) == 0
    worker.step()  # sees the receipt vanish, forgets the block, sends the same bytes again
    wait_until(lambda: chain.w3.eth.get_transaction_count(daemon.hot) == 1, timeout=30)
    chain.anvil.rpc("anvil_mine", "0x3")
    drive(worker, lambda: states_of(daemon.store).get("confirmed") == 1, timeout=30)
    with daemon.store.read() as s:
        rows = s.execute(select(HotTransaction)).scalars().all()
    assert len(rows) == 1 and rows[0].tx_hash == tx.tx_hash  # the same signed bytes, not a new payment
    assert_paid_once(daemon, chain, expected, start_nonce=0)


def test_node_down_requests_accepted_then_paid_when_it_is_back(tmp_path, token_artifact):
    state = tmp_path / "anvil-state.json"  # anvil keeps its chain in this file across restarts
    anvil = Anvil().start(state_file=state)
    try:
        _node_down_then_back(tmp_path, deploy_token(anvil, token_artifact), state)
    finally:
        anvil.stop()


def _node_down_then_back(tmp_path, chain, state) -> None:
    daemon = make_daemon(tmp_path, f"sqlite:///{tmp_path / 'custody.db'}", chain, n_recipients=4)
    worker = daemon.worker(chain)
    worker.step()  # registers the wallet and reads its balances while the node is up
    stop_event = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop_event, 0.1), daemon=True)
    chain.anvil.stop()
    thread.start()
    try:
        expected = {}
        with (
            running_server(daemon.store, tmp_path) as srv,
            CustodyClient(srv.url, daemon.client_key.name, daemon.client_key.key) as client,
        ):
            for i, recipient in enumerate(daemon.recipients):  # the API does not need the node
                w = client.create_withdrawal("ETH", f"0.{i + 1}", recipient, idempotency_key=f"down-{i}")
                assert (w["state"], w["decision"]["route"]) == ("queued_hot", "hot")
                expected[recipient] = ("ETH", (i + 1) * 10**17)
        time.sleep(1.0)
        assert states_of(daemon.store) == {"queued_hot": 4}
        chain.anvil.start(state_file=state)
        wait_until(lambda: states_of(daemon.store).get("confirmed") == 4, timeout=90)
    finally:
        stop_event.set()
        thread.join(30)
    assert_paid_once(daemon, chain, expected, start_nonce=0)


def test_a_reverted_payment_fails_with_its_reason_and_releases_the_reservation(tmp_path, chain):
    from custody.keys import load_hot_account
    from custody.ledger.positions import hot_position
    from tests.integration.conftest import PASSPHRASE

    daemon = make_daemon(tmp_path, f"sqlite:///{tmp_path / 'custody.db'}", chain, n_recipients=2, fund_tok=10**7)
    worker = daemon.worker(chain)
    worker.step()
    expected = submit(daemon, 2)  # 0.01 ETH, then 2 TOK: both routed hot against the balances read
    # Behind the daemon's back the hot wallet's tokens leave, so the token transfer must revert.
    hot = load_hot_account(daemon.data_dir, PASSPHRASE)
    drain = {
        "type": 2,
        "chainId": 31337,
        "nonce": 0,
        "to": chain.token.address,
        "value": 0,
        "data": chain.token.encode_abi("transfer", [Account.from_key(FUNDER_KEY).address, 10**7]),
        "gas": 100_000,
        "maxFeePerGas": 50 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    chain.w3.eth.wait_for_transaction_receipt(
        chain.w3.eth.send_raw_transaction(hot.sign_transaction(drain).raw_transaction)
    )
    with daemon.store.transaction() as s:  # the daemon's next nonce skips the one used outside it
        from custody.store.models import HotWallet

        s.get_one(HotWallet, daemon.hot).next_nonce = 1
    drive(worker, lambda: set(states_of(daemon.store)) == {"confirmed", "failed"}, timeout=60)
    with daemon.store.read() as s:
        failed = s.execute(select(Withdrawal).where(Withdrawal.state == "failed")).scalar_one()
        assert failed.asset == "TOK" and failed.failure.startswith("reverted in block")
        assert hot_position(s, PolicyCache().get(s).policy.assets["TOK"]).reserved == 0
    eth_recipient = daemon.recipients[0]
    assert chain.eth_balance(eth_recipient) == expected[eth_recipient][1]
    assert chain.token_balance(daemon.recipients[1]) == 0
