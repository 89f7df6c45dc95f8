"""`custody status` and `/metrics` say the same things: both render one read of the database's figures; and
`GET /v1/balances` answers the same positions.

The database here holds a bit of everything both show: withdrawals in several states, hot and cold
readings, batches waiting for signatures (and one that is not), a transaction a rollback orphaned, two
freezes and a webhook endpoint with a backlog.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from custody.api.client import CustodyClient
from custody.clock import FixedClock
from custody.config import Settings
from custody.intake.apikeys import Principal
from custody.intake.withdrawals import NewWithdrawal, Withdrawals
from custody.ledger import freeze
from custody.ledger.policy import PolicyCache
from custody.ops.metrics import Metrics
from custody.ops.status import gather, render
from custody.store.models import (
    Batch,
    BatchSignature,
    ChainBalance,
    ColdWallet,
    HotTransaction,
    HotWallet,
    WebhookEndpoint,
)
from tests.conftest import DENIED, OMNIBUS, add_client, running_server

WHO = Principal("backend", frozenset({"withdraw", "read", "cancel"}))
HOT = "0x" + "11" * 20
COLD = "0x" + "22" * 20
OWNERS = ["0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20]
HOOK = "https://hooks.invalid/custody"
ETH = 10**18


def batch(id_: str, nonce: int, state: str, now: int) -> Batch:
    return Batch(
        id=id_,
        safe=COLD,
        safe_nonce=nonce,
        safe_tx_hash="0x" + "00" * 32,
        state=state,
        raw=b"{}",
        policy_version=1,
        withdrawals=nonce + 1,
        created_at=now + nonce,
        expires_at=now + 86400,
        updated_at=now,
    )


@pytest.fixture
def busy(seeded):
    """A database with something for every figure; ``now`` is when it was made."""
    now = int(time.time())
    add_client(seeded)
    service = Withdrawals(seeded, PolicyCache(), FixedClock(now))
    service.create(WHO, "a", NewWithdrawal("ETH", "1", OMNIBUS))
    service.create(WHO, "b", NewWithdrawal("ETH", "2", OMNIBUS))
    service.create(WHO, "c", NewWithdrawal("ETH", "20", OMNIBUS))
    service.create(WHO, "d", NewWithdrawal("ETH", "1", DENIED))
    service.create(WHO, "e", NewWithdrawal("USDC", "3", OMNIBUS))
    with seeded.transaction() as s:
        s.add(HotWallet(address=HOT, chain_id=31337, next_nonce=9, created_at=now))
        s.add(ColdWallet(address=COLD, chain_id=31337, created_at=now, owners=json.dumps(OWNERS), threshold=2))
        s.add(ChainBalance(wallet=HOT, asset="ETH", amount=3 * ETH, block=100, updated_at=now))
        s.add(ChainBalance(wallet=COLD, asset="ETH", amount=9 * ETH, block=100, updated_at=now))
        s.add(ChainBalance(wallet=COLD, asset="USDC", amount=12_500_000, block=100, updated_at=now))
    with seeded.transaction() as s:
        s.add_all([batch("batch-2", 2, "exported", now), batch("batch-1", 1, "exported", now)])
        s.add(batch("batch-0", 0, "executed", now))
    with seeded.transaction() as s:
        s.add(BatchSignature(batch_id="batch-1", owner=OWNERS[1], signature="00" * 65, imported_at=now))
        for nonce in (7, 8):
            s.add(
                HotTransaction(
                    wallet=HOT,
                    nonce=nonce,
                    attempt=0,
                    tx_hash=f"0x{nonce:064x}",
                    raw="0x",
                    max_fee=1,
                    priority_fee=1,
                    state="orphaned",
                    created_at=now,
                    batch_id="batch-0" if nonce == 8 else None,
                )
            )
        s.add(WebhookEndpoint(url=HOOK, cursor=0, attempts=0, next_attempt_at=0.0, lease_until=0.0, created_at=now))
    with seeded.transaction() as s:
        freeze.freeze(s, now - 10, "incident 42", "operator")
    with seeded.transaction() as s:
        freeze.freeze(s, now - 5, "chain rollback detected", freeze.ROLLBACK, own=True)
    return seeded, now


def samples(page: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(page.decode())
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_status_shows_every_figure(busy):
    store, _ = busy
    st = gather(store)
    assert st.policy_version == 1 and len(st.policy_hash) == 64
    assert st.withdrawals == {
        "delayed": {"ETH": 1},
        "queued_cold": {"ETH": 2, "USDC": 1},
        "rejected": {"ETH": 1},
    }
    assert [f["by"] for f in st.freezes] == ["operator", freeze.ROLLBACK] and st.frozen == st.freezes[0]
    assert [(o["nonce"], o["batch"], o["withdrawal"]) for o in st.orphaned] == [(7, None, None), (8, "batch-0", None)]
    assert [b["asset"] for b in st.balances] == ["DAI", "ETH", "USDC"]
    eth = st.balances[1]
    assert eth["hot"] == "3" and eth["cold"] == "9" and eth["hot_share_bp"] == 2500
    assert st.balances[2]["cold"] == "12.5" and st.balances[2]["hot_share_bp"] is None
    assert [(b["id"], b["signed_by"], b["missing"], b["threshold"]) for b in st.batches_waiting] == [
        ("batch-1", [OWNERS[1]], [OWNERS[0], OWNERS[2]], 2),
        ("batch-2", [], OWNERS, 2),
    ]
    lines = render(st)
    assert lines[0].startswith("FROZEN since ") and "incident 42" in lines[0]
    assert any(line.startswith("CHAIN ROLLBACK: 2 settled hot-wallet transaction(s)") for line in lines)
    assert "nonce 7..8)" in "\n".join(lines)
    assert any(line.startswith("ETH          hot 3 (reserved ") and "hot share 25.00 %" in line for line in lines)
    assert "batches waiting for signatures: 2" in lines
    json.dumps(asdict(st), sort_keys=True)  # `custody status --json`


def test_metrics_show_the_same_figures(busy, tmp_path):
    store, _ = busy
    settings = Settings(data_dir=tmp_path, database_url=store.url, webhook_urls=(HOOK,))  # type: ignore[call-arg]
    page = samples(generate_latest(Metrics(settings, store).registry))
    st = gather(store)
    for state, per in st.withdrawals.items():
        for asset, n in per.items():
            assert page[("custody_withdrawals", (("asset", asset), ("state", state)))] == n
    assert page[("custody_hot_balance", (("asset", "ETH"),))] == 3.0
    assert ("custody_hot_balance", (("asset", "USDC"),)) not in page  # never read
    assert page[("custody_cold_balance", (("asset", "ETH"),))] == 9.0
    assert page[("custody_cold_balance", (("asset", "USDC"),))] == 12.5
    assert page[("custody_hot_share", (("asset", "ETH"),))] == 0.25
    assert ("custody_hot_share", (("asset", "USDC"),)) not in page
    assert page[("custody_batches_waiting", ())] == len(st.batches_waiting) == 2
    assert page[("custody_frozen", ())] == 1
    assert page[("custody_freezes", (("by", "operator"),))] == 1
    assert page[("custody_freezes", (("by", freeze.ROLLBACK),))] == 1
    assert page[("custody_hot_orphaned_transactions", ())] == len(st.orphaned) == 2
    assert page[("custody_webhook_backlog", (("url", HOOK),))] >= 1
    assert page[("custody_database_up", ())] == 1 and page[("custody_node_up", ())] == 0


def test_the_api_answers_the_same_balances(busy, tmp_path):
    store, _ = busy
    ck = add_client(store, "reader", "read")
    with running_server(store, tmp_path) as srv, CustodyClient(srv.url, ck.name, ck.key) as c:
        answer = c.balances()
    assert answer == {
        "assets": [
            {"asset": "DAI", "hot": "0", "hot_block": None, "reserved": "0", "free": "0", "cold": None},
            {"asset": "ETH", "hot": "3", "hot_block": 100, "reserved": "0", "free": "3", "cold": "9"},
            {"asset": "USDC", "hot": "0", "hot_block": None, "reserved": "0", "free": "0", "cold": "12.5"},
        ]
    }
    shown = {b["asset"]: (b["hot"], b["reserved"], b["cold"]) for b in gather(store).balances}
    assert shown == {a["asset"]: (a["hot"], a["reserved"], a["cold"]) for a in answer["assets"]}
