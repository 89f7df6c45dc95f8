"""Withdrawals: request one (idempotently), read one, list them, cancel one."""

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from custody import logs
from custody.api.deps import Body, Canceller, Reader, Svc, checked, signed_request
from custody.api.schemas import (
    ERRORS,
    CancelIn,
    WithdrawalIn,
    WithdrawalOut,
    WithdrawalPage,
    parse_cancel,
    parse_withdrawal,
    withdrawal_out,
)
from custody.errors import MissingIdempotencyKey
from custody.intake.apikeys import Seen
from custody.intake.withdrawals import CURSOR, Intake

router = APIRouter(tags=["withdrawals"])
# Printable ASCII, no space at either end: HTTP clients and servers strip a header value's outer whitespace and
# may mangle non-ASCII, so such a key would not be the one the client signed.
IDEMPOTENCY_KEY = re.compile(r"[!-~](?:[ -~]{0,126}[!-~])?")
DEFAULT_LIMIT, MAX_LIMIT = 50, 200


@router.post(
    "/v1/withdrawals",
    status_code=201,
    response_model=WithdrawalOut,
    responses={**ERRORS, 200: {"model": WithdrawalOut, "description": "The same request again"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": WithdrawalIn.model_json_schema()}},
        }
    },
)
async def create_withdrawal(
    request: Request,
    seen: Annotated[Seen, checked("withdraw", record=False)],
    raw: Body,
    svc: Svc,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Required: 1 to 128 printable ASCII characters, no space at either end; the same key "
            "and body answer the same withdrawal",
            json_schema_extra={"pattern": f"^{IDEMPOTENCY_KEY.pattern}$", "maxLength": 128},  # checked in the route
        ),
    ] = None,
) -> Any:
    if idempotency_key is None or IDEMPOTENCY_KEY.fullmatch(idempotency_key) is None:
        raise MissingIdempotencyKey(
            "an Idempotency-Key header is required: 1 to 128 printable ASCII characters, no space at either end"
        )
    req = parse_withdrawal(raw)
    # the request's nonce is recorded in the intake's own transaction: consumed exactly when it commits; what
    # was signed is kept with a payout not to the treasury whitelist (offline signers verify it)
    intake = Intake(seen.principal, idempotency_key, req, logs.REQUEST_ID.get(), seen, signed_request(request, raw))
    w, created = await svc.intake.run(intake)
    if created:  # the access line names the new withdrawal and the state intake left it in
        request.state.log = {"withdrawal": w.id, "to": w.state}
    out = withdrawal_out(w).model_dump()
    return JSONResponse(
        out, status_code=201 if created else 200, headers=None if created else {"Idempotent-Replayed": "true"}
    )


@router.get("/v1/withdrawals/{withdrawal_id}", response_model=WithdrawalOut, responses=ERRORS)
def get_withdrawal(withdrawal_id: str, who: Reader, svc: Svc) -> WithdrawalOut:
    return withdrawal_out(svc.withdrawals.get(who, withdrawal_id))


@router.get("/v1/withdrawals", response_model=WithdrawalPage, responses=ERRORS)
def list_withdrawals(
    who: Reader,
    svc: Svc,
    state: Annotated[str | None, Query(max_length=16)] = None,
    cursor: Annotated[
        str | None,
        Query(
            description="next_cursor of the previous page; absent or empty for the first",
            json_schema_extra={"pattern": f"^(?:{CURSOR.pattern})?$", "maxLength": 19},
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> WithdrawalPage:
    rows, nxt = svc.withdrawals.list(who, state, cursor, limit)
    return WithdrawalPage(items=[withdrawal_out(w) for w in rows], next_cursor=nxt)


@router.post(
    "/v1/withdrawals/{withdrawal_id}/cancel",
    response_model=WithdrawalOut,
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": CancelIn.model_json_schema()}},
        }
    },
)
def cancel_withdrawal(withdrawal_id: str, who: Canceller, raw: Body, svc: Svc) -> WithdrawalOut:
    """Cancel it; the body is empty or `{}` (no field is defined, and unknown fields are refused)."""
    parse_cancel(raw)
    return withdrawal_out(svc.withdrawals.cancel(who, withdrawal_id))
