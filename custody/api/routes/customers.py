"""Customers: their address books (add, list, remove an address) and their address-book-only mode."""

from typing import Annotated

from fastapi import APIRouter, Query

from custody.api.deps import Body, Original, Reader, Svc, Withdrawer, checked
from custody.api.schemas import (
    ERRORS,
    AddressBookOut,
    AddressIn,
    AddressOut,
    CustomerIn,
    CustomerOut,
    address_out,
    book_out,
    customer_out,
    parse_address_entry,
    parse_customer_mode,
)
from custody.intake.apikeys import Seen

router = APIRouter(tags=["customers"])


def _body(model: type[AddressIn] | type[CustomerIn]) -> dict[str, object]:
    """OpenAPI: the body is read raw (the signature covers its exact bytes), so its schema is declared here."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


@router.post(
    "/v1/customers/{customer}/addresses",
    status_code=201,
    response_model=AddressOut,
    responses=ERRORS,
    openapi_extra=_body(AddressIn),
)
def add_address(
    customer: str,
    seen: Annotated[Seen, checked("withdraw", record=False)],
    raw: Body,
    signed: Original,
    svc: Svc,
) -> AddressOut:
    """Add an address to the customer's book, locked until `active_at`. Only a policy backend may."""
    # the request's nonce is recorded in the transaction that adds the entry: consumed exactly when it exists
    return address_out(svc.book.add(seen.principal, customer, parse_address_entry(raw), signed, seen))


@router.get("/v1/customers/{customer}/addresses", response_model=AddressBookOut, responses=ERRORS)
def list_addresses(
    customer: str, who: Reader, svc: Svc, asset: Annotated[str | None, Query(max_length=16)] = None
) -> AddressBookOut:
    """The customer's live entries (of `asset` if given), each locked or active, and its mode."""
    return book_out(svc.book.book(customer, asset))


@router.delete("/v1/customers/{customer}/addresses/{address}", response_model=AddressOut, responses=ERRORS)
def remove_address(
    customer: str, address: str, who: Withdrawer, svc: Svc, asset: Annotated[str, Query(max_length=16)]
) -> AddressOut:
    """Remove the entry at once: the address is no longer the customer's from this moment."""
    return address_out(svc.book.remove(who, customer, asset, address))


@router.put("/v1/customers/{customer}", response_model=CustomerOut, responses=ERRORS, openapi_extra=_body(CustomerIn))
def set_customer(customer: str, who: Withdrawer, raw: Body, svc: Svc) -> CustomerOut:
    """Set the customer's address-book-only mode."""
    return customer_out(svc.book.set_book_only(who, customer, parse_customer_mode(raw)))
