"""What an admin reads before signing a bundle: pure functions from bundles to lines of text.

A policy is flattened into ordered (path, value) pairs, one for every field a person could care about, with
amounts in the asset's units and every string from the file escaped (``policies.text.escape``); two such
lists are diffed into one line per changed field:

    ~ assets.USDC.decimals: 6 -> 12
    - api_keys.backend.windows.ETH.1h: 100 ETH
    + whitelist.0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f.label: "omnibus"

so nothing a bundle changes can hide behind a summary, and a test reads exactly what the admin reads. Optional
fields that are unset have no line, so setting one shows ``+`` and removing one shows ``-``. The customer-payout
sections (issue 16) follow the same rule:

    + assets.ETH.unlisted: allowed (payouts to addresses neither whitelisted nor in an address book)
    + assets.ETH.unlisted.windows.1d: 5 ETH
    ~ customers.address_lock: 1d -> 1h
    + customers.overrides.cust-42.ETH.max_per_transfer: 100 ETH
    - holds.first_payout: on (a customer's first payout to an address is held)
    + operators.<key>: "olga"
    + backends.<key>: "backend"
    ~ api_keys.backend.sources: 10.20.0.0/16 -> 0.0.0.0/0, 10.20.0.0/16
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from policies.bundle import Bundle, describe_duration
from policies.loader import format_period
from policies.model import (
    AssetRule,
    BatchRules,
    CustomerRules,
    DenyEntry,
    Governance,
    HoldRules,
    KeyRule,
    Limits,
    Policy,
    WhitelistEntry,
    Window,
)
from policies.text import escape, when
from policies.units import format_amount

Field = tuple[str, str]


def _quoted(text: str) -> str:
    return f'"{escape(text)}"'


# -- flattening -------------------------------------------------------------------------------------
def flatten(policy: Policy) -> list[Field]:
    """Every field of ``policy`` as (path, display value), in a stable order: unfreeze, governance, assets,
    whitelist, deny list, API keys, batch rules, customers, holds, operators, backends."""
    out: list[Field] = [] if policy.unfreeze is None else [("unfreeze", policy.unfreeze)]
    out += flatten_governance(policy.governance)
    for symbol, rule in sorted(policy.assets.items()):
        out += _asset(symbol, rule)
    for address, entry in sorted(policy.whitelist.items(), key=lambda kv: kv[0].lower()):
        out += _whitelisted(address, entry)
    for address, denied in sorted(policy.deny.items(), key=lambda kv: kv[0].lower()):
        out += _denied(address, denied)
    for name, key_rule in sorted(policy.api_keys.items()):
        out += _api_key(name, key_rule, policy.assets)
    out += _batches(policy.batches)
    out += _customers(policy.customers, policy.assets)
    out += _holds(policy.holds)
    out += [(f"operators.{escape(o.key)}", _quoted(o.name)) for o in sorted(policy.operators, key=lambda o: o.key)]
    out += [(f"backends.{escape(b.key)}", _quoted(b.name)) for b in sorted(policy.backends, key=lambda b: b.key)]
    return out


def flatten_governance(g: Governance) -> list[Field]:
    """The admin set, keyed by public key (a new key under an old name is a removal and an addition)."""
    out = [("governance.quorum", str(g.quorum)), ("governance.activation_delay", format_period(g.activation_delay))]
    out += [(f"governance.admins.{a.key}", _quoted(a.name)) for a in sorted(g.admins, key=lambda a: a.key)]
    return out


def _amount(value: int, rule: AssetRule | None) -> str:
    return f"{format_amount(value, rule.decimals)} {rule.symbol}" if rule else f"{value} base units"


def _window(window: Window, rule: AssetRule) -> str:
    return f"{_amount(window.limit, rule)} per {format_period(window.seconds)}"


def _asset(symbol: str, r: AssetRule) -> list[Field]:
    p = f"assets.{symbol}"
    out = [
        (f"{p}.enabled", "true" if r.enabled else "false"),
        (f"{p}.decimals", str(r.decimals)),
        (f"{p}.contract", r.contract or "none (the chain's native coin)"),
        (f"{p}.max_per_transfer", _amount(r.max_per_transfer, r)),
        (f"{p}.hot_limit", _amount(r.hot_limit, r)),
    ]
    if r.chain != "ethereum":  # shown only where set, so an Ethereum-only review reads as before
        out.append((f"{p}.chain", f"{r.chain} ({r.network})"))
    if r.max_fee is not None:
        out.append((f"{p}.max_fee", f"{_amount(r.max_fee, r)} per batch transaction"))
    if r.max_fee_rate is not None:
        out.append((f"{p}.max_fee_rate", f"{r.max_fee_rate} sat/vB"))
    out += [(f"{p}.windows.{format_period(w.seconds)}", _amount(w.limit, r)) for w in r.windows]
    out += [(f"{p}.delay_tiers[{_amount(t.at_least, r)}]", format_period(t.delay)) for t in r.delay_tiers]
    for name, amount in (("hot_min", r.hot_min), ("hot_max", r.hot_max)):
        if amount is not None:
            out.append((f"{p}.{name}", _amount(amount, r)))
    for name, share in (("hot_min_share", r.hot_min_share), ("hot_max_share", r.hot_max_share)):
        if share is not None:
            out.append((f"{p}.{name}", f"{format_amount(share, 2)}% of the asset's total"))
    for name, window in (("auto_freeze", r.auto_freeze), ("hot_topup", r.hot_topup)):
        if window is not None:
            out.append((f"{p}.{name}", _window(window, r)))
    if r.unlisted is not None:
        out.append((f"{p}.unlisted", "allowed (payouts to addresses neither whitelisted nor in an address book)"))
        out += _limits(f"{p}.unlisted", r.unlisted, r)
    return out


def _limits(p: str, limits: Limits, rule: AssetRule | None) -> list[Field]:
    out = [] if limits.max_per_transfer is None else [(f"{p}.max_per_transfer", _amount(limits.max_per_transfer, rule))]
    out += [(f"{p}.windows.{format_period(w.seconds)}", _amount(w.limit, rule)) for w in limits.windows]
    return out or [(p, "no limits")]


def _whitelisted(address: str, e: WhitelistEntry) -> list[Field]:
    p = f"whitelist.{address}"
    out = [
        (f"{p}.assets", ", ".join(escape(a) for a in e.assets)),
        (f"{p}.label", _quoted(e.label)),
        (f"{p}.active_from", when(e.active_from)),
    ]
    return out + ([(f"{p}.hot", "true (the hot wallet: cold payments to it are top-ups)")] if e.hot else [])


def _denied(address: str, d: DenyEntry) -> list[Field]:
    return [(f"deny.{address}.note", _quoted(d.note))]


def _api_key(name: str, k: KeyRule, assets: Mapping[str, AssetRule]) -> list[Field]:
    p = f"api_keys.{escape(name)}.windows"
    out: list[Field] = []
    for asset, windows in sorted(k.windows.items()):
        rule = assets.get(asset)
        for w in windows:
            out.append((f"{p}.{escape(asset)}.{format_period(w.seconds)}", _amount(w.limit, rule)))
    out = out or [(p, "none")]
    if k.sources:  # absent: calls from anywhere, so removing the line widens the key to every network
        out.append((f"api_keys.{escape(name)}.sources", ", ".join(escape(n) for n in k.sources)))
    return out


def _batches(b: BatchRules) -> list[Field]:
    return [
        ("batches.max_future", format_period(b.max_future)),
        ("batches.max_lifetime", format_period(b.max_lifetime)),
        ("batches.max_nonce_gap", str(b.max_nonce_gap)),
    ]


def _customers(c: CustomerRules, assets: Mapping[str, AssetRule]) -> list[Field]:
    out = [("customers.address_lock", format_period(c.address_lock))]
    for asset, limits in sorted(c.limits.items()):
        out += _limits(f"customers.limits.{escape(asset)}", limits, assets.get(asset))
    for customer, per_asset in sorted(c.overrides.items()):
        for asset, limits in sorted(per_asset.items()):
            out += _limits(f"customers.overrides.{escape(customer)}.{escape(asset)}", limits, assets.get(asset))
    return out


def _holds(h: HoldRules) -> list[Field]:
    """Only the rules that are on: turning one on shows ``+``, turning it off ``-``."""
    out: list[Field] = []
    if h.first_payout:
        out.append(("holds.first_payout", "on (a customer's first payout to an address is held)"))
    if h.median_multiple is not None:
        out.append(("holds.median_multiple", f"{h.median_multiple} (held at this multiple of the 30-day median)"))
    if h.young_entry is not None:
        out.append(("holds.young_entry", f"{format_period(h.young_entry)} (held while the entry is younger)"))
    if h.velocity_share is not None:
        out.append(("holds.velocity_share", f"{h.velocity_share}% (held when a customer window would reach it)"))
    if h.similar_to_denied:
        out.append(("holds.similar_to_denied", "on (held when first and last 4 hex digits match a denied address)"))
    return out


def _hold_summary(h: HoldRules) -> str:
    on = [
        "first payout" if h.first_payout else "",
        f"{h.median_multiple}x the 30-day median" if h.median_multiple is not None else "",
        f"address-book entry younger than {format_period(h.young_entry)}" if h.young_entry is not None else "",
        f"{h.velocity_share}% of a customer window" if h.velocity_share is not None else "",
        "similar to a denied address" if h.similar_to_denied else "",
    ]
    return ", ".join(x for x in on if x) or "none"


# -- diffing ----------------------------------------------------------------------------------------
def diff(old: Sequence[Field], new: Sequence[Field]) -> list[str]:
    """One line per field that differs: ``+ path: value``, ``- path: value`` or ``~ path: old -> new``. Lines
    follow the new order; a removed field stays where it stood among the old ones."""
    before, after = dict(old), dict(new)
    start = object()
    runs: dict[object, list[str]] = {start: []}
    anchor: object = start
    for path, _ in old:
        if path in after:
            anchor = path
        else:
            runs.setdefault(anchor, []).append(path)
    order = list(runs[start])
    for path, _ in new:
        order += [path, *runs.get(path, [])]
    lines = []
    for path in order:
        if path not in before:
            lines.append(f"+ {path}: {after[path]}")
        elif path not in after:
            lines.append(f"- {path}: {before[path]}")
        elif before[path] != after[path]:
            lines.append(f"~ {path}: {before[path]} -> {after[path]}")
    return lines


def _counts(what: str, old: Mapping[str, object], new: Mapping[str, object]) -> str:
    added = sum(1 for k in new if k not in old)
    removed = sum(1 for k in old if k not in new)
    changed = sum(1 for k, v in new.items() if k in old and old[k] != v)
    return f"{what}: {added} added, {removed} removed, {changed} changed, {len(new)} in all"


# -- the review screen ------------------------------------------------------------------------------
def describe_bundle(bundle: Bundle, previous: Policy | Governance | None, now: int | None = None) -> list[str]:
    """The header, the new policy's headline counts and a field-by-field diff against ``previous``: the newest
    verified policy, or for version 1 the genesis admin set (a Governance), or None to list the whole policy.
    ``now`` (the reader's clock) adds the bundle's age to the header."""
    p = bundle.policy
    created = when(bundle.created_at)
    if now is not None:
        created += f" ({_age(now - bundle.created_at)} by this computer's clock)"
    lines = [
        f"Policy bundle version {bundle.version}",
        f"  hash           {bundle.hash}",
        f"  previous hash  {bundle.previous_hash}",
        f"  created        {created}",
        "",
    ]
    if p.unfreeze is not None:
        lines += [f"UNFREEZES: applying this bundle lifts freeze {p.unfreeze} and payments resume.", ""]
    if isinstance(previous, Policy):
        old_fields, old_policy, old_governance = flatten(previous), previous, previous.governance
    elif isinstance(previous, Governance):
        old_fields, old_policy, old_governance = flatten_governance(previous), None, previous
    else:
        old_fields, old_policy, old_governance = [], None, None
    hot = ", ".join(e.address for e in p.whitelist.values() if e.hot)
    lines.append(
        f"The new policy in all: {len(p.assets)} asset(s), {len(p.whitelist)} whitelist entr"
        f"{'y' if len(p.whitelist) == 1 else 'ies'} "
        f"({'hot wallet ' + hot if hot else 'no hot wallet'}), {len(p.deny)} on the deny list, "
        f"{len(p.api_keys)} API key(s), quorum {p.governance.quorum} of {len(p.governance.admins)}"
    )
    empty: dict[str, object] = {}
    lines += [
        "  " + _counts("Assets", old_policy.assets if old_policy else empty, p.assets),
        "  " + _counts("Whitelist", old_policy.whitelist if old_policy else empty, p.whitelist),
        "  " + _counts("Deny list", old_policy.deny if old_policy else empty, p.deny),
        "  " + _counts("API keys", old_policy.api_keys if old_policy else empty, p.api_keys),
    ]
    g = p.governance
    mark = "" if old_governance is None else (" (CHANGED)" if old_governance != g else " (unchanged)")
    lines.append(
        f"  Governance{mark}: quorum {g.quorum} of {len(g.admins)}, "
        f"activation delay {format_period(g.activation_delay)}"
    )
    b = p.batches
    batch_mark = "" if old_policy is None else (" (CHANGED)" if old_policy.batches != b else " (unchanged)")
    lines.append(
        f"  Batch rules{batch_mark}: dated at most {format_period(b.max_future)} ahead, valid at most "
        f"{format_period(b.max_lifetime)}, at most {b.max_nonce_gap} nonces ahead"
    )
    lines += _payout_headlines(p, old_policy)
    changes = diff(old_fields, flatten(p))
    lines += ["", f"Changes, one line per field (+ added, - removed, ~ changed): {len(changes) or 'none'}"]
    lines += [f"  {line}" for line in changes]
    return lines


def _payout_headlines(p: Policy, old: Policy | None) -> list[str]:
    """Who may request and decide customer payouts, and the rules that let them through."""

    def mark(changed: bool) -> str:
        return "" if old is None else (" (CHANGED)" if changed else " (unchanged)")

    def operators(policy: Policy | None) -> dict[str, object]:
        return {} if policy is None else {o.key: o.name for o in policy.operators}

    def backends(policy: Policy | None) -> dict[str, object]:
        return {} if policy is None else {b.key: b.name for b in policy.backends}

    c = p.customers
    unlisted = sorted(escape(s) for s, r in p.assets.items() if r.unlisted is not None)
    return [
        "  " + _counts("Operators", operators(old), operators(p)),
        "  " + _counts("Backends", backends(old), backends(p)),
        f"  Customer rules{mark(old is not None and old.customers != c)}: address lock "
        f"{format_period(c.address_lock)}, limits for {len(c.limits)} asset(s), overrides for "
        f"{len(c.overrides)} customer(s)",
        f"  Hold rules{mark(old is not None and old.holds != p.holds)}: {_hold_summary(p.holds)}",
        "  Unlisted payouts: " + (f"allowed for {', '.join(unlisted)}" if unlisted else "refused for every asset"),
    ]


def _age(seconds: int) -> str:
    return describe_duration(abs(seconds)) + (" in the future" if seconds < 0 else " ago")
