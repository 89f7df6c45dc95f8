"""The overview (frozen or not, the policy version, balances and the hot band per asset, queues, webhook backlog,
the node) and the console's one action: freeze.

Freezing takes a reason and the session's CSRF token; it is the ledger's own ``freeze`` (``by`` is
``console:<operator>``, and ``freeze.on`` goes to the audit log in the same transaction). Unfreezing is not
offered: only a quorum-signed policy bundle naming the freeze lifts it, and the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Form
from fastapi.responses import RedirectResponse, Response

from custody.console.auth import Signed, check_csrf
from custody.console.deps import Services, services, signed_in
from custody.console.render import page
from custody.errors import InvalidField, NoActivePolicy
from custody.ledger.freeze import freeze
from custody.ops.balances import AssetPosition
from custody.ops.figures import read_figures
from policies.model import AssetRule

router = APIRouter()
BAR = 320  # the hot-share bar's width in SVG units
MAX_REASON = 500


@dataclass(frozen=True)
class Band:
    """One asset's hot share against its band, as the SVG bar draws it (x positions in 0..BAR)."""

    hot_x: int | None  # the hot share; None while unknown
    low_x: int | None  # the band's lower edge, if the policy sets one
    high_x: int | None
    verdict: str  # "within the band", "below the band", "above the band", "no band", "unknown"


def band(p: AssetPosition, rule: AssetRule | None) -> Band:
    """Where the hot share stands against the band (pure). A band in amounts is drawn as the shares those
    amounts are of today's total."""
    total = p.hot.balance + (p.cold or 0)
    low = high = None
    if rule is not None:
        low = rule.hot_min_share
        high = rule.hot_max_share
        if low is None and rule.hot_min is not None and total:
            low = min(10_000, rule.hot_min * 10_000 // total)
        if high is None and rule.hot_max is not None and total:
            high = min(10_000, rule.hot_max * 10_000 // total)
    share = p.hot_share_bp

    def x(bp: int | None) -> int | None:
        return None if bp is None else BAR * bp // 10_000

    if share is None:
        verdict = "unknown"
    elif low is None and high is None:
        verdict = "no band"
    elif low is not None and share < low:
        verdict = "below the band"
    elif high is not None and share > high:
        verdict = "above the band"
    else:
        verdict = "within the band"
    return Band(x(share), x(low), x(high), verdict)


@router.get("/")
def overview(svc: Annotated[Services, Depends(services)], signed: Annotated[Signed, Depends(signed_in)]) -> Response:
    figures = read_figures(svc.store, svc.policies, svc.settings.webhook_urls)
    with svc.store.read() as s:
        try:
            rules = dict(svc.policies.get(s).policy.assets)
        except NoActivePolicy:
            rules = {}
    states: dict[str, int] = {}
    for c in figures.withdrawals:
        states[c.state] = states.get(c.state, 0) + c.n
    assets = [(p, rules.get(p.asset), band(p, rules.get(p.asset))) for p in figures.balances]
    return page(
        "overview.html",
        here="/",
        signed=signed,
        figures=figures,
        states=sorted(states.items()),
        assets=assets,
        bar=BAR,
        node=svc.node.answers(),
        rpc_url=svc.settings.rpc_url,
        max_reason=MAX_REASON,
    )


def parse_reason(text: str) -> str:
    reason = text.strip()
    if not 1 <= len(reason) <= MAX_REASON or not reason.isprintable():
        raise InvalidField(f"the reason must be 1 to {MAX_REASON} printable characters on one line")
    return reason


@router.post("/freeze")
def freeze_payments(
    svc: Annotated[Services, Depends(services)],
    signed: Annotated[Signed, Depends(signed_in)],
    reason: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(signed.token, csrf)
    text = parse_reason(reason)
    with svc.store.transaction() as s:
        freeze(s, svc.clock.now(), text, f"console:{signed.operator}"[:64])
    return RedirectResponse("/", status_code=303)
