"""The policy's customer-payout sections (issue 16), read and written: ``[customers]``, an asset's ``unlisted``,
``[holds]``, ``[[operators]]``, ``[[backends]]`` and an API key's ``sources``.

Canonical form (written only when set, so that policies without them keep their bytes and bundle hash):

    "customers": {"address_lock": seconds, "limits": {ASSET: LIMITS}, "overrides": {CUSTOMER: {ASSET: LIMITS}}}
    "holds":     {"first_payout": bool, "median_multiple": int|null, "young_entry": seconds|null,
                  "velocity_share": int|null, "similar_to_denied": bool}
    "operators": [{"name", "key"}], "backends": [{"name", "key"}]      (sorted by name)
    assets.ASSET.unlisted: LIMITS
    api_keys.NAME.sources: ["10.20.0.0/16", "2001:db8::/48"]           (normalised, sorted, no duplicates)
    LIMITS:      {"max_per_transfer": "<base units>" (only when set), "windows": [{"period", "limit"}]}

``customers`` is written only when it differs from ``CustomerRules()``, ``holds`` only when some rule is on,
``operators`` and ``backends`` only when not empty: a canonical document that writes a default is refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from policies.errors import PolicyFileError
from policies.model import AssetRule, Backend, CustomerRules, HoldRules, Limits, Operator, Policy, Window
from policies.reading import NAME, BaseReader

# The exchange's account ids, opaque to us: the same pattern at intake, in the address book and in the policy.
CUSTOMER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
MAX_MEDIAN_MULTIPLE = 1000


class SectionReader(BaseReader):
    """Readers of the payout sections. The asset table is passed in: limits are written in an asset's units."""

    def windows(self, value: Any, path: str, decimals: int) -> tuple[Window, ...]:
        out = []
        for i, item in enumerate(self.array(value, path)):
            p = f"{path}[{i}]"
            w = self.table(item, p, {"period", "limit"})
            out.append(Window(self.period(w["period"], f"{p}.period"), self.amount(w["limit"], decimals, f"{p}.limit")))
        self.unique(out, lambda w: w.seconds, path, "period")
        return tuple(sorted(out, key=lambda w: w.seconds))

    def limits(self, value: Any, path: str, rule: AssetRule, *, unlisted: bool = False) -> Limits:
        """A per-transfer maximum and windows. Unlisted payouts need both (a limit that cannot be exceeded
        offline as well as online); a customer's limits need at least one of them."""
        required = {"max_per_transfer", "windows"} if unlisted else set()
        t = self.table(value, path, required, {"max_per_transfer", "windows"})
        windows = self.windows(t.get("windows", []), f"{path}.windows", rule.decimals)
        top = None  # absent: no maximum of its own (a canonical null is refused as no amount)
        if "max_per_transfer" in t:
            top = self.amount(t["max_per_transfer"], rule.decimals, f"{path}.max_per_transfer")
        limits = Limits(max_per_transfer=top, windows=windows)
        if unlisted and not windows:
            raise PolicyFileError(f"{path}.windows", "must list at least one window: unlisted payouts are counted")
        if limits == Limits():
            raise PolicyFileError(path, "must set max_per_transfer or windows")
        return limits

    def customers(self, value: Any, assets: Mapping[str, AssetRule]) -> CustomerRules:
        keys = {"address_lock", "limits", "overrides"}
        t = self.table(value, "customers", set() if self.human else keys, keys)
        lock = self.period(t.get("address_lock", "24h" if self.human else 86400), "customers.address_lock")
        limits = self.per_asset(t.get("limits", {}), "customers.limits", assets)
        overrides: dict[str, dict[str, Limits]] = {}
        for customer, table in self.typed(t.get("overrides", {}), dict, "customers.overrides").items():
            path = f"customers.overrides.{customer}"
            if CUSTOMER_ID.fullmatch(customer) is None:
                raise PolicyFileError(path, "customer ids are 1 to 64 letters, digits, '.', '_', ':', '@' or '-'")
            overrides[customer] = self.per_asset(table, path, assets)
            if not overrides[customer]:
                raise PolicyFileError(path, "must name at least one asset")
        rules = CustomerRules(address_lock=lock, limits=limits, overrides=overrides)
        if not self.human and rules == CustomerRules():
            raise PolicyFileError("customers", "is written only when it differs from the defaults")
        return rules

    def per_asset(self, value: Any, path: str, assets: Mapping[str, AssetRule]) -> dict[str, Limits]:
        out = {}
        for symbol, table in self.typed(value, dict, path).items():
            if symbol not in assets:
                raise PolicyFileError(f"{path}.{symbol}", f"unknown asset {symbol}")
            out[symbol] = self.limits(table, f"{path}.{symbol}", assets[symbol])
        return out

    def holds(self, value: Any) -> HoldRules:
        keys = {"first_payout", "median_multiple", "young_entry", "velocity_share", "similar_to_denied"}
        t = self.table(value, "holds", keys if not self.human else set(), keys)
        multiple, young, share = (t.get(k) for k in ("median_multiple", "young_entry", "velocity_share"))
        rules = HoldRules(
            first_payout=self.typed(t.get("first_payout", False), bool, "holds.first_payout"),
            median_multiple=None
            if multiple is None
            else self.count(multiple, "holds.median_multiple", 1, MAX_MEDIAN_MULTIPLE),
            young_entry=None if young is None else self.period(young, "holds.young_entry"),
            velocity_share=None if share is None else self.count(share, "holds.velocity_share", 1, 100),
            similar_to_denied=self.typed(t.get("similar_to_denied", False), bool, "holds.similar_to_denied"),
        )
        if not self.human and rules == HoldRules():
            raise PolicyFileError("holds", "is written only when a hold rule is on")
        return rules

    def people(self, value: Any, path: str, what: str) -> list[tuple[str, str]]:
        """``[[operators]]`` or ``[[backends]]``: (name, key) pairs, names and keys unique, sorted by name."""
        items = self.array(value, path)
        if not items and not self.human:
            raise PolicyFileError(path, "is written only when not empty")
        out = []
        for i, item in enumerate(items):
            p = f"{path}[{i}]"
            t = self.table(item, p, {"name", "key"})
            out.append((self.text(t["name"], f"{p}.name", NAME, f"{what} name"), self.public_key(t["key"], f"{p}.key")))
        self.unique(out, lambda x: x[0], path, f"{what} name")
        self.unique(out, lambda x: x[1], path, f"{what} key")
        return sorted(out)

    def operators(self, value: Any) -> tuple[Operator, ...]:
        return tuple(Operator(n, k) for n, k in self.people(value, "operators", "operator"))

    def backends(self, value: Any) -> tuple[Backend, ...]:
        return tuple(Backend(n, k) for n, k in self.people(value, "backends", "backend"))

    def sources(self, value: Any, path: str) -> tuple[str, ...]:
        """CIDR networks, strict (host bits set is an error), normalised (``2001:DB8::/48`` is
        ``2001:db8::/48``, a bare address is a /32 or /128), no duplicates, sorted."""
        items = self.array(value, path)
        if not items:
            raise PolicyFileError(path, "must list at least one network; leave sources out to allow any")
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for i, item in enumerate(items):
            p = f"{path}[{i}]"
            text = self.text(item, p)
            try:
                network = ipaddress.ip_network(text, strict=True)
            except ValueError as exc:
                raise PolicyFileError(p, f"{exc} (a network such as 10.20.0.0/16 or 2001:db8::/48)") from None
            if isinstance(network, ipaddress.IPv6Network) and network.network_address.scope_id is not None:
                raise PolicyFileError(p, f"{text!r}: a network with a zone (%) cannot match a client address")
            if not self.human and str(network) != text:
                raise PolicyFileError(p, f"{text!r} is not in normal form ({network})")
            networks.append(network)
        self.unique([str(n) for n in networks], lambda n: n, path, "network")
        networks.sort(key=lambda n: (n.version, int(n.network_address), n.prefixlen))
        return tuple(str(n) for n in networks)

    def check_roles(self, policy: Policy) -> None:
        """Rules across sections: four eyes need two people, and no operator holds a backend's key."""
        backend_keys = {b.key: b.name for b in policy.backends}
        for i, op in enumerate(policy.operators):
            if op.key in backend_keys:
                raise PolicyFileError(
                    f"operators[{i}].key",
                    f"is also the key of backend {backend_keys[op.key]}: a backend could approve its own payouts",
                )
        if policy.holds != HoldRules() and len(policy.operators) < 2:
            raise PolicyFileError(
                "holds", "needs at least two [[operators]]: a held withdrawal is released by two distinct operators"
            )


