"""What `custody status` and `/metrics` show of the Bitcoin cold wallet (from figures built here, no node), and the
``[bitcoin] stuck_after`` setting that decides when a broadcast batch is stuck."""

from __future__ import annotations

import pytest

from custody.cold.views import BtcBatchView
from custody.config import BitcoinSettings, load_settings, render_config
from custody.errors import ConfigError
from custody.ops.figures import BtcBatchFigure, BtcWalletFigure, Figures, PolicyHead
from custody.ops.metrics import families
from custody.ops.status import from_figures, render

NAMES = {"aaaaaaaa": "alice", "bbbbbbbb": "bob", "cccccccc": "carol"}


def view(batch_id: str, state: str, signed: tuple[str, ...]) -> BtcBatchView:
    missing = tuple(f for f in NAMES if f not in signed)
    return BtcBatchView(batch_id, state, "regtest", "BTC", 3, 2_000_000_000, signed, missing, 2, "ab" * 32, 1234, NAMES)


def figures() -> Figures:
    wallet = BtcWalletFigure("custody-cold-regtest-abcd1234", "regtest", "wsh(...)#abcd1234", 150_000_000, 812)
    waiting = BtcBatchFigure(view("b-waiting", "exported", ("bbbbbbbb",)), 0, False, "b-stuck", None)
    stuck = BtcBatchFigure(view("b-stuck", "broadcast", ("aaaaaaaa", "bbbbbbbb")), 0, True, None, "b-waiting")
    mined = BtcBatchFigure(view("b-mined", "broadcast", ("aaaaaaaa", "cccccccc")), 1, False, None, None)
    return Figures(
        PolicyHead(1, "f" * 64), (), (), (), (), (), btc_wallets=(wallet,), btc_batches=(waiting, stuck, mined)
    )


def test_status_names_who_signed_and_who_is_missing():
    st = from_figures(figures())
    btc = st.bitcoin
    assert btc["wallets"][0]["balance"] == "1.5" and btc["wallets"][0]["descriptor_checksum"] == "abcd1234"
    [waiting] = btc["batches_waiting"]
    assert [x["name"] for x in waiting["signed_by"]] == ["bob"]
    assert [x["name"] for x in waiting["missing"]] == ["alice", "carol"]
    assert btc["stuck"] == ["b-stuck"]
    assert [(b["id"], b["confirmations"]) for b in btc["batches_sent"]] == [("b-stuck", 0), ("b-mined", 1)]
    text = "\n".join(render(st))
    assert "1.5 BTC at block 812" in text
    assert "1/2 signed (bob), missing alice, carol" in text and "bumps b-stuck" in text
    assert "b-stuck broadcast" in text and "STUCK: fee bump b-waiting exported" in text
    assert "b-mined broadcast " + "ab" * 32 + ": 1 confirmations" in text


def test_no_bitcoin_wallet_no_bitcoin_lines():
    st = from_figures(Figures(PolicyHead(1, "f" * 64), (), (), (), (), ()))
    assert st.bitcoin == {} and not any("bitcoin" in line for line in render(st))


def test_metrics_count_bitcoin_batches_by_state_and_stuck():
    found = {f.name: f for f in families(figures())}
    assert {s.labels["state"]: s.value for s in found["custody_btc_batches"].samples} == {
        "broadcast": 2,
        "exported": 1,
    }
    assert [s.value for s in found["custody_btc_batches_stuck"].samples] == [1]


@pytest.mark.parametrize(("text", "seconds"), [('"90m"', 5400), ('"1h"', 3600), ("600", 600), ('"2d"', 172_800)])
def test_stuck_after_is_a_period(tmp_path, text, seconds):
    path = tmp_path / "custody.toml"
    path.write_text(render_config(tmp_path, "sqlite:///x.db", bitcoin=BitcoinSettings("http://127.0.0.1:1", "u", "p")))
    path.write_text(path.read_text().replace('stuck_after = "3600s"', f"stuck_after = {text}"))
    assert load_settings(path).bitcoin.stuck_after == seconds


@pytest.mark.parametrize("text", ['"10s"', '"1x"', "true", '"31d"', "0"])
def test_stuck_after_refused(tmp_path, text):
    path = tmp_path / "custody.toml"
    path.write_text(render_config(tmp_path, "sqlite:///x.db"))
    path.write_text(path.read_text().replace('stuck_after = "3600s"', f"stuck_after = {text}"))
    with pytest.raises(ConfigError, match="stuck_after"):
        load_settings(path)


def test_stuck_after_written_and_read_back(tmp_path):
    path = tmp_path / "custody.toml"
    btc = BitcoinSettings("http://127.0.0.1:1", "u", "p", stuck_after=7200)
    path.write_text(render_config(tmp_path, "sqlite:///x.db", bitcoin=btc))
    assert load_settings(path).bitcoin == btc
