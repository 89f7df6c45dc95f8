"""The Bitcoin cold wallet end to end on a real bitcoind -regtest and a real database: three operators' cards, a
2-of-3 P2WSH descriptor watched by the node, cold withdrawals queued through the API, one PSBT batch, two owners'
signatures, finalize, broadcast, confirmations; and the ways it must not pay twice (re-import, a crash between
storing and sending, a reorg) or lose coins (expiry unlocks the inputs)."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from embit.psbt import PSBT
from sqlalchemy import select

from custody.api.client import CustodyClient
from custody.chain.bitcoin import BitcoinNode
from custody.clock import SystemClock
from custody.cold import btcexecution
from custody.config import BitcoinSettings, render_config
from custody.keys import create_daemon_keys
from custody.ledger import audit
from custody.store.db import Store
from custody.store.models import AuditEntry, BtcBatch, BtcBatchSignature, ChainBalance, Withdrawal
from policies.loader import load_policy_toml
from signer.btcbatch import parse_btc_batch_file
from tests.cli_helpers import custody
from tests.conftest import DAY, add_client, apply_policy, running_server
from tests.integration.bitcoin_helpers import btc_policy_text, mine
from tests.integration.conftest import PASSPHRASE, Operator, operators, prepare_signer, sign_as

SAT = 10**8
sign = sign_as  # the real ceremony (review, then sign); test_btc_bump imports it by this name
CONFIRMATIONS = 2


# Every path on PostgreSQL, the production database; the paying path on SQLite too (what `make demo` runs on).
# The store's own behaviour on both is the Ethereum tests' concern; two databases here would double the suite's
# slowest minutes for nothing Bitcoin-specific.
POSTGRES = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


@dataclass
class BtcDaemon:
    data_dir: Path
    config: Path
    passphrase_file: Path
    store: Store
    client: object
    ops: list[Operator]
    receivers: list[str]
    receiver: BitcoinNode
    wallet_file: Path

    @property
    def cfg(self) -> tuple[object, ...]:
        return ("--config", self.config, "--passphrase-file", self.passphrase_file)


@pytest.fixture
def btc(tmp_path, db_url, bitcoind) -> BtcDaemon:
    data = tmp_path / "data"
    data.mkdir()
    pw = tmp_path / "pass.txt"
    pw.write_text(PASSPHRASE + "\n")
    create_daemon_keys(data, PASSPHRASE, n=2**15)
    config = data / "custody.toml"
    settings = BitcoinSettings(bitcoind.url, bitcoind.user, bitcoind.password, confirmations=CONFIRMATIONS)
    config.write_text(render_config(data, db_url, bitcoin=settings))
    store = Store(db_url)
    store.migrate()
    name = f"receiver-{uuid.uuid4().hex[:8]}"
    bitcoind.node().call("createwallet", name)
    receiver = bitcoind.node(name)
    receivers = [str(receiver.call("getnewaddress", "", "bech32")) for _ in range(3)]
    now = int(time.time())
    apply_policy(store, load_policy_toml(btc_policy_text(now, receivers, hot_limit="0", day_limit="100")), now)
    client = add_client(store)
    ops = operators(tmp_path, pw, 3)
    cards = [x for op in ops for x in ("--owner-card", op.card)]
    out = custody(
        "cold",
        "create",
        "--chain",
        "bitcoin",
        "--network",
        "regtest",
        *cards,
        "--threshold",
        2,
        "--config",
        config,
        "--passphrase-file",
        pw,
    ).output
    wallet_file = data / "btc-cold-wallet-regtest.json"
    doc = json.loads(wallet_file.read_text())
    assert doc["descriptor"] in out and doc["threshold"] == 2
    assert [o["name"] for o in doc["owners"]] == ["op0", "op1", "op2"]
    d = BtcDaemon(data, config, pw, store, client, ops, receivers, receiver, wallet_file)
    for op in ops:
        prepare_signer(op, d, tmp_path, d.wallet_file)
    yield d
    store.dispose()


def fund(d: BtcDaemon, bitcoind, *, by_mining: bool = False) -> None:
    """Coins for the cold wallet: a block mined to its address (matured by 100 more), or 10 BTC from the faucet
    (fewer blocks: regtest halves the subsidy every 150)."""
    address = custody("cold", "address", "--network", "regtest", "--config", d.config).output.strip()
    assert address.startswith("bcrt1q") and len(address) == 64  # P2WSH
    if by_mining:
        mine(bitcoind, 1, address)
        mine(bitcoind, 100)
    else:
        bitcoind.faucet().call("sendtoaddress", address, Decimal(10))
        mine(bitcoind, 1)


def watch_wallet(d: BtcDaemon, bitcoind) -> BitcoinNode:
    doc = json.loads(d.wallet_file.read_text())
    return bitcoind.node(f"custody-cold-regtest-{doc['descriptor'].rsplit('#', 1)[1]}")


def queue(d: BtcDaemon, tmp_path: Path, amounts: list[tuple[str, str]]) -> list[str]:
    ids = []
    with (
        running_server(d.store, tmp_path) as srv,
        CustodyClient(srv.url, d.client.name, d.client.key) as client,
    ):
        for amount, address in amounts:
            w = client.create_withdrawal("BTC", amount, address, idempotency_key=str(uuid.uuid4()))
            assert w["state"] == "queued_cold", w
            ids.append(w["id"])
    return ids


def export(d: BtcDaemon, out: Path, *extra: object) -> Path:
    result = custody("batch", "export", "--chain", "bitcoin", "--out", out, *extra, *d.cfg)
    return Path(result.output.split("file")[-1].strip())


def refuse_altered_signatures(d: BtcDaemon, good: Path, tmp_path: Path) -> None:
    """Signature files a compromised host or a careless courier could hand the daemon: each refused with its
    code, and nothing stored."""
    from dataclasses import replace

    from signer.btcbatch import BtcSignature, parse_btc_signature_file

    sig = parse_btc_signature_file(good.read_bytes())
    psbt = PSBT.from_string(sig.psbt)
    [(pub, der)] = psbt.inputs[0].partial_sigs.items()
    psbt.inputs[0].partial_sigs[pub] = der[:8] + bytes([der[8] ^ 1]) + der[9:]
    cases: list[tuple[BtcSignature, str]] = [
        (replace(sig, fingerprint="00000000"), "not_a_safe_owner"),
        (replace(sig, batch_id=str(uuid.uuid4())), "not_found"),
        (replace(sig, psbt=psbt.to_string()), "partial_signature_invalid"),
    ]
    for i, (bad, code) in enumerate(cases):
        path = tmp_path / f"bad{i}.json"
        path.write_bytes(bad.to_bytes())
        out = custody("batch", "import", good, path, "--wait", "0", *d.cfg, ok=False).output
        assert f"[{code}]" in out, out
    with d.store.read() as s:
        assert s.execute(select(BtcBatchSignature)).first() is None


def states(d: BtcDaemon, ids: list[str]) -> list[str]:
    with d.store.read() as s:
        return [s.execute(select(Withdrawal.state).where(Withdrawal.id == i)).scalar_one() for i in ids]


def follower(d: BtcDaemon, bitcoind) -> btcexecution.BtcFollower:
    return btcexecution.BtcFollower(d.store, bitcoind.node(), CONFIRMATIONS, SystemClock())


def test_pays_each_withdrawal_once(btc, bitcoind, tmp_path):
    d = btc
    fund(d, bitcoind, by_mining=True)
    amounts = [("0.5", d.receivers[0]), ("1.25", d.receivers[1]), ("0.001", d.receivers[2])]
    ids = queue(d, tmp_path, amounts)
    watch = watch_wallet(d, bitcoind)
    before = Decimal(watch.call("getbalances")["mine"]["trusted"])

    batch_file = export(d, tmp_path / "out")
    doc = parse_btc_batch_file(batch_file.read_bytes())
    assert [w.id for w in doc.batch.withdrawals] == ids
    assert states(d, ids) == ["batched"] * 3
    locked = {(o["txid"], o["vout"]) for o in watch.call("listlockunspent")}
    psbt = PSBT.from_string(doc.batch.psbt)
    assert locked == {(vin.txid.hex(), vin.vout) for vin in psbt.tx.vin}
    assert all(inp.non_witness_utxo is not None for inp in psbt.inputs)
    # nothing else to pay: a second export is refused, and cannot take the locked coins anyway
    assert custody("batch", "export", "--chain", "bitcoin", "--out", tmp_path / "out", *d.cfg, ok=False).exit_code

    sigs = [tmp_path / f"sig{i}.json" for i in range(2)]
    for op, out in zip(d.ops[:2], sigs, strict=True):
        sign(op, batch_file, out, d.passphrase_file)
    refuse_altered_signatures(d, sigs[0], tmp_path)
    listing = custody("batch", "list", "--config", d.config).output
    assert "bitcoin" in listing and "signatures 0/2" in listing
    out = custody("batch", "import", *sigs, "--wait", "0", *d.cfg).output
    assert "signatures 2 of 2" in out
    assert states(d, ids) == ["broadcast"] * 3
    with d.store.read() as s:
        batch = s.execute(select(BtcBatch)).scalar_one()
    assert batch.state == "broadcast" and batch.final_tx is not None
    assert bitcoind.node().call("getmempoolentry", batch.txid)

    again = custody("batch", "import", *sigs, "--wait", "0", *d.cfg).output  # harmless
    assert "none new" in again and states(d, ids) == ["broadcast"] * 3

    mine(bitcoind, 1)
    follower(d, bitcoind).step()
    assert states(d, ids) == ["broadcast"] * 3  # one block is not deep enough
    mine(bitcoind, 1)
    custody("batch", "follow", "--config", d.config)
    assert states(d, ids) == ["confirmed"] * 3

    received = {a: Decimal(d.receiver.call("getreceivedbyaddress", a)) for a in d.receivers}
    assert received == {a: Decimal(x) for x, a in amounts}
    after = Decimal(watch.call("getbalances")["mine"]["trusted"])
    paid = sum(Decimal(x) for x, _ in amounts)
    assert before - after == paid + Decimal(batch.fee) / SAT
    assert batch.fee <= 100_000
    assert watch.call("listlockunspent") == []
    with d.store.read() as s:
        kinds = Counter(
            (e.kind, e.subject) for e in s.execute(select(AuditEntry).where(AuditEntry.subject.in_(ids))).scalars()
        )
        assert all(kinds[("withdrawal.confirmed", i)] == 1 for i in ids)
        assert s.execute(select(Withdrawal.tx_hash).where(Withdrawal.id.in_(ids))).scalars().all() == [batch.txid] * 3
    assert audit.verify_log(d.store).ok
    # a second create for the same cards says so, and makes nothing
    cards = [x for op in d.ops for x in ("--owner-card", op.card)]
    again = custody(
        "cold", "create", "--chain", "bitcoin", "--network", "regtest", *cards, "--threshold", 2, *d.cfg, ok=False
    )
    assert again.exit_code != 0 and "exists already" in again.output


@POSTGRES
def test_expiry_unlocks_the_inputs_and_requeues(btc, bitcoind, tmp_path):
    d = btc
    fund(d, bitcoind)
    ids = queue(d, tmp_path, [("0.2", d.receivers[0])])
    watch = watch_wallet(d, bitcoind)
    export(d, tmp_path / "out", "--expires-in", "1s")
    assert states(d, ids) == ["batched"] and len(watch.call("listlockunspent")) >= 1
    time.sleep(1.5)
    custody("batch", "follow", "--config", d.config)
    assert states(d, ids) == ["queued_cold"]
    assert watch.call("listlockunspent") == []
    with d.store.read() as s:
        assert s.execute(select(BtcBatch.state)).scalar_one() == "expired"
    # and it goes out again in a new batch
    export(d, tmp_path / "out2")
    assert states(d, ids) == ["batched"]


@POSTGRES
def test_cancel_unlocks(btc, bitcoind, tmp_path):
    d = btc
    fund(d, bitcoind)
    ids = queue(d, tmp_path, [("0.3", d.receivers[1])])
    batch_file = export(d, tmp_path / "out")
    batch_id = parse_btc_batch_file(batch_file.read_bytes()).batch.id
    custody("batch", "cancel", batch_id, "--reason", "wrong amount", "--config", d.config)
    assert states(d, ids) == ["queued_cold"]
    assert watch_wallet(d, bitcoind).call("listlockunspent") == []


@POSTGRES
def test_crash_between_store_and_broadcast_sends_the_stored_bytes(btc, bitcoind, tmp_path):
    d = btc
    fund(d, bitcoind)
    ids = queue(d, tmp_path, [("0.7", d.receivers[2])])
    batch_file = export(d, tmp_path / "out")
    batch_id = parse_btc_batch_file(batch_file.read_bytes()).batch.id
    sigs = [tmp_path / f"sig{i}.json" for i in range(2)]
    for op, out in zip(d.ops[1:], sigs, strict=True):
        sign(op, batch_file, out, d.passphrase_file)
    from signer.btcbatch import parse_btc_signature_file

    now = int(time.time())
    btcexecution.import_signatures(d.store, [parse_btc_signature_file(p.read_bytes()) for p in sigs], now)
    # the process stores the final transaction, then dies before sending it
    txid = btcexecution.finalize(d.store, bitcoind.node(), batch_id, now)
    with d.store.read() as s:
        stored = s.get_one(BtcBatch, batch_id).final_tx
    assert states(d, ids) == ["signed"]
    with pytest.raises(Exception, match="not in mempool"):
        bitcoind.node().call("getmempoolentry", txid)
    # after the restart: the worker's pass sends exactly those bytes
    assert follower(d, bitcoind).step()
    assert states(d, ids) == ["broadcast"]
    assert bitcoind.node().call("getrawtransaction", txid) == stored
    # and an import of the same files again builds nothing new
    custody("batch", "import", *sigs, "--wait", "0", *d.cfg)
    with d.store.read() as s:
        assert s.get_one(BtcBatch, batch_id).final_tx == stored
    mine(bitcoind, CONFIRMATIONS)
    follower(d, bitcoind).step()
    assert states(d, ids) == ["confirmed"]


@POSTGRES
def test_reorg_puts_it_back_and_sends_it_again(btc, bitcoind, tmp_path):
    d = btc
    fund(d, bitcoind)
    ids = queue(d, tmp_path, [("0.4", d.receivers[0])])
    batch_file = export(d, tmp_path / "out")
    sigs = [tmp_path / f"sig{i}.json" for i in range(2)]
    for op, out in zip([d.ops[0], d.ops[2]], sigs, strict=True):
        sign(op, batch_file, out, d.passphrase_file)
    custody("batch", "import", *sigs, "--wait", "0", *d.cfg)
    with d.store.read() as s:
        batch = s.execute(select(BtcBatch)).scalar_one()
    [block] = mine(bitcoind, 1)
    follow = follower(d, bitcoind)
    follow.step()
    with d.store.read() as s:
        assert s.get_one(BtcBatch, batch.id).block_hash == block
    bitcoind.node().call("invalidateblock", block)  # the block is gone: the transaction is back in the mempool
    bitcoind.node().call("syncwithvalidationinterfacequeue")
    try:
        follow.step()
        with d.store.read() as s:
            row = s.get_one(BtcBatch, batch.id)
            assert row.state == "broadcast" and row.block_hash is None
            reorged = s.execute(select(AuditEntry).where(AuditEntry.kind == "batch.reorged")).scalars().all()
        assert [e.subject for e in reorged] == [batch.id]
        assert bitcoind.node().call("getmempoolentry", batch.txid)
        # a longer chain without the old block, with the transaction again (mined to another address: the same
        # template would rebuild the invalidated block itself)
        mine(bitcoind, CONFIRMATIONS, str(d.receiver.call("getnewaddress", "", "bech32")))
        follow.step()
        assert states(d, ids) == ["confirmed"]
    finally:
        bitcoind.node().call("reconsiderblock", block)  # leave the node's chain whole for the next test


@POSTGRES
def test_a_released_batch_goes_out_again_as_its_replacement(btc, bitcoind, tmp_path):
    """An owner signed the first batch before it was cancelled: their signer refuses those withdrawals and coins
    in any other transaction, so the next export declares that it replaces it and spends one of its coins."""
    d = btc
    fund(d, bitcoind)
    ids = queue(d, tmp_path, [("0.6", d.receivers[0]), ("0.05", d.receivers[1])])
    first = export(d, tmp_path / "out")
    first_doc = parse_btc_batch_file(first.read_bytes()).batch
    sign(d.ops[0], first, tmp_path / "early.json", d.passphrase_file)
    custody("batch", "cancel", first_doc.id, "--reason", "signers not available", "--config", d.config)
    assert states(d, ids) == ["queued_cold"] * 2

    second = export(d, tmp_path / "out2")
    doc = parse_btc_batch_file(second.read_bytes()).batch
    assert doc.replaces == first_doc.id and [w.id for w in doc.withdrawals] == ids
    spent = {(v.txid, v.vout) for v in PSBT.from_string(doc.psbt).tx.vin}
    assert spent & {(v.txid, v.vout) for v in PSBT.from_string(first_doc.psbt).tx.vin}
    sigs = [tmp_path / f"sig{i}.json" for i in range(2)]
    for op, out in zip(d.ops[:2], sigs, strict=True):  # op0 signed the first one too: its signer accepts the bump
        sign(op, second, out, d.passphrase_file)
    # the early signature is for the cancelled batch: refused, nothing stored
    refused = custody("batch", "import", tmp_path / "early.json", *d.cfg, ok=False)
    assert refused.exit_code != 0 and "cancelled" in refused.output
    custody("batch", "import", *sigs, "--wait", "0", *d.cfg)
    mine(bitcoind, CONFIRMATIONS)
    custody("batch", "follow", "--config", d.config)
    assert states(d, ids) == ["confirmed"] * 2
    # nothing is left to replace: the next export has nothing to do
    assert custody("batch", "export", "--chain", "bitcoin", "--out", tmp_path / "o3", *d.cfg, ok=False).exit_code


@POSTGRES
def test_two_batches_never_spend_the_same_coin(btc, bitcoind, tmp_path):
    d = btc
    fund(d, bitcoind)  # one coin of 10 BTC
    queue(d, tmp_path, [("3", d.receivers[0]), ("4", d.receivers[1])])
    watch = watch_wallet(d, bitcoind)
    first = parse_btc_batch_file(export(d, tmp_path / "a", "--max", 1).read_bytes()).batch
    # the node forgets its locks (a restart without them, an operator's unlock): the database remembers
    watch.call("lockunspent", True)
    assert watch.call("listlockunspent") == []
    refused = custody("batch", "export", "--chain", "bitcoin", "--out", tmp_path / "b", *d.cfg, ok=False)
    assert refused.exit_code != 0 and "cannot fund" in refused.output
    fund(d, bitcoind)
    second = parse_btc_batch_file(export(d, tmp_path / "b", "--max", 1).read_bytes()).batch
    coins = [{(v.txid.hex(), v.vout) for v in PSBT.from_string(b.psbt).tx.vin} for b in (first, second)]
    assert coins[0] and coins[1] and not coins[0] & coins[1]
    assert {(o["txid"], o["vout"]) for o in watch.call("listlockunspent")} == coins[0] | coins[1]


@POSTGRES
def test_the_safe_s_batches_leave_bitcoin_withdrawals_alone(tmp_path, db_url, chain):
    """One policy with ETH on the Safe and BTC on the descriptor: the Safe's export takes only the ETH one."""
    import dataclasses

    from policies.model import AssetRule, WhitelistEntry, Window
    from tests.integration.conftest import ETH, make_cold, queue_cold

    destination = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"

    def with_btc(policy, _key):
        btc = AssetRule(
            "BTC",
            True,
            8,
            20 * SAT,
            0,
            (Window(DAY, 100 * SAT),),
            chain="bitcoin",
            network="regtest",
            max_fee=100_000,
            max_fee_rate=50,
        )
        entry = WhitelistEntry(destination, ("BTC",), "btc receiver", int(time.time()) - DAY)
        return dataclasses.replace(
            policy, assets={**policy.assets, "BTC": btc}, whitelist={**policy.whitelist, destination: entry}
        )

    daemon, _, _, cfg, _ = make_cold(tmp_path, db_url, chain, edit_policy=with_btc)
    queue_cold(daemon, tmp_path, [("BTC", "0.5", destination), ("ETH", "6", daemon.recipients[0])])
    out = custody("batch", "export", "--out", tmp_path / "batches", *cfg).output
    assert "skipped" not in out  # not even looked at: not a withdrawal the Safe could pay
    (batch_file,) = (tmp_path / "batches").glob("batch-*.json")
    from signer.batchfile import parse_batch_file

    doc = parse_batch_file(batch_file.read_bytes()).batch
    assert [(w.asset, w.amount) for w in doc.withdrawals] == [("ETH", 6 * ETH)]
    with daemon.store.read() as s:
        btc_state = s.execute(select(Withdrawal.state).where(Withdrawal.asset == "BTC")).scalar_one()
    assert btc_state == "queued_cold"
    listing = json.loads(custody("batch", "list", "--json", "--config", daemon.config).output)
    assert [b["chain"] for b in listing] == ["ethereum"]


