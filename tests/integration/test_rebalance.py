"""The hot band on a real node: a sweep paid to the cold wallet, a top-up raised as a cold withdrawal."""

from __future__ import annotations

import time
from dataclasses import replace

from eth_account import Account
from sqlalchemy import select

from custody.ledger import policy as policy_service
from custody.store.models import AuditEntry, ColdWallet, Withdrawal
from policies.bundle import make_bundle, sign_bundle
from tests.conftest import ADMINS
from tests.integration.conftest import ETH, make_daemon

COLD = Account.from_key("0x" + "c0" * 32).address  # stands in for the Safe until `custody cold create` exists


def register_cold(store) -> None:
    with store.transaction() as s:
        s.add(ColdWallet(address=COLD, chain_id=31337, created_at=int(time.time())))


def rebalancer_withdrawals(store) -> list[Withdrawal]:
    with store.read() as s:
        return list(s.execute(select(Withdrawal).where(Withdrawal.api_key == "custody-rebalancer")).scalars())


def test_no_cold_wallet_means_no_rebalancing(tmp_path, chain):
    daemon = make_daemon(
        tmp_path, f"sqlite:///{tmp_path / 'c.db'}", chain, fund_eth=500 * ETH, eth_band=(50 * ETH, 200 * ETH)
    )
    daemon.worker(chain).step()
    assert rebalancer_withdrawals(daemon.store) == []


def test_excess_is_swept_to_the_cold_wallet_once(tmp_path, chain):
    daemon = make_daemon(
        tmp_path, f"sqlite:///{tmp_path / 'c.db'}", chain, fund_eth=500 * ETH, eth_band=(50 * ETH, 200 * ETH)
    )
    register_cold(daemon.store)
    worker = daemon.worker(chain)
    for _ in range(4):
        worker.step()
    sweeps = rebalancer_withdrawals(daemon.store)
    assert [(w.destination, w.route, w.amount, w.state) for w in sweeps] == [(COLD, "hot", 375 * ETH, "confirmed")]
    assert chain.eth_balance(COLD) == 375 * ETH
    assert 124 * ETH < chain.eth_balance(daemon.hot) < 125 * ETH  # the middle of the band, less gas
    worker.step()
    assert len(rebalancer_withdrawals(daemon.store)) == 1  # inside the band now: nothing more
    with daemon.store.read() as s:
        kinds = list(s.execute(select(AuditEntry.kind).where(AuditEntry.subject == sweeps[0].id)).scalars())
    assert kinds[:2] == ["withdrawal.received", "withdrawal.queued_hot"] and kinds[-1] == "withdrawal.confirmed"


def test_a_low_hot_wallet_raises_one_cold_top_up(tmp_path, chain):
    daemon = make_daemon(
        tmp_path, f"sqlite:///{tmp_path / 'c.db'}", chain, fund_eth=10 * ETH, eth_band=(50 * ETH, 200 * ETH)
    )
    register_cold(daemon.store)
    worker = daemon.worker(chain)
    worker.step()
    worker.step()
    top_ups = rebalancer_withdrawals(daemon.store)
    assert [(w.destination, w.route, w.amount, w.state, w.client_reference) for w in top_ups] == [
        (daemon.hot, "cold", 115 * ETH, "queued_cold", "top_up")
    ]
    assert "below the band's minimum" in top_ups[0].reasons


def test_a_band_given_as_a_share_of_hot_plus_cold(tmp_path, chain):

    daemon = make_daemon(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", chain, fund_eth=500 * ETH)
    chain.send({"to": COLD, "value": 1500 * ETH})
    register_cold(daemon.store)
    # bundle 2: ETH's hot band becomes 5 % to 10 % of the total held hot and cold

    with daemon.store.read() as s:
        head, current = policy_service.head(s)

    eth = replace(current.policy.assets["ETH"], hot_min_share=500, hot_max_share=1000)
    policy = replace(current.policy, assets={**current.policy.assets, "ETH": eth})
    bundle = make_bundle(policy, head, head.created_at + 1)
    policy_service.apply(
        daemon.store, bundle.raw, [sign_bundle(bundle.hash, k).to_bytes() for k in ADMINS[:2]], int(time.time())
    )
    worker = daemon.worker(chain)
    for _ in range(4):
        worker.step()
    # total 2000 ETH: band 100 to 200, middle 150; the hot wallet holds 500, so 350 is swept
    sweeps = rebalancer_withdrawals(daemon.store)
    assert [(w.amount, w.state) for w in sweeps] == [(350 * ETH, "confirmed")]
    assert chain.eth_balance(COLD) == 1850 * ETH
