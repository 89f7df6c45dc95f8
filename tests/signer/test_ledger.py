"""The signer ledger's rules at their edges, with the clock passed in: windows that slide, distinct
withdrawals counted once, the same SafeTx signed twice, and the exporter's room for one batch."""

from __future__ import annotations

import uuid

import pytest

from policies.loader import load_policy_toml
from signer import ledger
from signer.batchfile import Batch, BatchWithdrawal
from signer.errors import BatchNonceTooFar, BatchOverWindow, TopUpOverLimit
from signer.review import assemble
from signer.safecontracts import MULTISEND_CALL_ONLY
from tests.conftest import ADMINS, MAKER, OMNIBUS
from tests.redteam.conftest import DAY, ETH, HOT, policy_text

NOW = 2_000_000_000
SAFE = "0x7d0E20C9DCFd305eba30c2198C969993795bEb61"
POLICY = load_policy_toml(
    policy_text([(f"a{i}", k.verify_key.encode().hex()) for i, k in enumerate(ADMINS)], NOW - DAY)
)


def batch(amounts: list[tuple[int, str]], nonce: int, ids: list[str] | None = None) -> Batch:
    items = [
        BatchWithdrawal(ids[i] if ids else str(uuid.uuid4()), "ETH", a, 18, None, d, POLICY.whitelist[d].label)
        for i, (a, d) in enumerate(amounts)
    ]
    return assemble(
        batch_id=str(uuid.uuid4()),
        chain_id=31337,
        safe=SAFE,
        safe_nonce=nonce,
        multisend=MULTISEND_CALL_ONLY,
        policy_version=1,
        policy_hash="00" * 32,
        created_at=NOW,
        expires_at=NOW + 7 * DAY,
        withdrawals=items,
        policy=POLICY,
    )


def sign(tmp_path, b: Batch, at: int) -> None:
    entries = ledger.read(tmp_path)
    ledger.check(b, POLICY, entries, at)
    ledger.append(tmp_path, entries, b, POLICY, at)


def test_the_day_window_counts_what_the_hour_window_has_forgotten(tmp_path):
    for hour in range(4):  # 4 x 240 ETH, an hour and a bit apart: each hour's window holds
        sign(tmp_path, batch([(80 * ETH, OMNIBUS)] * 3, nonce=hour), NOW + hour * 3700)
    later = NOW + 4 * 3700
    with pytest.raises(BatchOverWindow, match="86400"):  # 960 + 41 > 1,000 per day
        ledger.check(batch([(41 * ETH, MAKER)], 4), POLICY, ledger.read(tmp_path), later)
    ledger.check(batch([(40 * ETH, MAKER)], 4), POLICY, ledger.read(tmp_path), later)  # exactly 1,000
    # a day after the first batch, its 240 ETH no longer count
    ledger.check(batch([(100 * ETH, MAKER)] * 2, 4), POLICY, ledger.read(tmp_path), NOW + DAY + 1)


def test_a_withdrawal_re_exported_at_its_nonce_counts_once_and_the_same_safetx_records_once(tmp_path):
    ids = [str(uuid.uuid4()) for _ in range(2)]
    first = batch([(100 * ETH, OMNIBUS), (100 * ETH, MAKER)], 0, ids)
    sign(tmp_path, first, NOW)
    sign(tmp_path, first, NOW + 1)  # a second signature of the same SafeTx
    assert len(ledger.read(tmp_path)) == 1
    sign(tmp_path, batch([(100 * ETH, OMNIBUS), (100 * ETH, MAKER)], 0, ids), NOW + 2)  # re-export: 200, not 400
    sign(tmp_path, batch([(50 * ETH, OMNIBUS)], 1), NOW + 3)  # 250 in the hour
    with pytest.raises(BatchOverWindow):
        ledger.check(batch([(1, OMNIBUS)], 2), POLICY, ledger.read(tmp_path), NOW + 4)


def test_a_clock_set_back_does_not_forget_what_was_signed(tmp_path):
    sign(tmp_path, batch([(100 * ETH, OMNIBUS)] * 2, 0), NOW)
    with pytest.raises(BatchOverWindow):
        ledger.check(batch([(100 * ETH, OMNIBUS)], 1), POLICY, ledger.read(tmp_path), NOW - 200)


def test_the_nonce_gap_runs_from_the_highest_nonce_signed(tmp_path):
    with pytest.raises(BatchNonceTooFar, match="signed nothing yet"):
        ledger.check(batch([(ETH, OMNIBUS)], 17), POLICY, [], NOW)
    sign(tmp_path, batch([(ETH, OMNIBUS)], 16), NOW)
    ledger.check(batch([(ETH, OMNIBUS)], 32), POLICY, ledger.read(tmp_path), NOW)
    ledger.check(batch([(ETH, OMNIBUS)], 3), POLICY, ledger.read(tmp_path), NOW)  # a lower, unused nonce is fine


def test_top_ups_slide_with_their_own_window(tmp_path):
    sign(tmp_path, batch([(50 * ETH, HOT)], 0), NOW)
    with pytest.raises(TopUpOverLimit):
        ledger.check(batch([(1, HOT)], 1), POLICY, ledger.read(tmp_path), NOW + DAY - 1)
    ledger.check(batch([(50 * ETH, HOT)], 1), POLICY, ledger.read(tmp_path), NOW + DAY)


def test_the_exporters_room_is_what_a_fresh_signer_accepts():
    room = ledger.BatchRoom(POLICY)
    w = [BatchWithdrawal(str(uuid.uuid4()), "ETH", 100 * ETH, 18, None, OMNIBUS, "omnibus") for _ in range(3)]
    assert room.take(w[0]) is None and room.take(w[1]) is None
    assert "limit" in (room.take(w[2]) or "")  # 300 > 250 per hour: waits for the next batch
    hot = [BatchWithdrawal(str(uuid.uuid4()), "ETH", 30 * ETH, 18, None, HOT, "our hot wallet") for _ in range(2)]
    room = ledger.BatchRoom(POLICY)
    assert room.take(hot[0]) is None
    assert "top-ups" in (room.take(hot[1]) or "")


def test_a_re_export_after_the_policy_unmarks_the_hot_wallet_is_the_same_payment(tmp_path):
    from dataclasses import replace

    ids = [str(uuid.uuid4())]
    sign(tmp_path, batch([(10 * ETH, HOT)], 0, ids), NOW)
    unmarked = replace(POLICY, whitelist={a: replace(e, hot=False) for a, e in POLICY.whitelist.items()})
    again = batch([(10 * ETH, HOT)], 0, ids)
    ledger.check(again, unmarked, ledger.read(tmp_path), NOW + 1)
    assert ledger.append(tmp_path, ledger.read(tmp_path), again, unmarked, NOW + 1) is None  # recorded once
