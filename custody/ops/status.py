"""`custody status`: what an operator wants at a glance, gathered in one read transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from custody.cold import batches
from custody.errors import NoActivePolicy
from custody.ledger import freeze
from custody.ledger import policy as policy_service
from custody.ledger.positions import cold_balance, hot_position, hot_share
from custody.store.db import Store
from custody.store.models import HotTransaction, Withdrawal
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
    with store.read() as s:
        head, _ = policy_service.head(s)
        freezes = [{"id": f.id, "since": f.frozen_at, "reason": f.reason, "by": f.by} for f in freeze.all_active(s)]
        orphaned = [
            {"nonce": t.nonce, "tx_hash": t.tx_hash, "withdrawal": t.withdrawal_id, "batch": t.batch_id}
            for t in s.execute(
                select(HotTransaction).where(HotTransaction.state == "orphaned").order_by(HotTransaction.nonce)
            ).scalars()
        ]
        counts: dict[str, dict[str, int]] = {}
        for state, asset, n in s.execute(
            select(Withdrawal.state, Withdrawal.asset, func.count()).group_by(Withdrawal.state, Withdrawal.asset)
        ).all():
            counts.setdefault(state, {})[asset] = n
        balances = _balances(s)
    waiting = [
        {
            "id": b.id,
            "safe_nonce": b.safe_nonce,
            "withdrawals": b.withdrawals,
            "signed_by": b.signed_by,
            "missing": b.missing,
            "threshold": b.threshold,
            "expires_at": b.expires_at,
        }
        for b in batches.list_batches(store)
        if b.state == batches.EXPORTED
    ]
    frozen = freezes[0] if freezes else None
    return Status(head.version, head.hash, frozen, counts, balances, waiting, freezes, orphaned)


def _balances(s: Session) -> list[dict[str, Any]]:
    try:
        assets = policy_service.PolicyCache().get(s).policy.assets
    except NoActivePolicy:
        return []
    out = []
    for symbol, rule in sorted(assets.items()):
        hot = hot_position(s, symbol)
        cold = cold_balance(s, symbol)
        share = hot_share(hot, cold)
        out.append(
            {
                "asset": symbol,
                "hot": format_amount(hot.balance, rule.decimals),
                "reserved": format_amount(hot.reserved, rule.decimals),
                "cold": None if cold is None else format_amount(cold, rule.decimals),
                "hot_share_bp": share,
            }
        )
    return out


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
