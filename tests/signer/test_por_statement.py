"""What an owner checks before signing a proof-of-reserves statement for the pinned Safe."""

from __future__ import annotations

import copy

import pytest

from signer.errors import StatementInvalid
from signer.porstatement import Statement, check_pinned_safe, describe
from tests.custody.test_por_inputs import statement

SAFE = "0x1111111111111111111111111111111111111111"
OWNERS = ("0x2222222222222222222222222222222222222222", "0x3333333333333333333333333333333333333333")


def with_safe(owners: list[str], threshold: int) -> Statement:
    claims = copy.deepcopy(statement().claims)
    claims["wallets"].append(
        {"address": SAFE, "kind": "safe", "owners": owners, "threshold": threshold, "balances": {"ETH": "0"}}
    )
    return Statement(claims)


def test_the_pinned_safe_with_its_owners_and_threshold_passes():
    check_pinned_safe(with_safe(list(reversed(OWNERS)), 2), 31337, SAFE, OWNERS, 2)


@pytest.mark.parametrize(
    ("statement_", "chain", "fragment"),
    [
        (with_safe([OWNERS[0], "0x4444444444444444444444444444444444444444"], 2), 31337, "the pinned Safe has 2"),
        (with_safe(list(OWNERS), 1), 31337, "has 1 of 2 owners"),
        (with_safe(list(OWNERS), 2), 1, "chain 31337, the pinned Safe is on 1"),
        (statement(), 31337, "does not claim the pinned Safe"),
    ],
)
def test_a_statement_that_misdescribes_the_pinned_safe_is_not_signed(statement_, chain, fragment):
    with pytest.raises(StatementInvalid) as info:
        check_pinned_safe(statement_, chain, SAFE, OWNERS, 2)
    assert fragment in info.value.message


def test_the_description_shows_each_token_and_escapes_what_the_file_says():
    claims = copy.deepcopy(statement().claims)
    claims["assets"][0]["symbol"] = "ETH\x1b[2J"
    claims["assets"].append({"symbol": "USDC", "decimals": 6, "chain_decimals": 6, "contract": "0xA0b8\u202e"})
    for table, usdc in ((claims["liabilities"]["totals"], "0"), (claims["reserves"], "0"), (claims["coverage"], None)):
        table["ETH\x1b[2J"] = table.pop("ETH")
        table["USDC"] = usdc
    lines = describe(Statement(claims))
    assert not any(c in line for line in lines for c in "\x1b\u202e")
    assert any(line.startswith("ETH\\x1b[2J") and "native coin" in line for line in lines)
    usdc = next(line for line in lines if "0xA0b8\\u202e" in line)
    assert usdc.split()[-2:] == ["6", "6"]
    assert f"policy       {claims['policy_hash']}" in lines
