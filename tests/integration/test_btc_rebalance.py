"""The Bitcoin hot band on a real bitcoind -regtest (issue 18): above hot_max the excess is swept, paid by the hot
wallet like any hot withdrawal, to a fresh receive address of the cold descriptor wallet; below hot_min a top-up
to the hot wallet's whitelisted address is raised, goes into a Bitcoin cold batch, and the signers' ledger sees it
as a top-up (the ``hot`` flag that ``hot_topup`` caps offline)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from decimal import Decimal

from sqlalchemy import select

from custody.clock import SystemClock
from custody.cold import btcbatches
from custody.cold import btcwallet as cold_wallet
from custody.hot import btcwallet as hot_wallet
from custody.hot.btcfollow import BtcHot
from custody.hot.btcpayer import BtcHotSettings
from custody.hot.rebalance import own_script, rebalance_bitcoin
from custody.keys import create_daemon_keys, load_hot_bitcoin_accounts, load_identity
from custody.ledger import audit
from custody.ledger import policy as policy_service
from custody.ledger.policy import PolicyCache
from custody.store.db import Store
from custody.store.models import AuditEntry, BtcColdWallet, Withdrawal
from policies.addresses import bitcoin_script
from policies.bundle import make_bundle, parse_bundle, sign_bundle
from policies.loader import load_policy_toml
from signer import btcledger
from signer.btckeys import account_key
from signer.btcwallet import parse_btc_cold_wallet
from signer.keystore import KeyCard
from signer.psbtreview import review_btc
from tests.conftest import ADMINS, apply_policy
from tests.integration.bitcoin_helpers import btc_policy_text, mine
from tests.integration.conftest import PASSPHRASE

SAT = 10**8
CONFIRMATIONS = 2
BAND = 'hot_limit = "0.5"\nhot_min = "1"\nhot_max = "3"\nhot_topup = { period = "1d", limit = "1" }\n'


def cards() -> list[KeyCard]:
    """Three owners' public cards, made from fresh seeds (no keystore: the ceremony is test_btc_cold's)."""
    made = []
    for i in range(3):
        seed = uuid.uuid4().bytes * 2
        test, main = account_key(seed, "regtest"), account_key(seed, "mainnet")
        made.append(KeyCard(f"op{i}", test.fingerprint, "0x" + "00" * 20, "00" * 32, main.xpub, test.xpub))
    return made


def rebalancers(store: Store) -> list[Withdrawal]:
    with store.read() as s:
        query = select(Withdrawal).where(Withdrawal.api_key == "custody-rebalancer").order_by(Withdrawal.seq)
        return list(s.execute(query).scalars())


def test_a_sweep_is_paid_to_the_cold_descriptor_and_a_top_up_goes_into_a_cold_batch(tmp_path, bitcoind):
    data = tmp_path / "data"
    data.mkdir()
    identity, _ = create_daemon_keys(data, PASSPHRASE, n=2**15)
    accounts = load_hot_bitcoin_accounts(data, PASSPHRASE)
    node = bitcoind.node()
    hot_address = hot_wallet.account(node, "regtest", accounts).address(0, 0)  # what `custody status` shows
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    store.migrate()
    now = int(time.time())
    text = btc_policy_text(now, [hot_address], hot_limit="0.5", day_limit="100")
    text = text.replace('hot_limit = "0.5"\n', BAND).replace('label = "receiver 0"', 'label = "hot"\nhot = true')
    apply_policy(store, load_policy_toml(text), now)
    cold = cold_wallet.create(store, node, "regtest", 2, cards(), identity, data, now)
    clock = SystemClock()
    hot = BtcHot(store, node, accounts, BtcHotSettings(CONFIRMATIONS, 600), clock)
    hot.ready()
    bitcoind.faucet().call("sendtoaddress", hot_address, Decimal(5))
    mine(bitcoind, 1)
    hot.read_balance()

    # above the band (5 BTC, max 3): 3 BTC swept to the middle (2), to a fresh address of the cold descriptor
    (sweep_id,) = rebalance_bitcoin(store, PolicyCache(), clock, node, "regtest")
    assert rebalance_bitcoin(store, PolicyCache(), clock, node, "regtest") == []  # one open at a time
    (sweep,) = rebalancers(store)
    assert (sweep.id, sweep.route, sweep.amount, sweep.state) == (sweep_id, "hot", 3 * SAT, "queued_hot")
    with store.read() as s:
        (entry,) = s.execute(select(AuditEntry).where(AuditEntry.kind == "btccold.sweep_address")).scalars()
        descriptor = s.execute(select(BtcColdWallet.descriptor)).scalar_one()
    recorded = json.loads(entry.data)
    assert entry.subject == sweep.id and recorded["address"] == sweep.destination
    index = recorded["index"]
    assert own_script(descriptor, index) == bitcoin_script("regtest", sweep.destination)
    assert cold_wallet.receive_address(store, node, "regtest") != sweep.destination  # never handed out again

    hot.step()  # signed and sent by the hot payer, as any hot withdrawal
    mine(bitcoind, CONFIRMATIONS)
    hot.step()
    with store.read() as s:
        assert s.get(Withdrawal, sweep.seq).state == "confirmed"
    watch = bitcoind.node(cold.wallet)
    assert Decimal(watch.call("getreceivedbyaddress", sweep.destination)) == 3
    assert rebalance_bitcoin(store, PolicyCache(), clock, node, "regtest") == []  # about 2 BTC: inside the band

    # bundle 2: the band moves up (2.5 to 4); the hot wallet's ~2 BTC is below it: a top-up, capped at 1 BTC
    with store.read() as s:
        head, current = policy_service.head(s)
    btc = replace(current.policy.assets["BTC"], hot_min=5 * SAT // 2, hot_max=4 * SAT)
    policy = replace(current.policy, assets={**current.policy.assets, "BTC": btc})
    bundle = make_bundle(policy, head, head.created_at + 1)
    policy_service.apply(store, bundle.raw, [sign_bundle(bundle.hash, k).to_bytes() for k in ADMINS[:2]], now)
    (top_up_id,) = rebalance_bitcoin(store, PolicyCache(), clock, node, "regtest")
    top_up = rebalancers(store)[-1]
    assert (top_up.id, top_up.destination, top_up.route, top_up.amount, top_up.state, top_up.client_reference) == (
        top_up_id,
        hot_address,
        "cold",
        SAT,
        "queued_cold",
        "top_up",
    )
    assert "below the band's minimum" in top_up.reasons

    # the next Bitcoin cold batch carries it, and the signers' ledger counts it as a top-up of the hot wallet
    exported = btcbatches.export(store, node, load_identity(data, PASSPHRASE), tmp_path, now)
    assert exported.withdrawals == 1 and exported.skipped == []
    found = review_btc(exported.path.read_bytes(), parse_btc_cold_wallet(cold.raw), parse_bundle(bundle.raw), now)
    (transfer,) = btcledger.transfers(found, bundle.policy)
    assert (transfer.id, transfer.hot, transfer.destination) == (top_up.id, True, hot_address)
    assert audit.verify_log(store).ok
    store.dispose()
