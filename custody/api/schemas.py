"""The API's wire shapes, how a request body is parsed into a service's input and how a service's result is
formatted. Amounts are decimal strings in the asset's units; times are ISO 8601 UTC."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from custody.api.problems import DOCUMENTED
from custody.errors import InvalidField, MalformedJson, MissingField, UnknownField
from custody.intake.withdrawals import NewWithdrawal
from custody.ops.balances import AssetPosition
from custody.store.models import Withdrawal
from policies.units import format_amount


class WithdrawalIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    asset: str = Field(min_length=1, max_length=16, description="Asset symbol as declared in the policy, e.g. ETH")
    amount: str = Field(min_length=1, max_length=80, description='Decimal string in the asset\'s units, e.g. "1.25"')
    destination: str = Field(min_length=1, max_length=42, description="EIP-55 checksummed address")
    client_reference: str | None = Field(default=None, max_length=128)


class ReasonOut(BaseModel):
    rule: str
    passed: bool
    message: str


class DecisionOut(BaseModel):
    outcome: str
    route: str | None
    eligible_at: str | None
    policy_version: int
    policy_hash: str
    reasons: list[ReasonOut]


class WithdrawalOut(BaseModel):
    id: str
    state: str
    asset: str
    amount: str
    amount_base_units: str
    destination: str
    client_reference: str | None
    decision: DecisionOut
    created_at: str
    updated_at: str


class WithdrawalPage(BaseModel):
    items: list[WithdrawalOut]
    next_cursor: str | None


class Problem(BaseModel):
    type: str
    title: str
    status: int
    code: str
    detail: str


# OpenAPI: how a route documents its problem answers.
PROBLEM: dict[str, Any] = {"model": Problem, "content": {"application/problem+json": {}}}
ERRORS: dict[int | str, dict[str, Any]] = {code: PROBLEM for code in DOCUMENTED}


def parse_withdrawal(raw: bytes) -> NewWithdrawal:
    """The body of ``POST /v1/withdrawals``, exactly as signed, or the first thing wrong with it."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedJson("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedJson("the body must be a JSON object")
    try:
        parsed = WithdrawalIn.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        error = {"extra_forbidden": UnknownField, "missing": MissingField}.get(first["type"], InvalidField)
        raise error(f"{field}: {first['msg']}") from None
    return NewWithdrawal(parsed.asset, parsed.amount, parsed.destination, parsed.client_reference)


def iso(ts: int | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def withdrawal_out(w: Withdrawal) -> WithdrawalOut:
    return WithdrawalOut(
        id=w.id,
        state=w.state,
        asset=w.asset,
        amount=format_amount(w.amount, w.decimals),
        amount_base_units=str(w.amount),
        destination=w.destination,
        client_reference=w.client_reference,
        decision=DecisionOut(
            outcome=w.outcome,
            route=w.route,
            eligible_at=iso(w.eligible_at),
            policy_version=w.policy_version,
            policy_hash=w.policy_hash,
            reasons=[ReasonOut(**r) for r in json.loads(w.reasons)],
        ),
        created_at=iso(w.created_at) or "",
        updated_at=iso(w.updated_at) or "",
    )


class AssetBalance(BaseModel):
    asset: str
    hot: str = Field(description="The hot wallet's balance as last read from the chain")
    hot_block: int | None = Field(description="The block that balance was read at")
    reserved: str = Field(description="What hot-routed withdrawals not yet reflected in that reading will take")
    free: str = Field(description="hot - reserved: what new hot withdrawals may use")
    cold: str | None = Field(description="The cold wallet's balance; null until a cold wallet exists")


class Balances(BaseModel):
    assets: list[AssetBalance]


def balances_out(positions: list[AssetPosition]) -> Balances:
    return Balances(
        assets=[
            AssetBalance(
                asset=p.asset,
                hot=format_amount(p.hot.balance, p.decimals),
                hot_block=p.hot.block,
                reserved=format_amount(p.hot.reserved, p.decimals),
                free=format_amount(p.hot.free, p.decimals),
                cold=None if p.cold is None else format_amount(p.cold, p.decimals),
            )
            for p in positions
        ]
    )