@POSTGRES
def test_create_finishes_after_a_stop_between_node_and_database(btc, bitcoind, tmp_path):
    """The node has the watch-only wallet, the database has no record (the process stopped in between, as a
    fresh database here): creating again reuses the node's wallet and writes the same file."""
    from custody.cold import btcwallet
    from signer.keystore import parse_owner_card

    d = btc
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    other.migrate()
    try:
        cards = [parse_owner_card(op.card.read_bytes()) for op in d.ops]
        out = tmp_path / "other"
        out.mkdir()
        key = (d.data_dir / "identity.pub").read_text().strip()
        made = btcwallet.create(other, bitcoind.node(), "regtest", 2, cards, key, out, int(time.time()))
        assert made.raw == d.wallet_file.read_bytes() and made.wallet == watch_wallet(d, bitcoind).wallet
        assert audit.verify_log(other).ok
    finally:
        other.dispose()


@POSTGRES
def test_the_worker_follows_bitcoin_batches(btc, bitcoind, tmp_path, chain, caplog):
    """The worker's pass moves Bitcoin batches along beside the hot wallet's work; bitcoind being away is one
    log line and does not stop the pass."""
    from custody.chain.ethereum import EthereumNode
    from custody.keys import load_hot_account
    from custody.loops.worker import Worker, WorkerSettings

    d = btc
    fund(d, bitcoind)
    ids = queue(d, tmp_path, [("0.9", d.receivers[1])])
    batch_file = export(d, tmp_path / "out")
    sigs = [tmp_path / f"sig{i}.json" for i in range(2)]
    for op, out in zip(d.ops[:2], sigs, strict=True):
        sign(op, batch_file, out, d.passphrase_file)
    custody("batch", "import", *sigs, "--wait", "0", *d.cfg)
    mine(bitcoind, CONFIRMATIONS)

    def worker(node: BitcoinNode) -> Worker:
        return Worker(
            d.store,
            EthereumNode(chain.anvil.url, 31337),
            load_hot_account(d.data_dir, PASSPHRASE),
            WorkerSettings(31337, 1, 200 * 10**9, 120),
            SystemClock(),
            bitcoin=btcexecution.BtcFollower(d.store, node, CONFIRMATIONS, SystemClock()),
        )

    away = worker(BitcoinNode("http://127.0.0.1:9", "nobody", "nothing", timeout=2))
    away.step()
    away.step()
    assert sum("bitcoind is unavailable" in r.getMessage() for r in caplog.records) == 1
    assert states(d, ids) == ["broadcast"]
    worker(bitcoind.node()).step()
    assert states(d, ids) == ["confirmed"]
    # the Ethereum node's balances are read for Ethereum assets only: its native coin is not BTC; BTC's is the
    # cold descriptor wallet's, read from its watch-only wallet on bitcoind
    with d.store.read() as s:
        read = {(row.wallet, row.asset) for row in s.execute(select(ChainBalance)).scalars()}
    assert {asset for _, asset in read if asset != "BTC"} == {"ETH"}
    assert {wallet for wallet, asset in read if asset == "BTC"} == {watch_wallet(d, bitcoind).wallet}


@POSTGRES
def test_proof_of_reserves_counts_bitcoin_only_with_the_bitcoin_node(btc, tmp_path):
    """A BTC column is counted from the Bitcoin wallets' coins (tests/integration/test_btc_por.py), never from the
    Ethereum node: without the Bitcoin node the snapshot refuses before reading anything, and says what to do."""
    from custody.errors import ConfigError
    from custody.por.snapshot import snapshot

    with pytest.raises(ConfigError, match="BTC is a Bitcoin asset: the snapshot needs the Bitcoin node") as refused:
        snapshot(btc.store, None, None, tmp_path / "liabilities.csv", tmp_path / "out", 0)  # type: ignore[arg-type]
    assert "leave it out with --assets" in refused.value.message
    assert not (tmp_path / "out").exists()
