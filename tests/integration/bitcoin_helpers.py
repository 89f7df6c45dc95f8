"""What the Bitcoin cold and hot wallet tests share: the policy they run under, and mining on the regtest node."""

from __future__ import annotations

import datetime as dt

from tests.conftest import ADMINS, DAY


def btc_policy_text(now: int, receivers: list[str], *, hot_limit: str, day_limit: str) -> str:
    """A policy with the test admins, ETH, and a regtest BTC asset whose ``receivers`` are whitelisted a day before
    ``now``; ``hot_limit`` and the one-day window's ``day_limit`` (BTC) are what the cold and hot tests differ in."""
    active = dt.datetime.fromtimestamp(now - DAY, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    admins = "\n".join(
        f'[[governance.admins]]\nname = "admin{i}"\nkey = "{k.verify_key.encode().hex()}"\n'
        for i, k in enumerate(ADMINS)
    )
    entries = "\n".join(
        f'[[whitelist]]\naddress = "{a}"\nassets = ["BTC"]\nlabel = "receiver {i}"\nactive_from = {active}\n'
        for i, a in enumerate(receivers)
    )
    return f"""
format = 1
[governance]
quorum = 2
activation_delay = "24h"
{admins}
[assets.ETH]
decimals = 18
max_per_transfer = "100"
hot_limit = "5"
[assets.BTC]
chain = "bitcoin"
network = "regtest"
decimals = 8
max_per_transfer = "20"
hot_limit = "{hot_limit}"
max_fee = "0.001"
max_fee_rate = 50
windows = [{{ period = "1d", limit = "{day_limit}" }}]
{entries}
"""


def mine(bitcoind, blocks: int, address: str | None = None) -> list[str]:
    """Mine, then wait until the node's wallets have seen the blocks (they catch up asynchronously)."""
    hashes = bitcoind.mine(blocks, address)
    bitcoind.node().call("syncwithvalidationinterfacequeue")
    return hashes
