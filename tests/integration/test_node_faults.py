"""The node misbehaving under the hot wallet, with real anvil processes and real `custody worker` processes:

- the node restarts from its state file without its mempool: the stored bytes are sent again at once, no
  replacement is signed, and every payment lands once;
- the chain rolls back deeper than the confirmation depth: the service freezes itself within one pass, says
  why (status, metrics, the `chain.rollback_detected` webhook), and pays nothing again until a quorum lifts
  the freeze, which sends the same signed transactions again;
- two workers find one stuck transaction at once: one replacement is signed, not two.

The longer versions (several restarts under load, a rollback under live worker processes at 1 s blocks) run
with `make chaos` (CUSTODY_CHAOS_LONG=1).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from custody.chain.devnode import Anvil
from custody.config import Settings
from custody.keys import load_identity
from custody.ledger import freeze
from custody.ops.metrics import Metrics
from custody.ops.webhooks import Dispatcher, sync_endpoints
from custody.store.models import AuditEntry, ChainBalance, HotTransaction, Withdrawal
from tests.cli_helpers import custody
from tests.conftest import free_port
from tests.integration.conftest import PASSPHRASE, deploy_token, make_daemon
from tests.integration.test_freeze import lift
from tests.integration.test_hot_recovery import stop, submit, worker_process
from tests.integration.test_hot_wallet import assert_paid_once, states_of, wait_until
from tests.integration.test_webhooks import Receiver, verified_events

CHAOS = pytest.mark.skipif(os.environ.get("CUSTODY_CHAOS_LONG") != "1", reason="long: run by `make chaos`")


def kinds(store) -> Counter:
    with store.read() as s:
        return Counter(s.execute(select(AuditEntry.kind)).scalars())


def versions(store) -> list[HotTransaction]:
    with store.read() as s:
        return list(s.execute(select(HotTransaction).order_by(HotTransaction.nonce, HotTransaction.attempt)).scalars())


def replacements(store) -> int:
    """Replacements signed: the audit entries, and stored versions past the first at a nonce (they agree)."""
    with store.read() as s:
        extra = s.execute(select(func.count()).where(HotTransaction.attempt > 0)).scalar_one()
    assert extra == kinds(store)["hottx.replacement_signed"]
    return int(extra)


def confirmed_once(store, ids) -> None:
    """Every withdrawal confirmed, each by exactly one audit entry."""
    with store.read() as s:
        rows = dict(s.execute(select(Withdrawal.id, Withdrawal.state)).all())
        confirmations = Counter(
            s.execute(select(AuditEntry.subject).where(AuditEntry.kind == "withdrawal.confirmed")).scalars()
        )
    assert {rows[i] for i in ids} == {"confirmed"}, Counter(rows.values())
    assert all(confirmations[i] == 1 for i in ids), confirmations


def in_mempool(anvil: Anvil) -> int:
    pool = anvil.rpc("txpool_status")
    return int(pool["pending"], 16) + int(pool["queued"], 16)


def wait_for_balance(daemon) -> None:
    """A worker has registered the wallet and read its balance: from now on small withdrawals route hot."""

    def read() -> bool:
        with daemon.store.read() as s:
            return s.execute(select(ChainBalance).where(ChainBalance.wallet == daemon.hot)).first() is not None

    wait_until(read, timeout=60, every=0.1)


def withdrawal_ids(store) -> list[str]:
    with store.read() as s:
        return list(s.execute(select(Withdrawal.id).order_by(Withdrawal.seq)).scalars())


# -- 1. the node restarts without its mempool -------------------------------------------------------------
def restart_without_mempool(tmp_path, db_url, token_artifact, *, workers: int, n: int, restarts: int) -> None:
    """``workers`` real `custody worker` processes pay ``n`` hot withdrawals while anvil (1 s blocks, a state
    file) is stopped with them all in its mempool and started again without it, ``restarts`` times."""
    state = tmp_path / "anvil-state.json"
    anvil = Anvil(block_time=1).start(state_file=state)
    procs = []
    try:
        chain = deploy_token(anvil, token_artifact)
        daemon = make_daemon(tmp_path, db_url, chain, n_recipients=n, confirmations=2, stuck_after=10)
        procs = [worker_process(daemon) for _ in range(workers)]
        wait_for_balance(daemon)
        per_round = [n // restarts + (1 if i < n % restarts else 0) for i in range(restarts)]
        expected, done, figures = {}, 0, []
        for k in per_round:
            anvil.rpc("anvil_setIntervalMining", 0)  # no more blocks: what is sent stays in the mempool
            expected.update(submit_range(daemon, done, k))
            done += k
            wait_until(lambda: states_of(daemon.store).get("broadcast", 0) == k, timeout=30, every=0.05)
            assert in_mempool(anvil) == k
            anvil.stop()  # its state file keeps every block; the mempool is not in it
            time.sleep(2.0)  # the workers find the node gone
            anvil.start(state_file=state)  # 1 s blocks again
            answering = time.monotonic()
            wait_until(lambda: states_of(daemon.store).get("confirmed", 0) == done, timeout=60, every=0.05)
            figures.append(time.monotonic() - answering)
        for p in procs:
            stop(p)
        ids = withdrawal_ids(daemon.store)
        print(
            f"\n{workers} worker(s), {n} payments, {restarts} node restart(s) without the mempool: from the node "
            f"answering to all confirmed {', '.join(f'{t:.1f} s' for t in figures)}; "
            f"rebroadcasts {kinds(daemon.store)['hottx.rebroadcast']}, replacements {replacements(daemon.store)}"
        )
        assert replacements(daemon.store) == 0  # nothing was stuck for its fee: the node had simply forgotten
        assert kinds(daemon.store)["hottx.rebroadcast"] == n  # each one found unknown and sent again, once
        confirmed_once(daemon.store, ids)
        assert_paid_once(daemon, chain, expected, start_nonce=0)  # balances, contiguous nonces, chain nonce
        assert "intact" in custody("audit", "verify", "--config", daemon.config).output
        log = (daemon.data_dir / "worker.log").read_text()
        assert "traceback" not in log
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        down = [x for x in lines if "node unreachable since" in x["message"]]
        back = [x for x in lines if "node reachable again" in x["message"]]
        assert len(down) == len(back) == workers * restarts, [x["message"] for x in lines if x["level"] != "info"]
        with daemon.store.read() as s:
            assert freeze.active(s) is None  # a restart that keeps every block is not a rollback
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
        anvil.stop()


def submit_range(daemon, start: int, k: int) -> dict[str, tuple[str, int]]:
    """Withdrawals ``start`` .. ``start + k - 1`` of ``submit``'s series (each to its own recipient)."""
    from custody.clock import SystemClock
    from custody.intake.apikeys import Principal
    from custody.intake.withdrawals import NewWithdrawal, Withdrawals
    from custody.ledger.policy import PolicyCache

    service = Withdrawals(daemon.store, PolicyCache(), SystemClock())
    who = Principal(daemon.client_key.name, frozenset({"withdraw"}))
    expected = {}
    for i in range(start, start + k):
        recipient = daemon.recipients[i]
        asset, text, base = (
            ("ETH", f"0.0{i % 9 + 1}", (i % 9 + 1) * 10**16) if i % 2 == 0 else ("TOK", f"{i + 1}", (i + 1) * 10**6)
        )
        w, _ = service.create(who, f"node-{i}", NewWithdrawal(asset, text, recipient))
        assert w.route == "hot" and w.state == "queued_hot"
        expected[recipient] = (asset, base)
    return expected


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_node_restarted_without_its_mempool_gets_the_same_bytes_and_no_replacement(tmp_path, db_url, token_artifact):
    restart_without_mempool(tmp_path, db_url, token_artifact, workers=2, n=8, restarts=1)


