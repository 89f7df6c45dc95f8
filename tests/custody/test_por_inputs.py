"""What goes into a snapshot and a statement is refused whole, with its reason, when anything is off."""

from __future__ import annotations

import json
import os

import pytest
from eth_account import Account

from custody.chain.ethereum import EthereumNode
from custody.errors import LiabilitiesInvalid
from custody.por.liabilities import read_liabilities
from custody.por.snapshot import snapshot
from policies.canonical import canonical_bytes
from signer.errors import StatementInvalid
from signer.porstatement import Statement, coverage, parse_statement

DECIMALS = {"ETH": 9, "USDC": 6}
GOOD = "account_id,ETH,USDC\nalice,1.5,2500\nbob,0,12.000001\n"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("account_id,ETH\nalice,-1\n", "line 2: ETH: negative balance '-1'"),
        ("account_id,ETH\nalice,1\nbob,0.0000000001\n", "line 3: ETH: amount '0.0000000001' has more than 9 decimal"),
        ("account_id,USDC\nalice,18446744073709.551616\n", "line 2: USDC: 18446744073709.551616 is 2^64 base units"),
        ("account_id,ETH\nalice,1\nbob,2\nalice,3\n", "line 4: duplicate account id 'alice' (first on line 2)"),
        ("account_id,ETH,USDC\nalice,1\n", "line 2: 2 fields, the header has 3"),
        ("account_id,ETH\nalice,1e3\n", "line 2: ETH: amount '1e3' is not a plain decimal number"),
        ("account_id,ETH\n alice,1\n", "line 2: the account id must be"),
        ("account_id,DOGE\nalice,1\n", "line 1: unknown asset 'DOGE'"),
        ("id,ETH\nalice,1\n", "line 1: the header must be account_id"),
        ("account_id,ETH\n", "no accounts"),
        ("", "line 1: a header"),
    ],
)
def test_bad_liabilities_are_refused_with_their_line(tmp_path, body, fragment):
    path = tmp_path / "balances.csv"
    path.write_text(body)
    with pytest.raises(LiabilitiesInvalid) as info:
        read_liabilities(path, DECIMALS, bytes(32))
    assert fragment in info.value.message


def test_good_liabilities_are_read_in_base_units(tmp_path):
    path = tmp_path / "balances.csv"
    path.write_text(GOOD)
    assets, acc = read_liabilities(path, DECIMALS, bytes(32))
    assert assets == ["ETH", "USDC"] and acc.count == 2 and acc.account_id(1) == "bob"
    assert acc.balances.tolist() == [[1_500_000_000, 2_500_000_000], [0, 12_000_001]]
    assert len(acc.salts) == 64 and acc.salts[:32] != acc.salts[32:]


def test_a_refused_snapshot_writes_nothing(tmp_path, seeded):
    path = tmp_path / "balances.csv"
    path.write_text("account_id,ETH\nalice,1\nalice,2\n")
    nowhere = EthereumNode("http://127.0.0.1:9", 31337)  # never reached: the file is refused first
    with pytest.raises(LiabilitiesInvalid, match="line 3"):
        snapshot(seeded, nowhere, Account.create(), path, tmp_path / "out", 0)
    assert not (tmp_path / "out").exists()


def statement() -> Statement:
    hot = "0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"
    return Statement(
        {
            "snapshot_id": os.urandom(32).hex(),
            "created_at": 1_767_225_600,
            "chain_id": 31337,
            "block": {"number": 7, "hash": "0x" + "ab" * 32},
            "policy_hash": "ef" * 32,
            "assets": [{"symbol": "ETH", "decimals": 9, "chain_decimals": 18, "contract": None}],
            "liabilities": {"root": "cd" * 32, "height": 2, "accounts": 3, "totals": {"ETH": "3000000000"}},
            "wallets": [
                {"address": hot, "kind": "hot", "owners": [hot], "threshold": 1, "balances": {"ETH": str(4 * 10**18)}}
            ],
            "reserves": {"ETH": "4000000000"},
            "coverage": {"ETH": "1.3333"},
        }
    )


def _edit(raw: bytes, change) -> bytes:
    doc = json.loads(raw)
    change(doc)
    return canonical_bytes(doc)


def _rehash(doc: dict) -> None:
    doc["statement_hash"] = Statement(doc["claims"]).hash.hex()


STATEMENT_TAMPERING = {
    "reserves raised": (
        lambda d: (d["claims"]["reserves"].update(ETH="5000000000"), _rehash(d)),
        "not the wallets' sum",
    ),
    "coverage flattered": (lambda d: (d["claims"]["coverage"].update(ETH="1.5000"), _rehash(d)), "coverage"),
    "a claim changed under the old hash": (
        lambda d: d["claims"]["liabilities"]["totals"].update(ETH="1"),
        "not the hash of the claims",
    ),
    "an unknown field": (lambda d: (d["claims"].update(note="trust us"), _rehash(d)), "unknown key"),
    "a hot wallet with a co-owner": (
        lambda d: (
            d["claims"]["wallets"][0]["owners"].append("0x4bF5122f344554C53BdE2EbB8CD2b7E3D1600ad6"),
            _rehash(d),
        ),
        "its own single owner",
    ),
    "no policy hash": (lambda d: (d["claims"].pop("policy_hash"), _rehash(d)), "claims.policy_hash: is required"),
    "a format 1 statement": (lambda d: d.update(format=1), "unsupported custody-por-statement format 1"),
    "a balance with a sign": (
        lambda d: (d["claims"]["wallets"][0]["balances"].update(ETH="-4"), _rehash(d)),
        "base units",
    ),
}


@pytest.mark.parametrize("name", sorted(STATEMENT_TAMPERING))
def test_a_statement_whose_figures_do_not_hold_is_refused(name):
    raw = statement().to_bytes()
    assert parse_statement(raw).to_bytes() == raw
    change, fragment = STATEMENT_TAMPERING[name]
    with pytest.raises(StatementInvalid) as info:
        parse_statement(_edit(raw, change))
    assert fragment in info.value.message


def test_coverage_is_rounded_down_and_absent_without_liabilities():
    assert coverage(2, 3) == "0.6666" and coverage(10**30, 1) == f"{10**30}.0000" and coverage(5, 0) is None
