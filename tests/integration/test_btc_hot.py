"""The hot wallet's Bitcoin account end to end on a real bitcoind -regtest and a real PostgreSQL: withdrawals queued
hot through the API paid in batched transactions signed in-process, each exactly once, whatever happens between
storing and sending, a reorg, a stuck payment replaced by a higher fee, or two workers at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from embit.transaction import Transaction
from sqlalchemy import select

from custody.api.client import CustodyClient
from custody.chain.bitcoin import BitcoinNode
from custody.clock import FixedClock
from custody.config import BitcoinSettings, render_config
from custody.hot.btcfollow import BtcHot
from custody.hot.btcpayer import BtcHotSettings
from custody.keys import create_daemon_keys, load_hot_bitcoin_accounts
from custody.ledger import audit
from custody.ops import status
from custody.store.db import Store
from custody.store.models import AuditEntry, BtcHotInput, BtcHotTransaction, BtcHotWallet, HotWallet, Withdrawal
from policies.loader import load_policy_toml
from tests.conftest import add_client, apply_policy, running_server
from tests.integration.bitcoin_helpers import btc_policy_text, mine
from tests.integration.conftest import PASSPHRASE

pytestmark = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # row locks: two workers at once
SAT = 10**8
CONFIRMATIONS = 2
STUCK = 600


@dataclass
class Hot:
    data_dir: Path
    config: Path
    store: Store
    client: object
    receivers: list[str]
    receiver: BitcoinNode
    clock: FixedClock
    node: BitcoinNode

    def worker(self) -> BtcHot:
        """A worker process's Bitcoin hot side, as a restart makes it: the keys from the sealed seed."""
        return BtcHot(
            self.store,
            self.node,
            load_hot_bitcoin_accounts(self.data_dir, PASSPHRASE),
            BtcHotSettings(CONFIRMATIONS, STUCK),
            self.clock,
        )


@pytest.fixture
def hot(tmp_path, db_url, bitcoind) -> Hot:
    data = tmp_path / "data"
    data.mkdir()
    _, eth_address = create_daemon_keys(data, PASSPHRASE, n=2**15)
    config = data / "custody.toml"
    settings = BitcoinSettings(bitcoind.url, bitcoind.user, bitcoind.password, confirmations=CONFIRMATIONS)
    config.write_text(render_config(data, db_url, bitcoin=settings))
    store = Store(db_url)
    store.migrate()
    receiver = bitcoind.node("hot-receiver")  # one wallet for the module (making one is slow); new addresses each
    if "hot-receiver" not in bitcoind.node().call("listwallets"):
        bitcoind.node().call("createwallet", "hot-receiver")
    receivers = [str(receiver.call("getnewaddress", "", "bech32")) for _ in range(5)]
    now = int(time.time())
    apply_policy(store, load_policy_toml(btc_policy_text(now, receivers, hot_limit="5", day_limit="1000")), now)
    with store.transaction() as s:  # what the Ethereum worker records first: the hot wallet's registered address
        s.add(HotWallet(address=eth_address, chain_id=31337, next_nonce=0, created_at=now))
    d = Hot(data, config, store, add_client(store), receivers, receiver, FixedClock(now), bitcoind.node())
    yield d
    store.dispose()


def fund(d: Hot, bitcoind, coins: list[str]) -> str:
    """Coins for the hot wallet at the address it shows, confirmed; its balance read."""
    worker = d.worker()
    worker.ready()
    with d.store.read() as s:
        address = s.execute(select(BtcHotWallet.address)).scalar_one()
    for amount in coins:
        bitcoind.faucet().call("sendtoaddress", address, Decimal(amount))
    mine(bitcoind, 1)
    worker.read_balance()
    return address