def limits_to_canonical(limits: Limits) -> dict[str, Any]:
    out: dict[str, Any] = {"windows": [{"period": w.seconds, "limit": str(w.limit)} for w in limits.windows]}
    if limits.max_per_transfer is not None:
        out["max_per_transfer"] = str(limits.max_per_transfer)
    return out


def sections_to_canonical(policy: Policy) -> dict[str, Any]:
    """The payout sections of ``policy`` that are set (the asset and API key fields are written with them)."""
    out: dict[str, Any] = {}
    c = policy.customers
    if c != CustomerRules():
        out["customers"] = {
            "address_lock": c.address_lock,
            "limits": {a: limits_to_canonical(x) for a, x in sorted(c.limits.items())},
            "overrides": {
                customer: {a: limits_to_canonical(x) for a, x in sorted(per.items())}
                for customer, per in sorted(c.overrides.items())
            },
        }
    h = policy.holds
    if h != HoldRules():
        out["holds"] = {
            "first_payout": h.first_payout,
            "median_multiple": h.median_multiple,
            "young_entry": h.young_entry,
            "velocity_share": h.velocity_share,
            "similar_to_denied": h.similar_to_denied,
        }
    pairs = {
        "operators": [(o.name, o.key) for o in policy.operators],
        "backends": [(b.name, b.key) for b in policy.backends],
    }
    for section, people in pairs.items():
        if people:
            out[section] = [{"name": name, "key": key} for name, key in sorted(people)]
    return out
