"""The Bitcoin hot band and automatic freeze without a node: what the band decides for a BTC asset, how a sweep
address of the cold descriptor is recognised, and the hot outflow that ``auto_freeze`` counts over Bitcoin
payments (one payment pays several withdrawals; its fee bumps pay the same ones again, not more).

The database is written by hand as ``custody.hot.btcpayer`` writes it; the real node's side is
tests/integration/test_btc_rebalance.py."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import select

from custody.hot.rebalance import decide, own_script, receive_index
from custody.ledger import freeze
from custody.ledger import policy as policy_service
from custody.ledger.positions import REBALANCER, HotPosition
from custody.store.db import Store
from custody.store.models import BtcHotPayout, BtcHotTransaction, BtcHotWallet, Freeze, Withdrawal
from policies.errors import PolicyFileError
from policies.loader import load_policy_toml
from policies.model import AssetRule, Policy, Window
from signer.btckeys import account_key
from signer.btcwallet import BtcColdWallet, BtcOwner, descriptor_text
from tests.conftest import add_client, apply_policy, governance_for_tests
from tests.integration.bitcoin_helpers import btc_policy_text

SAT = 10**8
DAY = 86400
WALLET = "custody-hot-regtest-abcd1234"
RECEIVER = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
BTC = AssetRule(
    symbol="BTC",
    enabled=True,
    decimals=8,
    max_per_transfer=20 * SAT,
    hot_limit=5 * SAT,
    hot_min=SAT,
    hot_max=3 * SAT,
    hot_topup=Window(DAY, SAT // 2),
    auto_freeze=Window(DAY, SAT),
    chain="bitcoin",
    network="regtest",
    max_fee=SAT // 1000,
    max_fee_rate=50,
)


def at(free: int, block: int | None = 100, reserved: int = 0) -> HotPosition:
    return HotPosition("BTC", free + reserved, block, reserved)


# -- the band -------------------------------------------------------------------------------------------------
def test_above_the_band_the_excess_over_its_middle_is_swept():
    step = decide(BTC, at(5 * SAT), None)
    assert step is not None and (step.kind, step.amount, step.bound) == ("sweep", 3 * SAT, 3 * SAT)
    assert decide(BTC, at(3 * SAT), None) is None  # at the edge: inside
    assert decide(BTC, at(5 * SAT, block=None), None) is None  # never read: nothing is decided


def test_below_the_band_a_top_up_is_raised_within_the_signers_cap():
    step = decide(BTC, at(SAT // 2), None)
    assert step is not None and (step.kind, step.amount, step.bound) == ("top_up", SAT // 2, SAT)  # 1.5 capped
    uncapped = decide(replace(BTC, hot_topup=None), at(SAT // 2), None)
    assert uncapped is not None and uncapped.amount == 3 * SAT // 2
    # what hot withdrawals still to be paid reserve is not free: 1.2 held, 0.4 promised -> below 1
    step = decide(BTC, at(8 * SAT // 10, reserved=4 * SAT // 10), None)
    assert step is not None and step.kind == "top_up"


def test_a_band_in_shares_counts_the_cold_descriptors_balance():
    rule = replace(BTC, hot_min=None, hot_max=None, hot_min_share=500, hot_max_share=1000)
    assert decide(rule, at(5 * SAT), None) is None  # no cold reading yet: no share to take
    step = decide(rule, at(5 * SAT), 45 * SAT)  # total 50: band 2.5 to 5 -> inside
    assert step is None
    step = decide(rule, at(6 * SAT), 44 * SAT)  # band 2.5 to 5, middle 3.75
    assert step is not None and (step.kind, step.amount) == ("sweep", 6 * SAT - 375 * SAT // 100)


# -- the sweep's address: the cold descriptor's own receive branch -----------------------------------------
def cold_wallet() -> BtcColdWallet:
    keys = [account_key(bytes([i]) * 32, "regtest") for i in range(1, 4)]
    owners = tuple(BtcOwner(f"op{i}", k) for i, k in enumerate(keys))
    return BtcColdWallet("regtest", 2, owners, descriptor_text("regtest", 2, keys), "ab" * 32)


def test_the_sweep_address_is_derived_from_the_recorded_descriptor():
    """``own_script`` (embit over the descriptor text) against the signers' own derivation of the same wallet."""
    wallet = cold_wallet()
    for index in (0, 1, 7):
        assert own_script(wallet.descriptor, index) == wallet.script_pubkey(0, index)
    assert own_script(wallet.descriptor, 1) != wallet.script_pubkey(1, 1)  # change is never a sweep's


def test_the_receive_index_is_read_from_every_key_of_the_nodes_descriptor():
    desc = "wsh(sortedmulti(2,[aa/48h/1h/0h/2h/0/7]02{0},[bb/48h/1h/0h/2h/0/7]03{0}))#x".format("11" * 32)
    assert receive_index(desc) == 7
    assert receive_index(desc.replace("bb/48h/1h/0h/2h/0/7", "bb/48h/1h/0h/2h/0/8")) is None  # keys disagree
    assert receive_index(desc.replace("/0/7]", "/1/7]")) is None  # the change branch
    assert receive_index("addr(bcrt1q...)") is None  # not a key of any descriptor


