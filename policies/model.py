"""The compiled policy: what the rules are, in base units and seconds. Built only by ``policies.loader``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Window:
    """A rolling limit: at most ``limit`` base units in any ``seconds``-long window ending now."""

    seconds: int
    limit: int


@dataclass(frozen=True, slots=True)
class DelayTier:
    """Transfers of at least ``at_least`` base units wait ``delay`` seconds before they are queued."""

    at_least: int
    delay: int


@dataclass(frozen=True, slots=True)
class Limits:
    """A per-transfer maximum and rolling windows for one asset (a customer's, or unlisted destinations')."""

    max_per_transfer: int | None = None  # None: only the asset's own maximum applies
    windows: tuple[Window, ...] = ()


@dataclass(frozen=True, slots=True)
class AssetRule:
    symbol: str
    enabled: bool
    decimals: int
    max_per_transfer: int
    hot_limit: int
    windows: tuple[Window, ...] = ()
    delay_tiers: tuple[DelayTier, ...] = ()
    # The ERC-20 contract, or None for the chain's native coin. It is part of the signed policy so that a
    # compromised online host cannot point an asset at a contract of its choosing.
    contract: str | None = None
    # The hot band: above hot_max the excess is swept to the cold wallet, below hot_min a top-up is raised
    # from it; both aim at the middle of the band. None: no rebalancing on that side.
    hot_min: int | None = None
    hot_max: int | None = None
    # The same band as a share of the asset's total (hot + cold), in basis points; each side is either an
    # amount or a share, never both.
    hot_min_share: int | None = None
    hot_max_share: int | None = None
    # Hot outflow (payments from the hot wallet to others) above this in any window freezes every payment
    # until a quorum-signed bundle lifts the freeze. None: no automatic freeze for this asset.
    auto_freeze: Window | None = None
    # The most that cold-wallet batches may pay to the hot wallet (the whitelist entry marked ``hot``) in any
    # window. Required whenever the hot wallet is whitelisted for the asset: a compromised host holds the hot
    # key, so every top-up is money it could take; this is how much the treasury agreed to expose.
    hot_topup: Window | None = None
    # Payouts to an address that is neither whitelisted nor in the customer's active address book: allowed
    # only within these limits (counted over every unlisted payout of the asset). None: refused (the default).
    unlisted: Limits | None = None
    # The chain the asset lives on, and for Bitcoin its network (policies.addresses.NETWORKS): every address
    # of the asset (whitelist, deny list, destinations) is checked and compared in that chain's canonical form.
    chain: str = "ethereum"
    network: str | None = None
    # Bitcoin only: the most fee one cold batch may pay, in satoshis, and the highest fee rate, in sat/vB.
    # The signers refuse a transaction above either: a host that sets the fee could otherwise pay it to miners.
    max_fee: int | None = None
    max_fee_rate: int | None = None


@dataclass(frozen=True, slots=True)
class WhitelistEntry:
    address: str
    assets: tuple[str, ...]
    label: str
    active_from: int
    # This destination is the daemon's own hot wallet: transfers to it are top-ups, capped by ``hot_topup``.
    hot: bool = False


@dataclass(frozen=True, slots=True)
class DenyEntry:
    address: str
    note: str


@dataclass(frozen=True, slots=True)
class Admin:
    name: str
    key: str  # Ed25519 public key, 64 lowercase hex digits


@dataclass(frozen=True, slots=True)
class KeyRule:
    """Rolling limits of one API key, per asset, and the networks it may call from."""

    name: str
    windows: Mapping[str, tuple[Window, ...]]
    # CIDR networks (IPv4 or IPv6, normalised) the key may call from; empty: from anywhere.
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operator:
    """A person who decides held withdrawals; each decision is signed with this Ed25519 key."""

    name: str
    key: str  # Ed25519 public key, 64 lowercase hex digits


@dataclass(frozen=True, slots=True)
class Backend:
    """An exchange backend whose signed requests may pay customers (address-book and unlisted destinations).
    Offline signers verify its request signature on every such cold payout."""

    name: str  # the API key's name: the key registered with `custody apikey add` must be this one
    key: str  # Ed25519 public key, 64 lowercase hex digits


@dataclass(frozen=True, slots=True)
class CustomerRules:
    """Limits of the exchange's customers (the ``customer`` of a withdrawal) and their address books."""

    # A new address-book entry is usable this many seconds after it was added.
    address_lock: int = 86400
    # Per asset, what every customer may withdraw; ``overrides`` replace them per customer and asset.
    limits: Mapping[str, Limits] = field(default_factory=dict)
    overrides: Mapping[str, Mapping[str, Limits]] = field(default_factory=dict)

    def limits_for(self, customer: str, asset: str) -> Limits | None:
        override = self.overrides.get(customer, {}).get(asset)
        return override if override is not None else self.limits.get(asset)


@dataclass(frozen=True, slots=True)
class HoldRules:
    """When a withdrawal waits for two operators (``held``) instead of going to the queue. Each is off when
    None or False."""

    first_payout: bool = False  # the customer has never been paid to this address
    median_multiple: int | None = None  # the amount is over this multiple of the customer's 30-day median
    young_entry: int | None = None  # seconds: the address-book entry is younger than this
    velocity_share: int | None = None  # percent: a customer window would be above this share of its limit
    similar_to_denied: bool = False  # same first and last 4 hex digits as a denied address


@dataclass(frozen=True, slots=True)
class Governance:
    admins: tuple[Admin, ...]
    quorum: int
    activation_delay: int

    @property
    def admin_keys(self) -> frozenset[str]:
        return frozenset(a.key for a in self.admins)


@dataclass(frozen=True, slots=True)
class BatchRules:
    """What an offline signer enforces on every cold batch from its own clock and its own ledger."""

    # A batch dated further ahead of the signer's clock than this is refused (it was made to outlive review).
    max_future: int = 300
    # A batch valid for longer than this (expires_at - created_at) is refused: signatures are not stockpiled.
    max_lifetime: int = 7 * 86400
    # A batch more than this many Safe nonces above the highest the signer has signed is refused.
    max_nonce_gap: int = 16


@dataclass(frozen=True, slots=True)
class Policy:
    governance: Governance
    assets: Mapping[str, AssetRule]
    whitelist: Mapping[str, WhitelistEntry] = field(default_factory=dict)
    deny: Mapping[str, DenyEntry] = field(default_factory=dict)
    api_keys: Mapping[str, KeyRule] = field(default_factory=dict)
    # The id of the freeze (``custody freeze``) that applying this bundle lifts: only a quorum can unfreeze.
    unfreeze: str | None = None
    batches: BatchRules = field(default_factory=BatchRules)
    customers: CustomerRules = field(default_factory=CustomerRules)
    holds: HoldRules = field(default_factory=HoldRules)
    operators: tuple[Operator, ...] = ()
    backends: tuple[Backend, ...] = ()

    @property
    def hot_entry(self) -> WhitelistEntry | None:
        """The first whitelist entry marked as the hot wallet, if any (the loader allows one per chain and
        network: to tell whether a transfer is a top-up, use ``is_hot``)."""
        return next((e for e in self.whitelist.values() if e.hot), None)

    def is_hot(self, destination: str) -> bool:
        """Whether ``destination`` (canonical) is a hot wallet's entry: every transfer to it is a top-up."""
        entry = self.whitelist.get(destination)
        return entry is not None and entry.hot
