"""`custody status`: what an operator wants at a glance, gathered in one read transaction.

The figures are those ``/metrics`` shows, read once by ``custody.ops.figures``; here they are only shaped
for a terminal (``render``) or for ``--json`` (``Status``, as it is).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from custody.errors import NoActivePolicy
from custody.ledger.policy import PolicyCache
from custody.ops.figures import Figures, read_figures
from custody.store.db import Store
from policies.units import format_amount


@dataclass
class Status:
    policy_version: int
    policy_hash: str
    frozen: dict[str, Any] | None
    withdrawals: dict[str, dict[str, int]]  # state -> asset -> count
    balances: list[dict[str, Any]] = field(default_factory=list)
    batches_waiting: list[dict[str, Any]] = field(default_factory=list)
    freezes: list[dict[str, Any]] = field(default_factory=list)  # every freeze in force, oldest first
    # Settled hot-wallet transactions whose block left the chain (a rollback deeper than the confirmation
    # depth), by nonce: their withdrawals stay confirmed; they wait for a quorum to lift the rollback freeze.
    orphaned: list[dict[str, Any]] = field(default_factory=list)


def gather(store: Store) -> Status:
    return from_figures(read_figures(store, PolicyCache()))


def from_figures(f: Figures) -> Status:
    """What ``custody status`` shows of the figures (``--json`` prints it as is)."""
    if f.policy is None:
        raise NoActivePolicy("the database has no policy genesis: was it created with `custody init`?")
    counts: dict[str, dict[str, int]] = {}
    for c in f.withdrawals:
        counts.setdefault(c.state, {})[c.asset] = c.n
    freezes = [{"id": x.id, "since": x.since, "reason": x.reason, "by": x.by} for x in f.freezes]
    orphaned = [
        {"nonce": t.nonce, "tx_hash": t.tx_hash, "withdrawal": t.withdrawal, "batch": t.batch} for t in f.orphaned
    ]
    waiting = [
        {
            "id": b.id,
            "safe_nonce": b.safe_nonce,
            "withdrawals": b.withdrawals,
            "signed_by": list(b.signed_by),
            "missing": list(b.missing),
            "threshold": b.threshold,
            "expires_at": b.expires_at,
        }
        for b in f.batches_waiting
    ]
    balances = [
        {
            "asset": p.asset,
            "hot": format_amount(p.hot.balance, p.decimals),
            "reserved": format_amount(p.hot.reserved, p.decimals),
            "cold": None if p.cold is None else format_amount(p.cold, p.decimals),
            "hot_share_bp": p.hot_share_bp,
        }
        for p in f.balances
    ]
    frozen = freezes[0] if freezes else None
    return Status(f.policy.version, f.policy.hash, frozen, counts, balances, waiting, freezes, orphaned)


def render(st: Status) -> list[str]:
    lines = []
    for f in st.freezes or ([st.frozen] if st.frozen else []):
        lines += [
            f"FROZEN since {f['since']} by {f['by']} (freeze {f['id']}): {f['reason']}",
            f'  payments resume only with a quorum-signed bundle that has unfreeze = "{f["id"]}"',
        ]
    if st.orphaned:
        nonces = [o["nonce"] for o in st.orphaned]
        lines.append(
            f"CHAIN ROLLBACK: {len(nonces)} settled hot-wallet transaction(s) left the chain (nonce "
            f"{nonces[0]}{'' if len(nonces) == 1 else f'..{nonces[-1]}'}); their withdrawals stay confirmed and "
            "they are sent again, same bytes, only once no freeze is in force (audit: chain.rollback_detected)"
        )
    lines += [""] if st.freezes or st.frozen or st.orphaned else ["payments: running (not frozen)", ""]
    lines.append(f"policy       version {st.policy_version} ({st.policy_hash[:16]}…)")
    lines.append(
        "withdrawals  "
        + (", ".join(f"{state} {sum(per.values())}" for state, per in sorted(st.withdrawals.items())) or "none")
    )
    for b in st.balances:
        share = "-" if b["hot_share_bp"] is None else f"{b['hot_share_bp'] / 100:.2f} %"
        lines.append(
            f"{b['asset']:<12} hot {b['hot']} (reserved {b['reserved']}), cold {b['cold'] or '-'}, hot share {share}"
        )
    lines.append(f"batches waiting for signatures: {len(st.batches_waiting)}")
    for b in st.batches_waiting:
        lines.append(
            f"  {b['id']} nonce {b['safe_nonce']}: {len(b['signed_by'])}/{b['threshold']} signed, "
            f"missing {', '.join(b['missing']) or '-'}"
        )
    return lines