# -- the automatic freeze over Bitcoin payments ---------------------------------------------------------------
@pytest.fixture
def db(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'band.db'}")
    store.migrate()
    add_client(store)
    now = int(time.time())
    with store.transaction() as s:
        s.add(
            BtcHotWallet(
                wallet=WALLET,
                network="regtest",
                descriptor="wpkh(...)#abcd1234",
                address=RECEIVER,
                next_change=0,
                created_at=now,
            )
        )
    yield store, now
    store.dispose()


def withdrawal(s, amount: int, now: int, *, key: str = "backend", state: str = "broadcast") -> Withdrawal:
    w = Withdrawal(
        id=str(uuid.uuid4()), api_key=key, idempotency_key=str(uuid.uuid4()), request_hash="0" * 64, asset="BTC",
        amount=amount, decimals=8, destination=RECEIVER, state=state, route="hot", outcome="allow", reasons="[]",
        policy_version=1, policy_hash="0" * 64, created_at=now, updated_at=now,
    )  # fmt: skip
    s.add(w)
    return w


def payment(s, withdrawals: list[Withdrawal], created_at: int, bumps: int = 0) -> None:
    """One hot payment of ``withdrawals`` as the payer stores it, and ``bumps`` fee replacements of it."""
    first = str(uuid.uuid4())
    for attempt in range(bumps + 1):
        s.add(
            BtcHotTransaction(
                id=first if attempt == 0 else str(uuid.uuid4()), payment=first, wallet=WALLET, asset="BTC",
                attempt=attempt, state="broadcast", txid=uuid.uuid4().hex * 2, raw="00", fee=1000, fee_rate=5,
                vsize=200, created_at=created_at + attempt, updated_at=created_at + attempt,
            )
        )  # fmt: skip
    for w in withdrawals:
        s.add(BtcHotPayout(withdrawal_id=w.id, payment=first))


def test_the_hot_outflow_counts_each_bitcoin_payout_once_and_no_sweep(db):
    store, now = db
    with store.transaction() as s:
        a, b = withdrawal(s, 6 * SAT // 10, now), withdrawal(s, 3 * SAT // 10, now)
        payment(s, [a, b], now - 60, bumps=2)  # fee bumps pay the same withdrawals: counted once
        payment(s, [withdrawal(s, 2 * SAT, now, key=REBALANCER)], now - 50)  # a sweep to the cold wallet
        payment(s, [withdrawal(s, 7 * SAT, now)], now - 2 * DAY)  # before the window
        payment(s, [withdrawal(s, 5 * SAT, now, state="failed")], now - 40)
    with store.read() as s:
        assert freeze.hot_outflow(s, "BTC", now - DAY) == 9 * SAT // 10
        assert freeze.hot_outflow(s, "ETH", now - DAY) == 0


def test_a_bitcoin_payment_over_the_outflow_limit_freezes_everything(db):
    store, now = db
    policy = Policy(governance=governance_for_tests(), assets={"BTC": BTC}, whitelist={}, deny={}, api_keys={})
    with store.transaction() as s:
        payment(s, [withdrawal(s, 6 * SAT // 10, now)], now - 60)
        nxt = withdrawal(s, 3 * SAT // 10, now, state="queued_hot")
        sweep = withdrawal(s, 3 * SAT, now, key=REBALANCER, state="queued_hot")
        s.flush()
        assert freeze.check_outflow(s, policy, nxt, now)  # 0.9 of 1: paid
        assert freeze.check_outflow(s, policy, sweep, now)  # the sweep is the treasury's own: never counted
        assert freeze.active(s) is None
        # the same withdrawal in a payment that pays 0.2 to others before it: 1.1 of 1 -> frozen, not paid
        assert not freeze.check_outflow(s, policy, nxt, now, along=2 * SAT // 10)
    with store.read() as s:
        made = s.execute(select(Freeze)).scalar_one()
    assert made.by == "auto:BTC" and made.lifted_at is None
    assert "would take the hot outflow to 1.1 BTC, over the policy's limit of 1 BTC per 1d" in made.reason


# -- the top-up's destination ---------------------------------------------------------------------------------
def test_the_bitcoin_hot_address_is_whitelisted_only_as_the_hot_wallet(db):
    """Whitelisted as an ordinary destination, the hot wallet's receive address (``custody status``: "fund at")
    would let a host holding the hot key drain the cold wallet into it at the whitelist's limits, uncapped."""
    store, now = db
    apply_policy(store, load_policy_toml(btc_policy_text(now, [], hot_limit="0.5", day_limit="100")), now)
    plain = btc_policy_text(now + 2 * DAY, [RECEIVER], hot_limit="0.5", day_limit="100")  # active in a day
    with pytest.raises(PolicyFileError, match="is this daemon's hot wallet: its entry must say hot = true"):
        policy_service.propose(store, plain, now)
    band = 'hot_limit = "0.5"\nhot_min = "1"\nhot_max = "3"\nhot_topup = { period = "1d", limit = "1" }\n'
    hot = plain.replace('hot_limit = "0.5"\n', band).replace('label = "receiver 0"', 'label = "hot"\nhot = true')
    proposed = policy_service.propose(store, hot, now).policy
    assert proposed.is_hot(RECEIVER) and proposed.assets["BTC"].hot_topup == Window(DAY, SAT)
