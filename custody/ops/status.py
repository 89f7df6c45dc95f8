"""`custody status`: what an operator wants at a glance, gathered in one read transaction.

The figures are those ``/metrics`` shows, read once by ``custody.ops.figures``; here they are only shaped
for a terminal (``render``) or for ``--json`` (``Status``, as it is).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from custody.cold.btcexecution import ORPHANED
from custody.errors import NoActivePolicy
from custody.hot.btcpayer import BtcTxState
from custody.ledger.policy import PolicyCache
from custody.ops.figures import Figures, read_figures
from custody.store.db import Store
from custody.store.models import BtcBatch, BtcHotPayout, BtcHotTransaction, BtcHotWallet, Withdrawal
from policies.text import escape
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
    # The hot wallet's Bitcoin accounts: network, the address to fund, balance (``bitcoin_hot_status``).
    bitcoin_hot: list[dict[str, Any]] = field(default_factory=list)
    # The Bitcoin cold wallets and their batches not settled yet (``bitcoin_status``).
    bitcoin: dict[str, Any] = field(default_factory=dict)
    # Bitcoin payments, hot and cold, that confirmed and then left the chain in a reorg deeper than the
    # confirmation depth, until they are deep enough again (``bitcoin_rollbacks``).
    bitcoin_rollbacks: list[dict[str, Any]] = field(default_factory=list)


def gather(store: Store) -> Status:
    st = from_figures(read_figures(store, PolicyCache()))
    st.bitcoin_hot = bitcoin_hot_status(store)
    st.bitcoin_rollbacks = bitcoin_rollbacks(store)
    return st


def bitcoin_rollbacks(store: Store) -> list[dict[str, Any]]:
    """The Bitcoin payments a deep reorg took out of the chain after they confirmed (``orphaned``, see
    ``custody.hot.btcfollow`` and ``custody.cold.btcexecution``): their withdrawals stay confirmed, and their same
    signed bytes are sent again until they are deep enough once more."""
    with store.read() as s:
        hot = s.execute(
            select(BtcHotTransaction.payment, BtcHotTransaction.txid, BtcHotTransaction.asset)
            .where(BtcHotTransaction.state == BtcTxState.ORPHANED)
            .order_by(BtcHotTransaction.created_at)
        ).all()
        cold = s.execute(
            select(BtcBatch.id, BtcBatch.txid, BtcBatch.asset)
            .where(BtcBatch.state == ORPHANED)
            .order_by(BtcBatch.created_at)
        ).all()
        paid = {
            payment: n
            for payment, n in s.execute(
                select(BtcHotPayout.payment, func.count())
                .where(BtcHotPayout.payment.in_([p for p, _, _ in hot]))
                .group_by(BtcHotPayout.payment)
            ).all()
        }
        members = {
            batch: n
            for batch, n in s.execute(
                select(Withdrawal.batch_id, func.count())
                .where(Withdrawal.batch_id.in_([b for b, _, _ in cold]))
                .group_by(Withdrawal.batch_id)
            ).all()
        }
    return [
        {"wallet": "hot", "id": p, "txid": txid, "asset": asset, "withdrawals": paid.get(p, 0)}
        for p, txid, asset in hot
    ] + [
        {"wallet": "cold", "id": b, "txid": txid, "asset": asset, "withdrawals": members.get(b, 0)}
        for b, txid, asset in cold
    ]


def bitcoin_hot_status(store: Store) -> list[dict[str, Any]]:
    """The hot wallet's Bitcoin account on each network: the address to fund it at and its last balance."""
    with store.read() as s:
        rows = list(s.execute(select(BtcHotWallet).order_by(BtcHotWallet.network)).scalars())
    return [
        {
            "network": r.network,
            "wallet": r.wallet,
            "address": r.address,
            "balance": None if r.balance is None else format_amount(r.balance, 8),
            "height": r.balance_height,
        }
        for r in rows
    ]


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
    st = Status(f.policy.version, f.policy.hash, frozen, counts, balances, waiting, freezes, orphaned)
    st.bitcoin = bitcoin_status(f)
    return st


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
    for r in st.bitcoin_rollbacks:
        what = "hot payment" if r["wallet"] == "hot" else "cold batch"
        lines.append(
            f"BITCOIN ROLLBACK: {what} {r['id']} ({r['txid']}, {r['withdrawals']} {r['asset']} withdrawal(s)) left "
            "the chain after it confirmed; its withdrawals stay confirmed and the same signed transaction is sent "
            "again (audit: btchot.rollback_detected / batch.rollback_detected)"
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
    for h in st.bitcoin_hot:
        lines.append(
            f"bitcoin hot  {h['network']}: fund at {h['address']}, balance {h['balance'] or '-'} BTC"
            + (f" (block {h['height']})" if h["height"] is not None else "")
        )
    lines.append(f"batches waiting for signatures: {len(st.batches_waiting)}")
    for b in st.batches_waiting:
        lines.append(
            f"  {b['id']} nonce {b['safe_nonce']}: {len(b['signed_by'])}/{b['threshold']} signed, "
            f"missing {', '.join(b['missing']) or '-'}"
        )
    lines += render_bitcoin(st.bitcoin)
    return lines


def bitcoin_status(f: Figures) -> dict[str, Any]:
    """The Bitcoin cold side: each wallet's balance, and its batches waiting for signatures (owners by name),
    signed, broadcast (with confirmations), stuck; empty without a Bitcoin cold wallet."""
    if not f.btc_wallets and not f.btc_batches:
        return {}
    wallets = [
        {
            "wallet": w.wallet,
            "network": w.network,
            "descriptor_checksum": w.descriptor.rpartition("#")[2],
            "balance": None if w.balance is None else format_amount(w.balance, 8),
            "block": w.block,
        }
        for w in f.btc_wallets
    ]
    batches = []
    for b in f.btc_batches:
        v = b.batch
        batches.append(
            {
                "id": v.id,
                "state": v.state,
                "network": v.network,
                "asset": v.asset,
                "withdrawals": v.withdrawals,
                "txid": v.txid,
                "fee": v.fee,
                "threshold": v.threshold,
                "signed_by": [{"fingerprint": x, "name": v.names.get(x, "")} for x in v.signed_by],
                "missing": [{"fingerprint": x, "name": v.names.get(x, "")} for x in v.missing],
                "expires_at": v.expires_at,
                "confirmations": b.confirmations,
                "stuck": b.stuck,
                "replaces": b.replaces,
                "bumped_by": b.bumped_by,
            }
        )
    return {
        "wallets": wallets,
        "batches_waiting": [b for b in batches if b["state"] == "exported"],
        "batches_sent": [b for b in batches if b["state"] != "exported"],
        "stuck": [b["id"] for b in batches if b["stuck"]],
    }


def render_bitcoin(btc: dict[str, Any]) -> list[str]:
    if not btc:
        return []
    lines = []
    for w in btc["wallets"]:
        balance = "not read yet" if w["balance"] is None else f"{w['balance']} BTC at block {w['block']}"
        lines.append(f"bitcoin cold {w['network']} {w['wallet']} (#{w['descriptor_checksum']}): {balance}")
    lines.append(f"bitcoin batches waiting for signatures: {len(btc['batches_waiting'])}")
    for b in btc["batches_waiting"]:
        signed = ", ".join(escape(x["name"]) or x["fingerprint"] for x in b["signed_by"]) or "-"
        missing = ", ".join(escape(x["name"]) or x["fingerprint"] for x in b["missing"]) or "-"
        bump = f", bumps {b['replaces']}" if b["replaces"] else ""
        lines.append(
            f"  {b['id']} {b['withdrawals']} {b['asset']}{bump}: {len(b['signed_by'])}/{b['threshold']} signed "
            f"({signed}), missing {missing}"
        )
    for b in btc["batches_sent"]:
        what = f"{b['confirmations']} confirmations" if b["confirmations"] else "not mined yet"
        flag = ""
        if b["stuck"]:
            flag = (
                f"  STUCK: fee bump {b['bumped_by']} exported"
                if b["bumped_by"]
                else (f"  STUCK: `custody batch bump {b['id']}`")
            )
        lines.append(f"  {b['id']} {b['state']} {b['txid']}: {what}{flag}")
    return lines