def queue(d: Hot, tmp_path: Path, amounts: list[tuple[str, str]]) -> list[str]:
    ids = []
    with running_server(d.store, tmp_path) as srv, CustodyClient(srv.url, d.client.name, d.client.key) as client:
        for amount, address in amounts:
            w = client.create_withdrawal("BTC", amount, address, idempotency_key=str(uuid.uuid4()))
            assert w["state"] == "queued_hot", w
            ids.append(w["id"])
    return ids


def states(d: Hot, ids: list[str]) -> list[str]:
    with d.store.read() as s:
        return [s.execute(select(Withdrawal.state).where(Withdrawal.id == i)).scalar_one() for i in ids]


def versions(d: Hot) -> list[BtcHotTransaction]:
    with d.store.read() as s:
        return list(s.execute(select(BtcHotTransaction).order_by(BtcHotTransaction.created_at)).scalars())


def confirmed_once(d: Hot, ids: list[str]) -> None:
    with d.store.read() as s:
        kinds = Counter(
            (e.kind, e.subject) for e in s.execute(select(AuditEntry).where(AuditEntry.subject.in_(ids))).scalars()
        )
    assert all(kinds[("withdrawal.confirmed", i)] == 1 for i in ids), kinds
    assert audit.verify_log(d.store).ok


def received(d: Hot) -> dict[str, Decimal]:
    return {a: Decimal(d.receiver.call("getreceivedbyaddress", a)) for a in d.receivers}


def test_pays_twenty_withdrawals_in_one_transaction_once(hot, bitcoind, tmp_path):
    d = hot
    address = fund(d, bitcoind, ["10", "5"])
    shown = "\n".join(status.render(status.gather(d.store)))  # what `custody status` prints
    assert f"bitcoin hot  regtest: fund at {address}, balance 15 BTC" in shown, shown
    amounts = [(f"0.{i + 1:02d}", d.receivers[i % 5]) for i in range(20)]
    ids = queue(d, tmp_path, amounts)
    before = received(d)
    worker = d.worker()
    assert worker.step()
    [tx] = versions(d)
    assert tx.state == "broadcast" and states(d, ids) == ["broadcast"] * 20
    decoded = Transaction.from_string(tx.raw)
    assert len(decoded.vout) == 21 and all(v.sequence == 0xFFFFFFFD for v in decoded.vin)
    entry = bitcoind.node().call("getmempoolentry", tx.txid)
    assert int(Decimal(entry["fees"]["base"]) * SAT) == int(tx.fee) and int(tx.fee) >= 10 * int(entry["vsize"])
    mine(bitcoind, 1)
    worker.step()
    assert states(d, ids) == ["broadcast"] * 20  # one block is not deep enough
    mine(bitcoind, 1)
    worker.step()
    assert states(d, ids) == ["confirmed"] * 20
    confirmed_once(d, ids)
    paid: dict[str, Decimal] = {}
    for amount, to in amounts:
        paid[to] = paid.get(to, Decimal(0)) + Decimal(amount)
    after = received(d)
    assert {a: after[a] - before[a] for a in d.receivers} == paid
    with d.store.read() as s:
        wallet = s.execute(select(BtcHotWallet)).scalar_one()
        assert set(s.execute(select(Withdrawal.tx_hash).where(Withdrawal.id.in_(ids))).scalars()) == {tx.txid}
    fee = Decimal(int(tx.fee)) / SAT
    assert wallet.balance == (15 * SAT) - sum(int(Decimal(a) * SAT) for a, _ in amounts) - int(tx.fee)
    assert 0 < fee <= Decimal("0.001")
    # nothing left to pay: a pass does nothing new
    worker.step()
    assert len(versions(d)) == 1


