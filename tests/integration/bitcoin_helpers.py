"""What the Bitcoin cold and hot wallet tests share: the policy they run under, and mining on the regtest node."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import httpx

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


def faucet_holding(bitcoind, amount: Decimal):
    """The faucet wallet, with at least ``amount`` BTC spendable: blocks are mined to it until it has (the session's
    node is shared, and how much earlier tests took from it, and how small the subsidy has halved, varies)."""
    faucet = bitcoind.faucet()
    for _ in range(10):
        if Decimal(str(faucet.call("getbalances")["mine"]["trusted"])) >= amount:
            return faucet
        mine(bitcoind, 100)
    raise AssertionError(f"the faucet cannot hold {amount} BTC: the subsidy has halved too far on this node")


def batch_call(bitcoind, wallet: str, method: str, params: list[list[object]]) -> list[Any]:
    """``method`` once per entry of ``params`` on ``wallet``, in one JSON-RPC batch (one HTTP request, rather than
    one request, connection and TLS context each as ``BitcoinNode.call`` makes): each call's result, in order."""
    body = [{"jsonrpc": "1.0", "id": i, "method": method, "params": p} for i, p in enumerate(params)]
    reply = httpx.post(
        f"{bitcoind.url}/wallet/{wallet}", json=body, auth=(bitcoind.user, bitcoind.password), timeout=60
    )
    answers = sorted(json.loads(reply.text, parse_float=Decimal), key=lambda a: a["id"])
    errors = [a["error"] for a in answers if a["error"] is not None]
    assert not errors and len(answers) == len(params), errors or reply.text
    return [a["result"] for a in answers]
