"""Policy files in, compiled ``Policy`` out; and the policy's canonical form for bundles.

There are two spellings of one structure. The human TOML file writes amounts as decimal strings in the
asset's units ("1.5"), periods as "1h"/"30m"/"7d" and times as TOML datetimes. The canonical form, which
goes into bundles and is hashed, writes amounts as strings of base units, periods and times as integer
seconds. One reader validates both, so the rules cannot drift apart; every mistake names its location,
and nothing is returned unless the whole file is valid.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from typing import Any

from policies.chains import CHAIN_KEYS, ChainReader, chain_to_canonical
from policies.errors import PolicyFileError
from policies.model import (
    Admin,
    AssetRule,
    BatchRules,
    CustomerRules,
    DelayTier,
    DenyEntry,
    Governance,
    HoldRules,
    KeyRule,
    Policy,
    WhitelistEntry,
    Window,
)
from policies.reading import LAST_INSTANT, NAME
from policies.sections import SectionReader, limits_to_canonical, sections_to_canonical
from policies.units import format_amount

__all__ = ["FORMAT", "LAST_INSTANT", "Reader", "describe_amount", "format_period", "load_policy_toml"]
__all__ += ["policy_from_canonical", "policy_to_canonical"]

FORMAT = 1
DEFAULT_ACTIVATION_DELAY = 24 * 3600
_SYMBOL = re.compile(r"[A-Z][A-Z0-9]{1,15}")
FREEZE_ID = re.compile(r"[0-9a-f]{16}")
_OPTIONAL_SECTIONS = {"whitelist", "deny", "api_keys", "unfreeze", "batches"}
_OPTIONAL_SECTIONS |= {"customers", "holds", "operators", "backends"}  # customer payouts (policies.sections)


def load_policy_toml(text: str) -> Policy:
    """Compile a human-edited TOML policy."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyFileError("toml", str(exc)) from None
    return Reader(human=True).policy(data)


def policy_from_canonical(data: Any) -> Policy:
    """Compile the canonical form; refuse it unless it is exactly what ``policy_to_canonical`` writes."""
    policy = Reader(human=False).policy(data)
    if policy_to_canonical(policy) != data:
        raise PolicyFileError("", "policy is not in canonical order (lists must be sorted)")
    return policy


def policy_to_canonical(policy: Policy) -> dict[str, Any]:
    g = policy.governance
    return {
        "format": FORMAT,
        "governance": {
            "quorum": g.quorum,
            "activation_delay": g.activation_delay,
            "admins": [{"name": a.name, "key": a.key} for a in sorted(g.admins, key=lambda a: a.key)],
        },
        "assets": {
            s: {
                "enabled": r.enabled,
                "decimals": r.decimals,
                "max_per_transfer": str(r.max_per_transfer),
                "hot_limit": str(r.hot_limit),
                "windows": [{"period": w.seconds, "limit": str(w.limit)} for w in r.windows],
                "delay_tiers": [{"at_least": str(t.at_least), "delay": t.delay} for t in r.delay_tiers],
                "contract": r.contract,
                "hot_min": None if r.hot_min is None else str(r.hot_min),
                "hot_max": None if r.hot_max is None else str(r.hot_max),
                "hot_min_share": r.hot_min_share,
                "hot_max_share": r.hot_max_share,
            }
            | _window_field("auto_freeze", r.auto_freeze)
            | _window_field("hot_topup", r.hot_topup)
            | ({} if r.unlisted is None else {"unlisted": limits_to_canonical(r.unlisted)})
            | chain_to_canonical(r)
            for s, r in sorted(policy.assets.items())
        },
        "whitelist": [
            {"address": e.address, "assets": list(e.assets), "label": e.label, "active_from": e.active_from}
            | ({"hot": True} if e.hot else {})
            for _, e in sorted(policy.whitelist.items(), key=lambda kv: kv[0].lower())
        ],
        "deny": [
            {"address": e.address, "note": e.note} for _, e in sorted(policy.deny.items(), key=lambda kv: kv[0].lower())
        ],
        "api_keys": {
            name: {
                "windows": [
                    {"asset": asset, "period": w.seconds, "limit": str(w.limit)}
                    for asset, ws in sorted(k.windows.items())
                    for w in ws
                ]
            }
            | ({"sources": list(k.sources)} if k.sources else {})
            for name, k in sorted(policy.api_keys.items())
        },
    } | _optional(policy)