# One pass of a worker process's Bitcoin hot side, as `custody worker` runs it (a failpoint may kill it midway)
ONE_STEP = (
    "import sys\n"
    "from custody.chain.bitcoin import BitcoinNode\n"
    "from custody.clock import SystemClock\n"
    "from custody.hot.btcfollow import BtcHot\n"
    "from custody.hot.btcpayer import BtcHotSettings\n"
    "from custody.keys import load_hot_bitcoin_accounts\n"
    "from custody.store.db import Store\n"
    "from pathlib import Path\n"
    "url, user, password, db, data, pw, stuck = sys.argv[1:]\n"
    "BtcHot(Store(db), BitcoinNode(url, user, password), load_hot_bitcoin_accounts(Path(data), pw),\n"
    "       BtcHotSettings(2, int(stuck)), SystemClock()).step()\n"
)


def test_a_crash_after_storing_and_a_reorg_send_the_stored_bytes(hot, bitcoind, tmp_path):
    """A worker process killed (SIGKILL) right after it stored the signed payment: the next one sends exactly
    those bytes, and builds nothing new for the same withdrawals; a reorg then sends the same bytes again."""
    d = hot
    fund(d, bitcoind, ["3"])
    ids = queue(d, tmp_path, [("0.5", d.receivers[0]), ("0.25", d.receivers[1])])
    env = {**os.environ, "CUSTODY_FAILPOINT": "btc_after_store"}
    args = [bitcoind.url, bitcoind.user, bitcoind.password, d.store.url, str(d.data_dir), PASSPHRASE, str(STUCK)]
    killed = subprocess.run([sys.executable, "-c", ONE_STEP, *args], env=env, timeout=60, check=False)
    assert killed.returncode == -9  # killed at the failpoint
    [tx] = versions(d)
    assert tx.state == "signed" and states(d, ids) == ["signed"] * 2
    with pytest.raises(Exception, match="not in mempool"):
        bitcoind.node().call("getmempoolentry", tx.txid)
    worker = d.worker()
    worker.step()
    assert [v.txid for v in versions(d)] == [tx.txid]
    assert bitcoind.node().call("getrawtransaction", tx.txid) == tx.raw
    assert states(d, ids) == ["broadcast"] * 2
    # then a reorg takes its block away: the block is forgotten and the same bytes go out again
    [block] = mine(bitcoind, 1)
    worker.step()
    assert versions(d)[0].block_hash == block
    bitcoind.node().call("invalidateblock", block)
    bitcoind.node().call("syncwithvalidationinterfacequeue")
    try:
        worker.step()
        [row] = versions(d)
        assert row.state == "broadcast" and row.block_hash is None and row.raw == tx.raw
        with d.store.read() as s:
            kinds = [e.kind for e in s.execute(select(AuditEntry).where(AuditEntry.subject == tx.payment)).scalars()]
        assert "btchot.reorged" in kinds
        assert bitcoind.node().call("getmempoolentry", tx.txid)
        # a longer chain without the old block (mined elsewhere: the same template would rebuild that block)
        mine(bitcoind, CONFIRMATIONS, str(d.receiver.call("getnewaddress", "", "bech32")))
        worker.step()
    finally:
        bitcoind.node().call("reconsiderblock", block)
    assert states(d, ids) == ["confirmed"] * 2 and [v.txid for v in versions(d)] == [tx.txid]
    confirmed_once(d, ids)

    # killed right after sending, before recording it: the next pass finds it sent and records it, nothing new
    [late] = queue(d, tmp_path, [("0.3", d.receivers[2])])
    env["CUSTODY_FAILPOINT"] = "btc_after_broadcast"
    killed = subprocess.run([sys.executable, "-c", ONE_STEP, *args], env=env, timeout=60, check=False)
    assert killed.returncode == -9
    [sent] = [v for v in versions(d) if v.txid != tx.txid]
    assert sent.state == "signed" and bitcoind.node().call("getmempoolentry", sent.txid)
    worker.step()
    assert [v.state for v in versions(d) if v.txid == sent.txid] == ["broadcast"] and states(d, [late]) == ["broadcast"]
    mine(bitcoind, CONFIRMATIONS)
    worker.step()
    assert states(d, [late]) == ["confirmed"] and len(versions(d)) == 2
    confirmed_once(d, [late])


