"""What an admin reads before signing a bundle: pure functions from bundles to lines of text."""

from __future__ import annotations

import datetime as dt

from policies.bundle import Bundle
from policies.loader import format_period
from policies.model import Policy, WhitelistEntry
from policies.units import format_amount


def _when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _entry(e: WhitelistEntry) -> str:
    return f"{e.address}  {','.join(e.assets):<12} {e.label!r}  active from {_when(e.active_from)}"


def describe_bundle(bundle: Bundle, previous: Policy | None) -> list[str]:
    """The header and a diff against ``previous``: whitelist additions and removals first, then the rest."""
    p = bundle.policy
    lines = [
        f"Policy bundle version {bundle.version}",
        f"  hash           {bundle.hash}",
        f"  previous hash  {bundle.previous_hash}",
        f"  created        {_when(bundle.created_at)}",
        "",
    ]
    if p.unfreeze is not None:
        lines += [f"UNFREEZES: applying this bundle lifts freeze {p.unfreeze} and payments resume.", ""]
    old = previous or Policy(governance=p.governance, assets={})
    added = [e for a, e in sorted(p.whitelist.items()) if a not in old.whitelist]
    removed = [e for a, e in sorted(old.whitelist.items()) if a not in p.whitelist]
    changed = [
        (old.whitelist[a], e) for a, e in sorted(p.whitelist.items()) if a in old.whitelist and old.whitelist[a] != e
    ]
    lines.append(
        f"Whitelist: {len(added)} added, {len(removed)} removed, {len(changed)} changed, {len(p.whitelist)} in all"
    )
    lines += [f"  + {_entry(e)}" for e in added]
    lines += [f"  - {_entry(e)}" for e in removed]
    for before, after in changed:
        lines += [f"  ~ {_entry(before)}", f"    -> {_entry(after)}"]
    d_added = sorted(set(p.deny) - set(old.deny))
    d_removed = sorted(set(old.deny) - set(p.deny))
    lines.append(f"Deny list: {len(d_added)} added, {len(d_removed)} removed, {len(p.deny)} in all")
    lines += [f"  + {a}  {p.deny[a].note}" for a in d_added] + [f"  - {a}" for a in d_removed]
    lines.append("Assets:")
    for symbol, rule in sorted(p.assets.items()):
        d = rule.decimals
        mark = "" if old.assets.get(symbol) == rule else ("  (new)" if symbol not in old.assets else "  (changed)")
        windows = (
            ", ".join(f"{format_amount(w.limit, d)} per {format_period(w.seconds)}" for w in rule.windows) or "none"
        )
        tiers = ", ".join(f">= {format_amount(t.at_least, d)} waits {format_period(t.delay)}" for t in rule.delay_tiers)
        lines += [
            f"  {symbol}{mark}: {'enabled' if rule.enabled else 'DISABLED'}, "
            f"max {format_amount(rule.max_per_transfer, d)} per transfer, hot limit {format_amount(rule.hot_limit, d)}",
            f"    {'contract ' + rule.contract if rule.contract else 'native coin'}; windows: {windows}; "
            f"delays: {tiers or 'none'}; hot band: "
            f"{'-' if rule.hot_min is None else format_amount(rule.hot_min, d)} to "
            f"{'-' if rule.hot_max is None else format_amount(rule.hot_max, d)}; automatic freeze: "
            + (
                f"hot outflow above {format_amount(rule.auto_freeze.limit, d)} "
                f"per {format_period(rule.auto_freeze.seconds)}"
                if rule.auto_freeze
                else "none"
            ),
        ]
    lines += [f"  {s}  (removed)" for s in sorted(set(old.assets) - set(p.assets))]
    g, og = p.governance, old.governance
    note = "" if previous is None or g == og else "  (CHANGED)"
    lines.append(
        f"Governance{note}: quorum {g.quorum} of {len(g.admins)}, activation delay {format_period(g.activation_delay)}"
    )
    lines += [f"  {'+' if a not in og.admins else ' '} {a.name:<16} {a.key}" for a in g.admins]
    lines += [f"  - {a.name:<16} {a.key}" for a in og.admins if a not in g.admins]
    if p.api_keys:
        lines.append("API key limits:")
        for name, key_rule in sorted(p.api_keys.items()):
            for asset, ws in sorted(key_rule.windows.items()):
                limits = ", ".join(
                    f"{format_amount(w.limit, p.assets[asset].decimals)} per {format_period(w.seconds)}" for w in ws
                )
                lines.append(f"  {name} {asset}: {limits}")
    return lines
