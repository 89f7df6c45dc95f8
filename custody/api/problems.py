"""The one place where an error becomes an HTTP status: the API's exception handlers ask ``status_of``.

Errors carry only a stable ``code`` (``custody.errors``, ``policies.errors``); which status a client sees
is a property of the HTTP edge, so the table lives here. An error answers with the status of the nearest
class in its MRO that the table lists; every ``CustodyError`` is at least a 400. The few codes the API's
own handlers answer with, which have no class, have their status in ``CODE_STATUS``.
"""

from __future__ import annotations

from custody.errors import (
    AuditBroken,
    BatchRefused,
    BodyTooLarge,
    BroadcastRefused,
    CallReverted,
    ChainMismatch,
    ConfigError,
    Conflict,
    DaemonError,
    DataDirExists,
    Forbidden,
    InvalidRequest,
    InvalidTimestamp,
    LiabilitiesInvalid,
    MalformedJson,
    NoActivePolicy,
    NodeUnavailable,
    NotAnOwner,
    NotFound,
    ProofInvalid,
    RateLimited,
    SafeError,
    SignatureForAnotherBatch,
    Unauthorized,
)
from policies.errors import AddressError, AmountError, BundleError, CustodyError

STATUS: dict[type[CustodyError], int] = {
    CustodyError: 400,
    AmountError: 422,
    AddressError: 422,
    BundleError: 409,
    DaemonError: 500,
    ConfigError: 400,
    DataDirExists: 400,
    Unauthorized: 401,
    InvalidTimestamp: 401,  # a malformed X-Custody-Timestamp: an authentication failure like an expired one
    Forbidden: 403,
    NotAnOwner: 403,
    NotFound: 404,
    Conflict: 409,
    BatchRefused: 409,
    SignatureForAnotherBatch: 409,
    BodyTooLarge: 413,
    InvalidRequest: 422,
    MalformedJson: 400,
    RateLimited: 429,
    NoActivePolicy: 503,
    NodeUnavailable: 503,
    ChainMismatch: 500,
    BroadcastRefused: 502,
    CallReverted: 502,
    SafeError: 502,
    AuditBroken: 500,
    LiabilitiesInvalid: 400,
    ProofInvalid: 400,
}

# Codes the API answers with that are not error classes: its own handlers make them.
DATABASE_UNAVAILABLE = "database_unavailable"
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
HTTP_ERROR = "http_error"
API_CODES = (DATABASE_UNAVAILABLE, *HTTP_CODES.values(), HTTP_ERROR)
# ``/readyz``'s answer while the database does not answer: for a load balancer's probe, not a client.
DATABASE_UNREACHABLE = "database_unreachable"
CODE_STATUS = {DATABASE_UNAVAILABLE: 503, DATABASE_UNREACHABLE: 503}

# The statuses the OpenAPI document lists for the signed routes (each answered with a problem body).
DOCUMENTED = (400, 401, 403, 404, 409, 413, 422, 429, 503)


def status_for(error: type[CustodyError]) -> int:
    """The HTTP status an error of class ``error`` is answered with."""
    return next(STATUS[t] for t in error.__mro__ if t in STATUS)


def status_of(exc: CustodyError) -> int:
    """The HTTP status ``exc`` is answered with."""
    return status_for(type(exc))


def status_of_code(code: str) -> int:
    """The HTTP status of one of the API's own codes (``CODE_STATUS``)."""
    return CODE_STATUS[code]
