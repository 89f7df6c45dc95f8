"""Policy evaluation throughput with 10,000 whitelist entries and 1,000 deny entries, on one core.

Target: >= 50,000 decisions/s. The baseline is a loop of the same length doing only the two dict
look-ups (whitelist and deny) that a decision cannot avoid, measured in the same run.
"""

from __future__ import annotations

import hashlib
import random
import time

from eth_utils import to_checksum_address

from policies.evaluate import Context, Request, evaluate
from policies.model import (
    Admin,
    AssetRule,
    DelayTier,
    DenyEntry,
    Governance,
    KeyRule,
    Policy,
    WhitelistEntry,
    Window,
)

ETH = 10**18
NOW = 1_800_000_000
N = 200_000


def address(i: int, salt: bytes) -> str:
    return to_checksum_address(hashlib.sha256(salt + i.to_bytes(4, "big")).hexdigest()[:40])


def build() -> tuple[Policy, list[Request], Context]:
    white = [address(i, b"w") for i in range(10_000)]
    deny = [address(i, b"d") for i in range(1_000)]
    policy = Policy(
        governance=Governance((Admin("a", "00" * 32),), 1, 86400),
        assets={
            "ETH": AssetRule(
                "ETH",
                True,
                18,
                500 * ETH,
                5 * ETH,
                (Window(3600, 200 * ETH), Window(86400, 1000 * ETH)),
                (DelayTier(10 * ETH, 3600), DelayTier(100 * ETH, 86400)),
            )
        },
        whitelist={a: WhitelistEntry(a, ("ETH",), f"entry {i}", NOW - 86400) for i, a in enumerate(white)},
        deny={a: DenyEntry(a, "") for a in deny},
        api_keys={"backend": KeyRule("backend", {"ETH": (Window(3600, 150 * ETH),)})},
    )
    rng = random.Random(7)
    pool = white + deny[:100]
    requests = [Request("ETH", rng.randrange(1, 20 * ETH), rng.choice(pool), "backend") for _ in range(1000)]
    context = Context(NOW, {3600: 50 * ETH, 86400: 300 * ETH}, {3600: 10 * ETH}, 8 * ETH)
    return policy, requests, context


def run() -> dict[str, float]:
    policy, requests, context = build()
    reqs = (requests * (N // len(requests) + 1))[:N]
    start = time.perf_counter()
    for r in reqs:
        evaluate(policy, r, context)
    elapsed = time.perf_counter() - start
    white, deny = policy.whitelist, policy.deny
    start = time.perf_counter()
    for r in reqs:
        white.get(r.destination)
        deny.get(r.destination)
    base = time.perf_counter() - start
    rate, base_rate = N / elapsed, N / base
    print(
        f"policy evaluate: {rate:,.0f} decisions/s (target >= 50,000); "
        f"dict look-up loop: {base_rate:,.0f}/s; ratio {rate / base_rate:.3f}"
    )
    return {"decisions_per_s": rate, "baseline_per_s": base_rate}


if __name__ == "__main__":
    run()