@CHAOS
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_chaos_node_restarts_again_and_again_under_three_workers(tmp_path, db_url, token_artifact):
    restart_without_mempool(tmp_path, db_url, token_artifact, workers=3, n=60, restarts=4)


# -- 2. a rollback deeper than the confirmation depth -------------------------------------------------------
def metric_values(daemon, chain) -> dict[tuple[str, tuple], float]:
    settings = Settings(data_dir=daemon.data_dir, database_url=daemon.store.url, rpc_url=chain.anvil.url)
    page = generate_latest(Metrics(settings, daemon.store).registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_rollback_deeper_than_the_confirmations_freezes_and_pays_nothing_twice(tmp_path, db_url, chain):
    daemon = make_daemon(tmp_path, db_url, chain, n_recipients=4, confirmations=2)
    worker = daemon.worker(chain, confirmations=2)
    worker.step()  # registers the wallet and reads its balances
    receiver = Receiver(free_port()).start()
    try:
        sync_endpoints(daemon.store, (receiver.url,), int(time.time()))  # events from now on go to it
        _rollback(tmp_path, daemon, chain, worker, receiver)
    finally:
        receiver.stop()


def _rollback(tmp_path, daemon, chain, worker, receiver) -> None:
    expected = submit(daemon, 3)
    paid = withdrawal_ids(daemon.store)
    deadline = time.time() + 60
    while states_of(daemon.store).get("confirmed") != 3:  # automine: a block per payment, then one on top
        assert time.time() < deadline
        worker.step()
        chain.anvil.rpc("evm_mine")
    first = min(t.mined_block for t in versions(daemon.store))
    assert all(chain.eth_balance(r) or chain.token_balance(r) for r in expected)
    assert chain.w3.eth.get_transaction_count(daemon.hot) == 3

    # The chain loses every block from the first payment's on: deeper than 2 confirmations.
    head = chain.w3.eth.block_number
    chain.anvil.rpc("anvil_rollback", head - first + 1)
    assert chain.w3.eth.get_transaction_count(daemon.hot) == 0
    chain.anvil.rpc("evm_mine")  # and goes on without them
    later = submit_range(daemon, 3, 1)  # queued now: it must not be paid either

    worker.step()  # one pass
    with daemon.store.read() as s:
        frozen = freeze.active(s)
    assert frozen is not None and frozen.by == freeze.ROLLBACK
    assert frozen.reason.startswith("chain rollback detected: 3 settled hot-wallet transaction(s) (nonce 0..2)")
    print(f"\nfrozen after one pass: {frozen.reason}")
    assert kinds(daemon.store)["chain.rollback_detected"] == 1
    rows = versions(daemon.store)
    assert [(t.nonce, t.state) for t in rows] == [(0, "orphaned"), (1, "orphaned"), (2, "orphaned")]
    confirmed_once(daemon.store, paid)  # what was reported stays reported: never moved back to queued

    for _ in range(5):  # more passes and blocks: nothing is signed or sent, the event is not repeated
        worker.step()
        chain.anvil.rpc("evm_mine")
    assert [(t.id, t.raw) for t in versions(daemon.store)] == [(t.id, t.raw) for t in rows]
    assert kinds(daemon.store)["chain.rollback_detected"] == 1
    assert states_of(daemon.store) == {"confirmed": 3, "queued_hot": 1}
    for recipient in {**expected, **later}:
        assert chain.eth_balance(recipient) == 0 and chain.token_balance(recipient) == 0
    assert chain.w3.eth.get_transaction_count(daemon.hot) == 0

    status = custody("status", "--config", daemon.config).output
    assert "FROZEN" in status and "chain rollback detected" in status and "CHAIN ROLLBACK: 3" in status
    figures = metric_values(daemon, chain)
    assert figures[("custody_frozen", ())] == 1
    assert figures[("custody_freezes", (("by", freeze.ROLLBACK),))] == 1
    assert figures[("custody_hot_orphaned_transactions", ())] == 3

    dispatcher = Dispatcher(daemon.store, load_identity(daemon.data_dir, PASSPHRASE), (receiver.url,))
    try:
        while dispatcher.step():
            pass
    finally:
        dispatcher.close()
    public = (daemon.data_dir / "identity.pub").read_text().strip()
    events = [e for e in verified_events(receiver, public) if e["type"] == "chain.rollback_detected"]
    assert len(events) == 1 and events[0]["subject"] == frozen.id
    gone = events[0]["data"]["transactions"]
    assert [t["nonce"] for t in gone] == [0, 1, 2] and {t["now"] for t in gone} == {"not on chain"}
    assert {t["withdrawal"] for t in gone} == set(paid)

    # A quorum looks, and lifts the freeze: that is the decision to send the same signed bytes again.
    lift(daemon, frozen.id, signers=2)
    deadline = time.time() + 60
    while states_of(daemon.store) != {"confirmed": 4} or any(t.state != "mined" for t in versions(daemon.store)):
        assert time.time() < deadline, [(t.nonce, t.state) for t in versions(daemon.store)]
        worker.step()
        chain.anvil.rpc("evm_mine")
    after = versions(daemon.store)
    assert [(t.id, t.raw) for t in after[:3]] == [(t.id, t.raw) for t in rows]  # the same bytes, not new ones
    assert len(after) == 4 and replacements(daemon.store) == 0
    assert kinds(daemon.store)["hottx.remined"] == 3
    assert_paid_once(daemon, chain, {**expected, **later}, start_nonce=0)  # each exactly once on this chain
    assert "intact" in custody("audit", "verify", "--config", daemon.config).output
    assert "running" in custody("status", "--config", daemon.config).output


@CHAOS
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_chaos_a_rollback_under_live_workers_at_one_second_blocks(tmp_path, db_url, token_artifact):
    anvil = Anvil(block_time=1).start()
    procs = []
    try:
        chain = deploy_token(anvil, token_artifact)
        daemon = make_daemon(tmp_path, db_url, chain, n_recipients=12, confirmations=2)
        procs = [worker_process(daemon) for _ in range(2)]
        wait_for_balance(daemon)
        expected = submit_range(daemon, 0, 8)
        wait_until(lambda: states_of(daemon.store).get("confirmed") == 8, timeout=60)
        paid = withdrawal_ids(daemon.store)
        first = min(t.mined_block for t in versions(daemon.store))
        anvil.rpc("anvil_rollback", anvil_head(anvil) - first + 1)
        rolled = time.monotonic()

        def frozen() -> bool:
            with daemon.store.read() as s:
                return freeze.active(s) is not None

        wait_until(frozen, timeout=15, every=0.05)
        print(f"\nrollback to frozen with 2 live workers: {time.monotonic() - rolled:.1f} s")
        later = submit_range(daemon, 8, 4)
        time.sleep(5)  # blocks go on; the workers pay nothing
        assert kinds(daemon.store)["chain.rollback_detected"] == 1
        confirmed_once(daemon.store, paid)
        assert states_of(daemon.store) == {"confirmed": 8, "queued_hot": 4}
        for recipient in {**expected, **later}:
            assert chain.eth_balance(recipient) == 0 and chain.token_balance(recipient) == 0
        with daemon.store.read() as s:
            lifted = freeze.active(s).id
        lift(daemon, lifted, signers=2)
        wait_until(lambda: states_of(daemon.store) == {"confirmed": 12}, timeout=60)
        wait_until(lambda: {t.state for t in versions(daemon.store)} == {"mined"}, timeout=60)
        for p in procs:
            stop(p)
        assert replacements(daemon.store) == 0
        assert_paid_once(daemon, chain, {**expected, **later}, start_nonce=0)
        assert "intact" in custody("audit", "verify", "--config", daemon.config).output
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
        anvil.stop()


def anvil_head(anvil: Anvil) -> int:
    return int(anvil.rpc("eth_blockNumber"), 16)


# -- 3. rebroadcast before replace; one replacement however many workers -----------------------------------
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_forgotten_transaction_is_sent_again_and_only_the_lowest_stuck_nonce_is_replaced(tmp_path, db_url, chain):
    daemon = make_daemon(tmp_path, db_url, chain, n_recipients=3)
    worker = daemon.worker(chain, stuck_after=2)  # whole seconds: 2 is 1 s at least
    worker.step()
    expected = submit(daemon, 3)
    chain.anvil.rpc("evm_setAutomine", False)
    worker.step()
    assert [t.state for t in versions(daemon.store)] == ["broadcast"] * 3 and in_mempool(chain.anvil) == 3
    time.sleep(2.2)
    chain.anvil.rpc("anvil_dropAllTransactions")  # the node forgets them, as a restart without its mempool does
    worker.step()  # past stuck_after, yet unknown to the node: the same bytes again, no replacement
    assert in_mempool(chain.anvil) == 3 and replacements(daemon.store) == 0
    assert kinds(daemon.store)["hottx.rebroadcast"] == 3
    time.sleep(2.2)
    worker.step()  # known, not mined for stuck_after: only the lowest nonce is for its fee; the rest wait on it
    assert [(t.nonce, t.attempt) for t in versions(daemon.store)] == [(0, 0), (0, 1), (1, 0), (2, 0)]
    chain.anvil.rpc("evm_setAutomine", True)
    chain.anvil.rpc("evm_mine")
    deadline = time.time() + 30
    while states_of(daemon.store).get("confirmed") != 3:
        assert time.time() < deadline
        worker.step()
    assert replacements(daemon.store) == 1
    assert_paid_once(daemon, chain, expected, start_nonce=0)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_workers_on_one_stuck_transaction_sign_one_replacement(tmp_path, db_url, chain):
    daemon = make_daemon(tmp_path, db_url, chain, n_recipients=1)
    a, b = daemon.worker(chain, stuck_after=1), daemon.worker(chain, stuck_after=1)
    a.step()
    expected = submit(daemon, 1)
    chain.anvil.rpc("evm_setAutomine", False)
    a.step()
    assert [t.state for t in versions(daemon.store)] == ["broadcast"]
    gate = threading.Barrier(2, timeout=10)
    for w in (a, b):  # both reach the decision together: each has read the same stuck version
        fees = w.node.fees

        def together(cap, fees=fees):
            gate.wait()
            return fees(cap)

        w.node.fees = together
    for round_ in (1, 2):
        time.sleep(1.2)
        errors = []

        def follow(w):
            try:
                w.follow()
            except Exception as exc:  # an abort on the unique index would land here
                errors.append(exc)

        threads = [threading.Thread(target=follow, args=(w,)) for w in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert [(t.attempt, t.state) for t in versions(daemon.store)][-1] == (round_, "signed")
        assert replacements(daemon.store) == round_  # one per round, not one per worker
        a.follow()  # sends it
    for w in (a, b):
        del w.node.fees  # the class's own again
    chain.anvil.rpc("evm_setAutomine", True)
    chain.anvil.rpc("evm_mine")
    deadline = time.time() + 30
    while states_of(daemon.store).get("confirmed") != 1:
        assert time.time() < deadline
        a.step()
        b.step()
    assert sorted(t.state for t in versions(daemon.store)) == ["mined", "replaced", "replaced"]
    assert_paid_once(daemon, chain, expected, start_nonce=0)
