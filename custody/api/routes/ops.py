"""For operators and probes: metrics, liveness, readiness, and a signed no-op."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from custody.api.deps import Reader, Svc
from custody.api.handlers import problem
from custody.api.problems import DATABASE_UNREACHABLE, status_of_code
from custody.api.schemas import ERRORS, PROBLEM

router = APIRouter(tags=["ops"])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics_page(svc: Svc) -> PlainTextResponse:
    """Prometheus metrics, for an internal scraper (keep the API itself off public networks)."""
    return PlainTextResponse(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={status_of_code(DATABASE_UNREACHABLE): PROBLEM})
def readyz(svc: Svc) -> Any:
    try:
        svc.store.ping()
    except Exception as exc:  # any database failure means not ready; say which, never crash
        return problem(status_of_code(DATABASE_UNREACHABLE), DATABASE_UNREACHABLE, type(exc).__name__)
    return {"status": "ready"}


@router.get("/v1/ping", responses=ERRORS)
async def ping(who: Reader) -> dict[str, str]:
    """A signed no-op: the baseline for the intake benchmark."""
    return {"key": who.name}
