"""The API's wire shapes, how a request body is parsed into a service's input and how a service's result is
formatted. Amounts are decimal strings in the asset's units; times are ISO 8601 UTC."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from custody.api.problems import DOCUMENTED
from custody.clock import iso
from custody.errors import InvalidField, MalformedJson, MissingField, UnknownField
from custody.intake.addressbook import Book, CustomerMode, Entry, NewEntry
from custody.intake.withdrawals import NewWithdrawal
from custody.ops.balances import AssetPosition
from custody.store.models import Withdrawal
from policies.units import format_amount


class WithdrawalIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    asset: str = Field(min_length=1, max_length=16, description="Asset symbol as declared in the policy, e.g. ETH")
    amount: str = Field(min_length=1, max_length=80, description='Decimal string in the asset\'s units, e.g. "1.25"')
    destination: str = Field(
        min_length=1,
        max_length=90,
        description="An address of the asset's chain: EIP-55 checksummed for Ethereum; for Bitcoin bech32 "
        "(lowercase, or all uppercase) or base58 of the policy's network, answered in lowercase",
    )
    client_reference: str | None = Field(default=None, max_length=128)
    customer: str | None = Field(  # its pattern is checked by intake (invalid_customer), not here (invalid_field)
        default=None,
        description="The exchange's customer this pays (its own account id, opaque to custody): "
        "1 to 64 letters, digits or . _ : @ -, beginning with a letter or a digit",
    )


class ReasonOut(BaseModel):
    rule: str = Field(description="The policy rule checked, e.g. whitelist, max_per_transfer, window:1h, hold:…")
    passed: bool = Field(description="Whether the withdrawal passed it")
    message: str = Field(description="What the rule found, for people")


class DecisionOut(BaseModel):
    outcome: str = Field(description="allow, delay, hold or reject")
    route: str | None = Field(
        description="hot or cold: the wallet that pays it; null when rejected (for a hold, the route of then)"
    )
    destination_kind: str | None = Field(
        description="whitelist, address_book or unlisted: which kind of destination the policy found; "
        "null when rejected before that was known"
    )
    eligible_at: str | None = Field(
        description="ISO 8601 UTC: when it may be paid (the decision's time for allow, later for delay); "
        "null when rejected or held"
    )
    policy_version: int = Field(description="The version of the policy bundle that decided")
    policy_hash: str = Field(description="That bundle's hash, 64 hex digits")
    reasons: list[ReasonOut] = Field(description="One per rule checked, in the order checked")


class WithdrawalOut(BaseModel):
    id: str = Field(description="The withdrawal's id (a UUID), as the daemon made it")
    state: str = Field(
        description="received, rejected, delayed, held, queued_hot, queued_cold, batched, signed, broadcast, "
        "confirmed, failed, replaced or cancelled (docs/api.md, States)"
    )
    asset: str = Field(description="Asset symbol as declared in the policy")
    amount: str = Field(description='Decimal string in the asset\'s units, normalised ("0.50" is "0.5")')
    amount_base_units: str = Field(description="The same amount as a decimal integer of base units (wei for ETH)")
    destination: str = Field(description="The address paid, in its chain's canonical form (EIP-55; Bitcoin: lowercase)")
    client_reference: str | None = Field(description="As the request gave it; null without one")
    customer: str | None = Field(description="The exchange's customer id, as the request gave it; null without one")
    decision: DecisionOut = Field(description="The policy's decision (the latest one, for a released hold)")
    tx_hash: str | None = Field(
        description="The mined transaction that paid it: on Ethereum its 0x-prefixed hash (for a cold withdrawal, its "
        "batch's Safe execution), on Bitcoin its txid (64 hex digits, no prefix; a fee bump may replace the one "
        "first sent). Set once confirmed or failed, null before; the webhook events withdrawal.signed and "
        "withdrawal.broadcast carry the hashes sent meanwhile"
    )
    created_at: str = Field(description="ISO 8601 UTC")
    updated_at: str = Field(description="ISO 8601 UTC: the last change of state")


class WithdrawalPage(BaseModel):
    items: list[WithdrawalOut] = Field(description="Up to limit withdrawals of the calling key, oldest first")
    next_cursor: str | None = Field(description="Pass back as cursor for the next page; null on the last page")


class Problem(BaseModel):
    """An RFC 9457 problem details object (``application/problem+json``)."""

    type: str = Field(description="https://custody.invalid/problems/{code}: an identifier, not a page to fetch")
    title: str = Field(description="The code with spaces for underscores")
    status: int = Field(description="The HTTP status, repeated")
    code: str = Field(description="The stable error code (docs/api.md, Error codes): what a client branches on")
    detail: str = Field(description="What was wrong, for people; its wording may change")


class CancelIn(BaseModel):
    """The body of a cancel, if any: an empty object (no field is defined; any field is refused)."""

    model_config = ConfigDict(extra="forbid", strict=True)


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
    return NewWithdrawal(parsed.asset, parsed.amount, parsed.destination, parsed.client_reference, parsed.customer)


def withdrawal_out(w: Withdrawal) -> WithdrawalOut:
    return WithdrawalOut(
        id=w.id,
        state=w.state,
        asset=w.asset,
        amount=format_amount(w.amount, w.decimals),
        amount_base_units=str(w.amount),
        destination=w.destination,
        client_reference=w.client_reference,
        customer=w.customer,
        decision=DecisionOut(
            outcome=w.outcome,
            route=w.route,
            destination_kind=w.destination_kind,
            eligible_at=iso(w.eligible_at),
            policy_version=w.policy_version,
            policy_hash=w.policy_hash,
            reasons=[ReasonOut(**r) for r in json.loads(w.reasons)],
        ),
        tx_hash=w.tx_hash,
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


M = TypeVar("M", bound=BaseModel)


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    asset: str = Field(min_length=1, max_length=16, description="Asset symbol as declared in the policy, e.g. ETH")
    address: str = Field(
        min_length=1,
        max_length=90,
        description="An address of the asset's chain: EIP-55 checksummed for Ethereum; for Bitcoin bech32 "
        "(lowercase, or all uppercase) or base58 of the policy's network, stored in lowercase",
    )
    label: str = Field(
        min_length=1, max_length=128, description="Shown to people: letters, digits, spaces, punctuation"
    )
    lock: int | None = Field(
        default=None,
        ge=0,
        description="Seconds until the entry may be paid to: at least the policy's address_lock (its default)",
    )


class AddressOut(BaseModel):
    customer: str
    asset: str
    address: str
    label: str
    state: str = Field(description="locked (until active_at), active, or removed")
    added_at: str
    active_at: str
    removed_at: str | None


class AddressBookOut(BaseModel):
    customer: str
    address_book_only: bool
    items: list[AddressOut]


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    address_book_only: bool = Field(description="true: pay this customer only to its active address-book entries")


class CustomerOut(BaseModel):
    customer: str
    address_book_only: bool
    updated_at: str | None = Field(description="When the mode was last changed; null if it never was")


def _validated(raw: bytes, model: type[M]) -> M:
    """A JSON object body checked against ``model``, or the first thing wrong with it, with its code."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedJson("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedJson("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        error = {"extra_forbidden": UnknownField, "missing": MissingField}.get(first["type"], InvalidField)
        raise error(f"{field}: {first['msg']}") from None


def parse_address_entry(raw: bytes) -> NewEntry:
    """The body of ``POST /v1/customers/{customer}/addresses``."""
    parsed = _validated(raw, AddressIn)
    return NewEntry(parsed.asset, parsed.address, parsed.label, parsed.lock)


def parse_cancel(raw: bytes) -> None:
    """The body of ``POST /v1/withdrawals/{id}/cancel``: none at all, or an empty JSON object."""
    if raw:
        _validated(raw, CancelIn)


def parse_customer_mode(raw: bytes) -> bool:
    """The body of ``PUT /v1/customers/{customer}``: whether the customer is in address-book-only mode."""
    return _validated(raw, CustomerIn).address_book_only


def address_out(e: Entry) -> AddressOut:
    return AddressOut(
        customer=e.customer,
        asset=e.asset,
        address=e.address,
        label=e.label,
        state=e.state,
        added_at=iso(e.added_at) or "",
        active_at=iso(e.active_at) or "",
        removed_at=iso(e.removed_at),
    )


def book_out(book: Book) -> AddressBookOut:
    return AddressBookOut(
        customer=book.customer,
        address_book_only=book.address_book_only,
        items=[address_out(e) for e in book.entries],
    )


def customer_out(mode: CustomerMode) -> CustomerOut:
    return CustomerOut(
        customer=mode.customer, address_book_only=mode.address_book_only, updated_at=iso(mode.updated_at)
    )
