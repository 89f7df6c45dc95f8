"""The Bitcoin hot wallet's position: its reading is the BIP-84 wallet's (never the Ethereum hot wallet's), and
what hot-routed BTC withdrawals reserve of it follows their Bitcoin payments' heights, not Ethereum's blocks.

The database is written by hand here as the workers write it (``custody.hot.btcwallet.read_balance`` and
``custody.hot.btcfollow``); the real node's side is in tests/integration/test_btc_reorg.py.
"""

from __future__ import annotations

import time
import uuid

import pytest
from embit import ec
from embit.networks import NETWORKS
from embit.script import p2wpkh

from custody.clock import FixedClock
from custody.intake.apikeys import Principal
from custody.intake.withdrawals import NewWithdrawal, Withdrawals
from custody.ledger.policy import PolicyCache
from custody.ledger.positions import hot_position, hot_reading, reserved
from custody.ops.balances import read_balances
from custody.ops.status import gather
from custody.store.models import (
    BtcHotPayout,
    BtcHotTransaction,
    BtcHotWallet,
    ChainBalance,
    HotTransaction,
    HotWallet,
    Withdrawal,
)
from policies.loader import load_policy_toml
from tests.conftest import add_client, apply_policy
from tests.integration.bitcoin_helpers import btc_policy_text

SAT = 10**8
ETH = 10**18
HOT = "0x" + "11" * 20
WALLET = "custody-hot-regtest-abcd1234"
WHO = Principal("backend", frozenset({"withdraw", "read", "cancel"}))


def address(i: int) -> str:
    key = ec.PrivateKey((i + 1).to_bytes(32, "big"))
    return str(p2wpkh(key.get_public_key()).address(NETWORKS["regtest"]))


RECEIVERS = [address(i) for i in range(3)]


@pytest.fixture
def btc(store):
    now = int(time.time())
    apply_policy(store, load_policy_toml(btc_policy_text(now, RECEIVERS, hot_limit="5", day_limit="1000")), now)
    add_client(store)
    with store.transaction() as s:
        s.add(HotWallet(address=HOT, chain_id=31337, next_nonce=0, created_at=now))
        s.add(ChainBalance(wallet=HOT, asset="ETH", amount=3 * ETH, block=100, updated_at=now))
        # what the Bitcoin hot wallet used to write: its reading under the Ethereum hot wallet's address
        s.add(ChainBalance(wallet=HOT, asset="BTC", amount=50 * SAT, block=100, updated_at=now))
    store.now = now
    return store


def rules(store):
    with store.read() as s:
        return PolicyCache().get(s).policy.assets


def add_btc_wallet(store, balance: int, height: int, network: str = "regtest", name: str = WALLET) -> None:
    with store.transaction() as s:
        s.add(
            BtcHotWallet(
                wallet=name,
                network=network,
                descriptor=f"wpkh(...)#{name[-8:]}",
                address=RECEIVERS[0],
                next_change=0,
                created_at=store.now,
                balance=balance,
                balance_height=height,
            )
        )
        s.add(ChainBalance(wallet=name, asset="BTC", amount=balance, block=height, updated_at=store.now))


def withdrawal(store, amount: int, state: str, asset: str = "BTC", tx_hash: str | None = None) -> str:
    wid = str(uuid.uuid4())
    with store.transaction() as s:
        s.add(
            Withdrawal(
                id=wid,
                api_key="backend",
                idempotency_key=wid,
                request_hash="00" * 32,
                asset=asset,
                amount=amount,
                decimals=8 if asset == "BTC" else 18,
                destination=RECEIVERS[1] if asset == "BTC" else HOT,
                state=state,
                route="hot",
                outcome="allow",
                reasons="[]",
                policy_version=1,
                policy_hash="00" * 32,
                created_at=store.now,
                updated_at=store.now,
                tx_hash=tx_hash,
            )
        )
    return wid


def payment(store, withdrawals: list[str], state: str, height: int | None) -> str:
    """A hot Bitcoin payment of ``withdrawals``, its one version in ``state``, mined at ``height`` (None: not)."""
    pid = str(uuid.uuid4())
    txid = uuid.uuid4().hex * 2
    with store.transaction() as s:
        s.add(
            BtcHotTransaction(
                id=pid,
                payment=pid,
                wallet=WALLET,
                asset="BTC",
                attempt=0,
                state=state,
                txid=txid,
                raw="00",
                fee=1000,
                fee_rate=5,
                vsize=200,
                created_at=store.now,
                updated_at=store.now,
                block_hash=None if height is None else "ab" * 32,
                block_height=height,
            )
        )
        s.flush()
        for w in withdrawals:
            s.add(BtcHotPayout(withdrawal_id=w, payment=pid))
            row = s.query(Withdrawal).filter_by(id=w).one()
            if state == "confirmed":
                row.tx_hash = txid
    return pid


SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the sums are PostgreSQL's own below


@SQLITE_ONLY
def test_the_bitcoin_reading_is_the_bip84_wallet_s_not_the_ethereum_hot_wallet_s(btc):
    assets = rules(btc)
    with btc.read() as s:
        assert hot_reading(s, assets["BTC"]) is None  # the row under the Ethereum address is not Bitcoin's
        assert hot_reading(s, assets["ETH"]) == (3 * ETH, 100)
    add_btc_wallet(btc, 7 * SAT, 300, network="testnet", name="custody-hot-testnet-00000000")
    with btc.read() as s:
        assert hot_reading(s, assets["BTC"]) is None  # another network's wallet is not regtest's
    add_btc_wallet(btc, 2 * SAT, 500)
    with btc.read() as s:
        assert hot_reading(s, assets["BTC"]) == (2 * SAT, 500)
        assert hot_reading(s, assets["ETH"]) == (3 * ETH, 100)  # and the other way round
        position = hot_position(s, assets["BTC"])
    assert (position.balance, position.block, position.reserved) == (2 * SAT, 500, 0)


def test_a_payment_confirmed_above_the_reading_stays_reserved_until_a_newer_reading(btc):
    assets = rules(btc)
    add_btc_wallet(btc, 2 * SAT, 500)
    withdrawal(btc, 10_000, "queued_hot")
    sent = withdrawal(btc, 20_000, "broadcast")
    payment(btc, [sent], "broadcast", None)
    mined = withdrawal(btc, 40_000, "broadcast")
    payment(btc, [mined], "broadcast", 500)  # mined in a block the reading saw: the reading shows it paid
    above = withdrawal(btc, 80_000, "confirmed")
    payment(btc, [above], "confirmed", 501)  # confirmed after the reading: not shown by it
    below = withdrawal(btc, 160_000, "confirmed")
    payment(btc, [below], "confirmed", 499)
    orphan = withdrawal(btc, 320_000, "confirmed")
    payment(btc, [orphan], "orphaned", None)  # confirmed, then a deep reorg took it out: to be mined again
    # Ethereum's transactions say nothing about Bitcoin's withdrawals, even with the same hash
    with btc.transaction() as s:
        s.add(
            HotTransaction(
                wallet=HOT,
                nonce=0,
                attempt=0,
                tx_hash="0x" + "cd" * 32,
                raw="00",
                max_fee=1,
                priority_fee=1,
                state="mined",
                mined_block=10_000,
                created_at=btc.now,
            )
        )
    withdrawal(btc, 640_000, "confirmed", tx_hash="0x" + "cd" * 32)
    with btc.read() as s:
        taken = reserved(s, assets["BTC"], 500)
        assert taken == 10_000 + 20_000 + 80_000 + 320_000
        assert reserved(s, assets["BTC"], 501) == 10_000 + 20_000 + 320_000
        assert reserved(s, assets["BTC"], None) == 10_000 + 20_000 + 40_000
        assert hot_position(s, assets["BTC"]).free == 2 * SAT - taken
    # the same figures in GET /v1/balances and `custody status`
    [btc_position] = [p for p in read_balances(btc, PolicyCache()) if p.asset == "BTC"]
    assert (btc_position.hot.balance, btc_position.hot.reserved) == (2 * SAT, taken)
    [shown] = [b for b in gather(btc).balances if b["asset"] == "BTC"]
    assert (shown["hot"], shown["reserved"]) == ("2", "0.0043")


@SQLITE_ONLY
def test_intake_routes_bitcoin_by_the_bitcoin_wallet_s_free_balance(btc):
    add_btc_wallet(btc, 1 * SAT, 500)
    above = withdrawal(btc, SAT // 2, "confirmed")
    payment(btc, [above], "confirmed", 501)
    service = Withdrawals(btc, PolicyCache(), FixedClock(btc.now))
    # 0.5 BTC free (1 read, 0.5 paid since): the 50 BTC under the Ethereum address counts for nothing
    big, _ = service.create(WHO, "big", NewWithdrawal("BTC", "0.6", RECEIVERS[1]))
    small, _ = service.create(WHO, "small", NewWithdrawal("BTC", "0.4", RECEIVERS[1]))
    assert (big.route, small.route) == ("cold", "hot")
    late, _ = service.create(WHO, "late", NewWithdrawal("BTC", "0.2", RECEIVERS[2]))
    assert late.route == "cold"  # the 0.4 just queued hot is reserved too