def test_a_stuck_payment_is_replaced_and_exactly_one_version_confirms(hot, bitcoind, tmp_path):
    d = hot
    fund(d, bitcoind, ["4"])
    amounts = [("0.3", d.receivers[3]), ("0.2", d.receivers[4])]
    ids = queue(d, tmp_path, amounts)
    before = received(d)
    worker = d.worker()
    worker.step()
    [first] = versions(d)
    worker.step()
    assert len(versions(d)) == 1  # not stuck yet
    d.clock.advance(STUCK)
    worker.step()
    _, second = versions(d)
    assert second.payment == first.payment and second.attempt == 1 and second.state == "broadcast"
    spent = [{(i.txid.hex(), i.vout) for i in Transaction.from_string(v.raw).vin} for v in (first, second)]
    assert spent[0] == spent[1]  # the same coins: only one of the two can ever be mined
    assert int(second.fee) > int(first.fee) and second.fee_rate > first.fee_rate
    assert int(second.fee) - int(first.fee) >= second.vsize  # BIP-125: the incremental relay fee (1 sat/vB)
    assert second.fee_rate <= 50 and int(second.fee) <= 100_000
    mempool = set(bitcoind.node().call("getrawmempool"))
    assert second.txid in mempool and first.txid not in mempool
    # the original's stored bytes sent again (a stale replica) are refused: it cannot pay a second time
    with pytest.raises(Exception, match=r"insufficient fee|rejecting replacement"):
        bitcoind.node().call("sendrawtransaction", first.raw)
    mine(bitcoind, CONFIRMATIONS)
    worker.step()
    rows = {v.txid: v.state for v in versions(d)}
    assert rows == {first.txid: "replaced", second.txid: "confirmed"}
    assert states(d, ids) == ["confirmed"] * 2
    confirmed_once(d, ids)
    after = received(d)
    assert {a: after[a] - before[a] for a in d.receivers[3:]} == {a: Decimal(x) for x, a in amounts}
    with d.store.read() as s:
        assert set(s.execute(select(Withdrawal.tx_hash).where(Withdrawal.id.in_(ids))).scalars()) == {second.txid}

    # a replacement stored (the process stopped before sending it) while the original gets mined: the original
    # settles its withdrawal, the replacement is marked replaced and never sent
    [late] = queue(d, tmp_path, [("0.1", d.receivers[0])])
    worker.step()
    [third] = [v for v in versions(d) if v.payment not in (first.payment,)]
    d.clock.advance(STUCK)
    fourth = worker.replace(third)
    assert fourth is not None and fourth.state == "signed" and fourth.payment == third.payment
    mine(bitcoind, CONFIRMATIONS)  # the original, the only one the node has
    worker.step()
    assert {v.txid: v.state for v in versions(d) if v.payment == third.payment} == {
        third.txid: "confirmed",
        fourth.txid: "replaced",
    }
    assert states(d, [late]) == ["confirmed"]
    confirmed_once(d, [late])
    with pytest.raises(Exception, match="No such mempool or blockchain transaction"):
        bitcoind.node().call("getrawtransaction", fourth.txid)