def _optional(policy: Policy) -> dict[str, Any]:
    """Fields written only when set, so that bundles made before they existed keep their bytes and hash."""
    out: dict[str, Any] = {} if policy.unfreeze is None else {"unfreeze": policy.unfreeze}
    if policy.batches != BatchRules():
        b = policy.batches
        out["batches"] = {
            "max_future": b.max_future,
            "max_lifetime": b.max_lifetime,
            "max_nonce_gap": b.max_nonce_gap,
        }
    return out | sections_to_canonical(policy)


def _window_field(name: str, window: Window | None) -> dict[str, Any]:
    return {} if window is None else {name: {"period": window.seconds, "limit": str(window.limit)}}


def format_period(seconds: int) -> str:
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def describe_amount(policy: Policy, asset: str, value: int) -> str:
    rule = policy.assets.get(asset)
    return f"{format_amount(value, rule.decimals)} {asset}" if rule else f"{value} base units of {asset}"


class Reader(SectionReader, ChainReader):
    """The whole policy: the primitives (``policies.reading``), the payout sections (``policies.sections``),
    the chains (``policies.chains``) and the rest, section by section."""

    # -- structure --------------------------------------------------------------------------------
    def policy(self, data: Any) -> Policy:
        root = self.table(data, "", {"format", "governance", "assets"}, _OPTIONAL_SECTIONS)
        if self.typed(root["format"], int, "format") != FORMAT:
            raise PolicyFileError("format", f"unsupported format {root['format']}; this engine reads {FORMAT}")
        governance = self.governance(root["governance"])
        assets_table = self.typed(root["assets"], dict, "assets")
        assets = {s: self.asset(s, v, f"assets.{s}") for s, v in assets_table.items()}
        if not assets:
            raise PolicyFileError("assets", "must declare at least one asset")
        self.one_native_coin_each(assets)
        contracts: dict[str, str] = {}
        for symbol, rule in sorted(assets.items()):
            if rule.contract is not None and rule.contract in contracts:
                # One token under two symbols could carry two decimals: "1 USDX" would pay 10^18 units of USDC.
                raise PolicyFileError(
                    f"assets.{symbol}.contract",
                    f"{rule.contract} is already the contract of {contracts[rule.contract]}",
                )
            if rule.contract is not None:
                contracts[rule.contract] = symbol
        whitelist = [
            self.whitelist_entry(v, f"whitelist[{i}]", assets)
            for i, v in enumerate(self.array(root.get("whitelist", []), "whitelist"))
        ]
        self.unique(whitelist, lambda e: e.address, "whitelist", "address")
        self.hot_entry(whitelist, assets)
        deny = [
            self.deny_entry(v, f"deny[{i}]", assets) for i, v in enumerate(self.array(root.get("deny", []), "deny"))
        ]
        self.unique(deny, lambda e: e.address, "deny", "address")
        keys_table = self.typed(root.get("api_keys", {}), dict, "api_keys")
        api_keys = {n: self.key_rule(n, v, f"api_keys.{n}", assets) for n, v in keys_table.items()}
        unfreeze = root.get("unfreeze")
        policy = Policy(
            governance=governance,
            assets=assets,
            whitelist={e.address: e for e in whitelist},
            deny={e.address: e for e in deny},
            api_keys=api_keys,
            unfreeze=None if unfreeze is None else self.text(unfreeze, "unfreeze", FREEZE_ID, "freeze id (16 hex)"),
            batches=self.batch_rules(root.get("batches", {})),
            customers=CustomerRules() if "customers" not in root else self.customers(root["customers"], assets),
            holds=HoldRules() if "holds" not in root else self.holds(root["holds"]),
            operators=() if "operators" not in root else self.operators(root["operators"]),
            backends=() if "backends" not in root else self.backends(root["backends"]),
        )
        self.check_roles(policy)
        return policy

    def hot_entry(self, whitelist: list[WhitelistEntry], assets: dict[str, AssetRule]) -> None:
        """At most one entry per chain (and network) is the hot wallet, and each asset it may receive states a
        top-up limit that the band allows: a top-up is money a compromised host could take, so its ceiling is the
        policy's."""
        hot = [(i, e) for i, e in enumerate(whitelist) if e.hot]
        chains: set[tuple[str, str | None]] = set()
        for i, entry in hot:
            first = assets[entry.assets[0]]  # an entry lists the assets of one chain (``entry_address``)
            if (first.chain, first.network) in chains:
                raise PolicyFileError(
                    f"whitelist[{i}].hot", f"only one whitelist entry per chain may be the hot wallet ({first.chain})"
                )
            chains.add((first.chain, first.network))
        for i, entry in hot:
            for symbol in entry.assets:
                rule = assets[symbol]
                if rule.hot_topup is None:
                    raise PolicyFileError(
                        f"assets.{symbol}.hot_topup",
                        f"is required: whitelist[{i}] ({entry.label}) is the hot wallet and receives {symbol}",
                    )
                if rule.hot_min is not None and rule.hot_max is not None:
                    band = rule.hot_max - rule.hot_min
                    if rule.hot_topup.limit > band:
                        raise PolicyFileError(
                            f"assets.{symbol}.hot_topup.limit",
                            f"must be at most hot_max - hot_min ({format_amount(band, rule.decimals)} {symbol})",
                        )

    def batch_rules(self, value: Any) -> BatchRules:
        t = self.table(value, "batches", set(), {"max_future", "max_lifetime", "max_nonce_gap"})
        default = BatchRules()
        human = {"max_future": "5m", "max_lifetime": "7d"}
        future = self.period(
            t.get("max_future", human["max_future"] if self.human else default.max_future), "batches.max_future"
        )
        lifetime = self.period(
            t.get("max_lifetime", human["max_lifetime"] if self.human else default.max_lifetime), "batches.max_lifetime"
        )
        if future > 3600:
            raise PolicyFileError("batches.max_future", "must be at most 1h")
        if lifetime > 30 * 86400:
            raise PolicyFileError("batches.max_lifetime", "must be at most 30d")
        gap = self.count(t.get("max_nonce_gap", default.max_nonce_gap), "batches.max_nonce_gap", 1, 256)
        return BatchRules(max_future=future, max_lifetime=lifetime, max_nonce_gap=gap)

    def governance(self, value: Any) -> Governance:
        t = self.table(value, "governance", {"quorum", "admins"}, {"activation_delay"})
        admins = []
        for i, item in enumerate(self.array(t["admins"], "governance.admins")):
            path = f"governance.admins[{i}]"
            a = self.table(item, path, {"name", "key"})
            key = self.public_key(a["key"], f"{path}.key")
            admins.append(Admin(self.text(a["name"], f"{path}.name", NAME, "name"), key))
        if not admins:
            raise PolicyFileError("governance.admins", "must list at least one admin")
        self.unique(admins, lambda a: a.key, "governance.admins", "admin key")
        self.unique(admins, lambda a: a.name, "governance.admins", "admin name")
        quorum = self.count(t["quorum"], "governance.quorum", 1, len(admins))
        delay = self.period(
            t.get("activation_delay", DEFAULT_ACTIVATION_DELAY if not self.human else "24h"),
            "governance.activation_delay",
            allow_zero=True,
        )
        return Governance(admins=tuple(sorted(admins, key=lambda a: a.key)), quorum=quorum, activation_delay=delay)

    def asset(self, symbol: str, value: Any, path: str) -> AssetRule:
        if _SYMBOL.fullmatch(symbol) is None:
            raise PolicyFileError(path, "asset symbols are 2 to 16 capital letters or digits")
        t = self.table(
            value,
            path,
            {"decimals", "max_per_transfer", "hot_limit"},
            {
                "enabled",
                "windows",
                "delay_tiers",
                "contract",
                "hot_min",
                "hot_max",
                "hot_min_share",
                "hot_max_share",
                "auto_freeze",
                "hot_topup",
                "unlisted",
                *CHAIN_KEYS,
            },
        )
        decimals = self.count(t["decimals"], f"{path}.decimals", 0, 36)
        chain = self.chain_fields(t, path, decimals)
        windows = self.windows(t.get("windows", []), f"{path}.windows", decimals)
        tiers = []
        for i, item in enumerate(self.array(t.get("delay_tiers", []), f"{path}.delay_tiers")):
            p = f"{path}.delay_tiers[{i}]"
            d = self.table(item, p, {"at_least", "delay"})
            tiers.append(
                DelayTier(self.amount(d["at_least"], decimals, f"{p}.at_least"), self.period(d["delay"], f"{p}.delay"))
            )
        self.unique(tiers, lambda d: d.at_least, f"{path}.delay_tiers", "threshold")
        hot_min, hot_max = (
            None if t.get(k) is None else self.amount(t[k], decimals, f"{path}.{k}", allow_zero=True)
            for k in ("hot_min", "hot_max")
        )
        if hot_min is not None and hot_max is not None and hot_min >= hot_max:
            raise PolicyFileError(f"{path}.hot_max", "must be greater than hot_min")
        min_share, max_share = (self.share(t.get(k), f"{path}.{k}") for k in ("hot_min_share", "hot_max_share"))
        for amount_key, share, key in (
            ("hot_min", min_share, "hot_min_share"),
            ("hot_max", max_share, "hot_max_share"),
        ):
            if share is not None and t.get(amount_key) is not None:
                raise PolicyFileError(f"{path}.{key}", f"give {amount_key} or {key}, not both")
        if min_share is not None and max_share is not None and min_share >= max_share:
            raise PolicyFileError(f"{path}.hot_max_share", "must be greater than hot_min_share")
        rule = AssetRule(
            symbol=symbol,
            enabled=self.typed(t.get("enabled", True), bool, f"{path}.enabled"),
            decimals=decimals,
            max_per_transfer=self.amount(t["max_per_transfer"], decimals, f"{path}.max_per_transfer"),
            hot_limit=self.amount(t["hot_limit"], decimals, f"{path}.hot_limit", allow_zero=True),
            windows=windows,
            delay_tiers=tuple(sorted(tiers, key=lambda d: d.at_least)),
            contract=None if t.get("contract") is None else self.address(t["contract"], f"{path}.contract"),
            hot_min=hot_min,
            hot_max=hot_max,
            hot_min_share=min_share,
            hot_max_share=max_share,
            auto_freeze=None
            if t.get("auto_freeze") is None
            else self.windows([t["auto_freeze"]], f"{path}.auto_freeze", decimals)[0],
            hot_topup=None
            if t.get("hot_topup") is None
            else self.windows([t["hot_topup"]], f"{path}.hot_topup", decimals)[0],
            chain=chain.chain,
            network=chain.network,
            max_fee=chain.max_fee,
            max_fee_rate=chain.max_fee_rate,
        )
        if "unlisted" in t:
            rule = replace(rule, unlisted=self.limits(t["unlisted"], f"{path}.unlisted", rule, unlisted=True))
        return rule

    def whitelist_entry(self, value: Any, path: str, assets: dict[str, AssetRule]) -> WhitelistEntry:
        t = self.table(value, path, {"address", "assets", "label", "active_from"}, {"hot"})
        names = [self.text(a, f"{path}.assets[{i}]") for i, a in enumerate(self.array(t["assets"], f"{path}.assets"))]
        if not names:
            raise PolicyFileError(f"{path}.assets", "must name at least one asset")
        for i, name in enumerate(names):
            if name not in assets:
                raise PolicyFileError(f"{path}.assets[{i}]", f"unknown asset {name}")
        self.unique(names, lambda n: n, f"{path}.assets", "asset")
        return WhitelistEntry(
            address=self.entry_address(t["address"], path, names, assets),
            assets=tuple(sorted(names)),
            label=self.label(t["label"], f"{path}.label"),
            active_from=self.instant(t["active_from"], f"{path}.active_from"),
            hot=self.hot_flag(t, f"{path}.hot"),
        )

    def hot_flag(self, entry: dict[str, Any], path: str) -> bool:
        if "hot" not in entry:
            return False
        flag = self.typed(entry["hot"], bool, path)
        if not self.human and not flag:
            raise PolicyFileError(path, "is written only when true")
        return flag

    def deny_entry(self, value: Any, path: str, assets: dict[str, AssetRule]) -> DenyEntry:
        t = self.table(value, path, {"address"}, {"note"})
        address = self.any_chain_address(t["address"], f"{path}.address", assets)
        return DenyEntry(address, self.label(t.get("note", ""), f"{path}.note"))

    def key_rule(self, name: str, value: Any, path: str, assets: dict[str, AssetRule]) -> KeyRule:
        if NAME.fullmatch(name) is None:
            raise PolicyFileError(path, "API key names are lowercase letters, digits, '.', '_' or '-'")
        t = self.table(value, path, set(), {"windows", "sources"})
        grouped: dict[str, list[Window]] = {}
        for i, item in enumerate(self.array(t.get("windows", []), f"{path}.windows")):
            p = f"{path}.windows[{i}]"
            w = self.table(item, p, {"asset", "period", "limit"})
            asset = self.text(w["asset"], f"{p}.asset")
            if asset not in assets:
                raise PolicyFileError(f"{p}.asset", f"unknown asset {asset}")
            window = Window(
                self.period(w["period"], f"{p}.period"), self.amount(w["limit"], assets[asset].decimals, f"{p}.limit")
            )
            if any(x.seconds == window.seconds for x in grouped.get(asset, [])):
                raise PolicyFileError(p, f"duplicate period for {asset}")
            grouped.setdefault(asset, []).append(window)
        return KeyRule(
            name,
            {a: tuple(sorted(ws, key=lambda w: w.seconds)) for a, ws in grouped.items()},
            () if "sources" not in t else self.sources(t["sources"], f"{path}.sources"),
        )
