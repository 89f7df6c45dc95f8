"""The ledger's Bitcoin entries: their line shape, the hash chain shared with the Safe's entries, and the fee-bump
rules on their own (the red team drives the same rules through the CLI)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from policies.decision import Destination
from policies.loader import load_policy_toml
from signer import btcledger, ledger
from signer.batchfile import BatchWithdrawal
from signer.btcbatch import BtcBatch
from signer.errors import BtcInputAlreadySigned, BtcReplacementInvalid, LedgerDamaged, WithdrawalAlreadySigned
from signer.payouts import Payout
from signer.psbtreview import BtcReview, Spend

WALLET_DESC = "wsh(sortedmulti(2,…))#abcdefgh"
POLICY = load_policy_toml(
    """
format = 1
[governance]
quorum = 1
activation_delay = "0s"
[[governance.admins]]
name = "a"
key = "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737"
[assets.BTC]
chain = "bitcoin"
network = "regtest"
decimals = 8
max_per_transfer = "10"
hot_limit = "0"
max_fee = "0.01"
max_fee_rate = 100
[[whitelist]]
address = "bcrt1q50rtrmj2f8vl9tem8qpfw36ylw5jg9j2dkku3w"
assets = ["BTC"]
label = "omni"
active_from = 2020-01-01T00:00:00Z
"""
)
NOW = 1767225600
OMNI = "bcrt1q50rtrmj2f8vl9tem8qpfw36ylw5jg9j2dkku3w"


def found(bid: str, txid: str, points: list[str], wids: list[str], replaces: str | None = None) -> BtcReview:
    ws = tuple(BatchWithdrawal(w, "BTC", 10**7, 8, None, OMNI, "omni") for w in wids)
    batch = BtcBatch(bid, "regtest", WALLET_DESC, 1, "ab" * 32, NOW, NOW + 3600, ws, "", replaces)
    payouts = {w: Payout(Destination.WHITELIST, None, (), "whitelisted") for w in wids}
    spends = tuple(Spend(p, 10**8, 0, i) for i, p in enumerate(points))
    return BtcReview(batch, txid, spends, None, 1000, 200, 0, payouts)


def _id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def test_entries_chain_with_the_safes_and_an_edit_is_found(tmp_path: Path):
    first = found(_id(1), "aa" * 32, ["11" * 32 + ":0"], [_id(101)])
    assert btcledger.record(tmp_path, first, POLICY, NOW) is not None
    assert btcledger.record(tmp_path, first, POLICY, NOW) is None  # the same transaction again: recorded once
    (entry,) = ledger.read(tmp_path)
    line = json.loads((tmp_path / ledger.FILE).read_text())
    assert (line["chain"], line["txid"], line["inputs"], line["replaces"]) == (
        "bitcoin",
        "aa" * 32,
        ["11" * 32 + ":0"],
        None,
    )
    assert entry.safe == btcledger.wallet_id("regtest", WALLET_DESC) == "btc:regtest:abcdefgh"
    text = (tmp_path / ledger.FILE).read_text().replace('"11', '"12', 1)
    (tmp_path / ledger.FILE).write_text(text)
    with pytest.raises(LedgerDamaged):
        ledger.read(tmp_path)


def test_conflicts_and_fee_bumps(tmp_path: Path):
    coin_a, coin_b = "11" * 32 + ":0", "22" * 32 + ":1"
    original = found(_id(1), "aa" * 32, [coin_a], [_id(101)])
    btcledger.record(tmp_path, original, POLICY, NOW)
    entries = ledger.read(tmp_path)
    with pytest.raises(BtcInputAlreadySigned):
        btcledger.check(found(_id(2), "bb" * 32, [coin_a], [_id(102)]), POLICY, entries, NOW)
    with pytest.raises(WithdrawalAlreadySigned):
        btcledger.check(found(_id(2), "bb" * 32, [coin_b], [_id(101)]), POLICY, entries, NOW)
    with pytest.raises(BtcReplacementInvalid):  # a bump must spend one of the original's coins
        btcledger.check(found(_id(2), "bb" * 32, [coin_b], [_id(101)], _id(1)), POLICY, entries, NOW)
    with pytest.raises(BtcReplacementInvalid):  # and pay exactly its withdrawals
        btcledger.check(found(_id(2), "bb" * 32, [coin_a], [_id(101), _id(102)], _id(1)), POLICY, entries, NOW)
    bump = found(_id(2), "bb" * 32, [coin_a, coin_b], [_id(101)], _id(1))
    btcledger.record(tmp_path, bump, POLICY, NOW)
    entries = ledger.read(tmp_path)
    with pytest.raises(BtcReplacementInvalid):  # the original, never again
        btcledger.check(original, POLICY, entries, NOW)
    with pytest.raises(BtcReplacementInvalid):  # nor a second bump of it
        btcledger.check(found(_id(3), "cc" * 32, [coin_a], [_id(101)], _id(1)), POLICY, entries, NOW)
    # a bump of the bump, spending what both spent
    btcledger.check(found(_id(3), "cc" * 32, [coin_a, coin_b], [_id(101)], _id(2)), POLICY, entries, NOW)
    # a signer that never saw the original treats a declared bump as a new batch
    other = tmp_path / "other"
    btcledger.record(other, dataclasses.replace(bump), POLICY, NOW)
    assert len(ledger.read(other)) == 1
