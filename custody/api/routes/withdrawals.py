"""Withdrawals: request one (idempotently), read one, list them, cancel one."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from custody import logs
from custody.api.deps import Body, Canceller, Reader, Svc, checked, signed_request
from custody.api.schemas import ERRORS, WithdrawalIn, WithdrawalOut, WithdrawalPage, parse_withdrawal, withdrawal_out
from custody.errors import MissingIdempotencyKey
from custody.intake.apikeys import Seen
from custody.intake.withdrawals import Intake

router = APIRouter(tags=["withdrawals"])


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
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None,
) -> Any:
    if not idempotency_key or not idempotency_key.isprintable():
        raise MissingIdempotencyKey("an Idempotency-Key header (1 to 128 printable characters) is required")
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
    cursor: Annotated[str | None, Query(max_length=19)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> WithdrawalPage:
    rows, nxt = svc.withdrawals.list(who, state, cursor, limit)
    return WithdrawalPage(items=[withdrawal_out(w) for w in rows], next_cursor=nxt)


@router.post("/v1/withdrawals/{withdrawal_id}/cancel", response_model=WithdrawalOut, responses=ERRORS)
def cancel_withdrawal(withdrawal_id: str, who: Canceller, svc: Svc) -> WithdrawalOut:
    return withdrawal_out(svc.withdrawals.cancel(who, withdrawal_id))