def test_a_worker_killed_right_after_storing_a_fee_bump_pays_once(hot, bitcoind, tmp_path):
    """SIGKILL between storing a stuck payment's replacement and sending it: the next worker sends exactly the
    stored replacement, signs nothing new, and one version confirms."""
    d = hot
    fund(d, bitcoind, ["2"])
    ids = queue(d, tmp_path, [("0.4", d.receivers[1])])
    before = received(d)
    worker = d.worker()
    worker.step()
    [first] = versions(d)
    assert first.state == "broadcast"
    env = {**os.environ, "CUSTODY_FAILPOINT": "btc_after_replacement_store"}
    args = [bitcoind.url, bitcoind.user, bitcoind.password, d.store.url, str(d.data_dir), PASSPHRASE, "0"]
    killed = subprocess.run([sys.executable, "-c", ONE_STEP, *args], env=env, timeout=60, check=False)
    assert killed.returncode == -9  # killed at the failpoint, the replacement stored and not sent
    old, bump = versions(d)
    assert old.txid == first.txid and bump.payment == first.payment and bump.state == "signed"
    mempool = set(bitcoind.node().call("getrawmempool"))
    assert first.txid in mempool and bump.txid not in mempool
    worker.step()
    assert [v.txid for v in versions(d)] == [first.txid, bump.txid]  # nothing new signed
    mempool = set(bitcoind.node().call("getrawmempool"))
    assert bump.txid in mempool and first.txid not in mempool
    assert bitcoind.node().call("getrawtransaction", bump.txid) == bump.raw
    mine(bitcoind, CONFIRMATIONS)
    worker.step()
    assert {v.txid: v.state for v in versions(d)} == {first.txid: "replaced", bump.txid: "confirmed"}
    assert states(d, ids) == ["confirmed"]
    confirmed_once(d, ids)
    assert received(d)[d.receivers[1]] - before[d.receivers[1]] == Decimal("0.4")


def test_two_workers_never_spend_the_same_coin(hot, bitcoind, tmp_path):
    d = hot
    fund(d, bitcoind, ["1", "1", "1", "1", "1", "1"])
    amounts = [(f"0.{i + 1}", d.receivers[i % 5]) for i in range(8)]
    ids = queue(d, tmp_path, amounts)
    workers = [d.worker(), d.worker()]
    for w in workers:
        w.settings = BtcHotSettings(CONFIRMATIONS, STUCK, max_outputs=2)
        w.ready()
    errors: list[BaseException] = []

    def run(w: BtcHot) -> None:
        try:
            for _ in range(4):
                w.sign_next()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with d.store.read() as s:
        inputs = list(s.execute(select(BtcHotInput)).scalars())
    payments = versions(d)
    assert len(payments) == 4 and states(d, ids) == ["signed"] * 8
    spent = [(i.txid.hex(), i.vout) for v in payments for i in Transaction.from_string(v.raw).vin]
    assert len(spent) == len(set(spent)) == len(inputs)
    workers[0].step()
    assert {v.state for v in versions(d)} == {"broadcast"}
    mine(bitcoind, CONFIRMATIONS)
    workers[1].step()
    assert states(d, ids) == ["confirmed"] * 8
    confirmed_once(d, ids)


def test_the_daemon_s_worker_pays_hot_bitcoin_withdrawals(hot, bitcoind, tmp_path):
    """``hot_worker`` (what ``custody worker`` runs) with [bitcoin] rpc_url set has the Bitcoin hot step."""
    from custody.chain.devnode import Anvil

    with Anvil() as anvil:
        worker_pays(hot, bitcoind, tmp_path, anvil.url)


def worker_pays(d: Hot, bitcoind, tmp_path: Path, eth_url: str) -> None:
    from custody.cli.common import hot_worker
    from custody.config import load_settings

    settings = BitcoinSettings(bitcoind.url, bitcoind.user, bitcoind.password, confirmations=CONFIRMATIONS)
    d.config.write_text(render_config(d.data_dir, d.store.url, rpc_url=eth_url, bitcoin=settings))
    worker = hot_worker(load_settings(d.config), d.store, None, secret=PASSPHRASE)
    assert worker.bitcoin_hot_wallet is not None
    worker.step()  # registers the Bitcoin account on the node
    fund(d, bitcoind, ["2"])
    ids = queue(d, tmp_path, [("0.75", d.receivers[0]), ("0.5", d.receivers[1])])
    worker.step()
    assert states(d, ids) == ["broadcast"] * 2
    mine(bitcoind, CONFIRMATIONS)
    worker.step()
    assert states(d, ids) == ["confirmed"] * 2
    confirmed_once(d, ids)
