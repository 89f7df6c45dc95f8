"""``GET /v1/balances``: per asset, the hot and cold wallets' balances and what is reserved."""

from fastapi import APIRouter

from custody.api.deps import Reader, Svc
from custody.api.schemas import ERRORS, Balances, balances_out
from custody.ops.balances import read_balances

router = APIRouter(tags=["wallets"])


@router.get("/v1/balances", response_model=Balances, responses=ERRORS)
def balances(who: Reader, svc: Svc) -> Balances:
    """Per asset: the hot wallet's balance, what is reserved and free, and the cold balance."""
    return balances_out(read_balances(svc.store, svc.policies))
