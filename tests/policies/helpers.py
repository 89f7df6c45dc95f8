"""Small policies built in code for the rule tests."""

from __future__ import annotations

from dataclasses import replace

from nacl.signing import SigningKey

from policies.model import (
    Admin,
    AssetRule,
    Backend,
    CustomerRules,
    DelayTier,
    DenyEntry,
    Governance,
    HoldRules,
    KeyRule,
    Limits,
    Operator,
    Policy,
    WhitelistEntry,
    Window,
)

ETH = 10**18
NOW = 1_800_000_000
GOOD = "0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"
LATER = "0x4bF5122f344554C53BdE2EbB8CD2b7E3D1600ad6"
DENIED = "0xE52d9C508C502347344D8C07Ad91Cbd6068Afc75"
ADMIN_KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]


def governance(keys: list[SigningKey] = ADMIN_KEYS[:3], quorum: int = 2, delay: int = 86400) -> Governance:
    admins = [Admin(f"admin{i}", k.verify_key.encode().hex()) for i, k in enumerate(keys)]
    return Governance(tuple(sorted(admins, key=lambda a: a.key)), quorum, delay)


def policy(**overrides: object) -> Policy:
    eth = AssetRule(
        symbol="ETH",
        enabled=True,
        decimals=18,
        max_per_transfer=100 * ETH,
        hot_limit=5 * ETH,
        windows=(Window(3600, 200 * ETH), Window(86400, 1000 * ETH)),
        delay_tiers=(DelayTier(10 * ETH, 3600), DelayTier(50 * ETH, 86400)),
    )
    usdc = AssetRule(
        symbol="USDC",
        enabled=False,
        decimals=6,
        max_per_transfer=10**12,
        hot_limit=10**9,
        contract="0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
    )
    fields: dict[str, object] = dict(
        governance=governance(),
        assets={"ETH": eth, "USDC": usdc},
        whitelist={
            GOOD: WhitelistEntry(GOOD, ("ETH", "USDC"), "omnibus", NOW - 86400),
            LATER: WhitelistEntry(LATER, ("ETH",), "later", NOW + 3600),
            DENIED: WhitelistEntry(DENIED, ("ETH",), "also denied", NOW - 86400),
        },
        deny={DENIED: DenyEntry(DENIED, "sanctioned")},
        api_keys={"backend": KeyRule("backend", {"ETH": (Window(3600, 150 * ETH),)})},
    )
    fields.update(overrides)
    return Policy(**fields)  # type: ignore[arg-type]


# -- customer payouts (issue 16) ---------------------------------------------------------------------------------
CUSTOMER = "cust-1"
VIP = "cust-42"  # has an override: no per-transfer maximum of its own, 500 ETH a day
BOOKED = "0x5a5A5a5a5A5a5a5a5a5A5a5A5A5a5a5A5A5A5A5A"  # in the customer's address book (when the context says so)
STRANGER = "0xdBc1b4c900Ffe48D575b5da5c638040125f65db0"  # on no list at all
LOOKALIKE = "0xe52D00000000000000000000000000000000fc75"  # first and last 4 hex digits of DENIED, another case
NEAR_MISS = "0xE52D00000000000000000000000000000000fC74"  # the last digit differs
OPERATOR_KEYS = [SigningKey(bytes([i + 30]) * 32) for i in range(2)]


def payout_policy(holds: HoldRules | None = None, **overrides: object) -> Policy:
    """``policy()`` with ETH open to unlisted payouts (2 ETH each, 5 ETH a day), customer limits on ETH (10 ETH
    each, 20 ETH an hour, 50 ETH a day; VIP: 500 ETH a day and no maximum of its own), two operators and a
    backend, and ``holds`` (none by default)."""
    base = policy()
    eth = replace(base.assets["ETH"], unlisted=Limits(2 * ETH, (Window(86400, 5 * ETH),)))
    fields: dict[str, object] = dict(
        assets={**base.assets, "ETH": eth},
        customers=CustomerRules(
            address_lock=86400,
            limits={"ETH": Limits(10 * ETH, (Window(3600, 20 * ETH), Window(86400, 50 * ETH)))},
            overrides={VIP: {"ETH": Limits(None, (Window(86400, 500 * ETH),))}},
        ),
        holds=holds or HoldRules(),
        operators=tuple(Operator(f"op{i}", k.verify_key.encode().hex()) for i, k in enumerate(OPERATOR_KEYS)),
        backends=(Backend("backend", SigningKey(bytes([40]) * 32).verify_key.encode().hex()),),
    )
    fields.update(overrides)
    return replace(base, **fields)  # type: ignore[arg-type]
