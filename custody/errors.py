"""Errors of the daemon, each with a stable ``code`` and the HTTP status the API answers with.

    CustodyError (policies.errors)          the API turns any of these into problem details
    └── DaemonError              500 daemon_error
        ├── ConfigError          400 config_invalid
        ├── DataDirExists        400 data_dir_exists
        ├── Unauthorized         401 (missing_signature, unknown_key, bad_signature, expired_timestamp,
        │                             replayed_request)
        ├── Forbidden            403 missing_scope
        ├── NotFound             404 not_found
        ├── Conflict             409 (idempotency_conflict, not_cancellable, illegal_transition)
        ├── BodyTooLarge         413 body_too_large
        ├── InvalidRequest       400/422 (malformed_json, unknown_field, missing_field, invalid_field,
        │                             missing_idempotency_key, unknown_asset, asset_disabled)
        ├── RateLimited          429 rate_limited
        ├── NoActivePolicy       503 no_active_policy
        ├── AuditBroken          500 audit_broken: the audit chain does not verify
        ├── LiabilitiesInvalid   400 liabilities_invalid: a liabilities CSV row refused (with its line)
        └── ProofInvalid         400 proof_invalid: a proof of reserves that does not verify

Policy-side errors (invalid_amount, invalid_address, bundle errors) keep their own codes; the API maps
them to 422 (amounts, addresses) or 409 (bundles).
"""

from __future__ import annotations

from policies.errors import CustodyError


class DaemonError(CustodyError):
    code = "daemon_error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class ConfigError(DaemonError):
    code, status = "config_invalid", 400


class DataDirExists(DaemonError):
    code, status = "data_dir_exists", 400


class Unauthorized(DaemonError):
    code, status = "unauthorized", 401


class Forbidden(DaemonError):
    code, status = "missing_scope", 403


class NotFound(DaemonError):
    code, status = "not_found", 404


class Conflict(DaemonError):
    code, status = "conflict", 409


class BodyTooLarge(DaemonError):
    code, status = "body_too_large", 413


class InvalidRequest(DaemonError):
    code, status = "invalid_request", 422


class RateLimited(DaemonError):
    code, status = "rate_limited", 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoActivePolicy(DaemonError):
    code, status = "no_active_policy", 503


class AuditBroken(DaemonError):
    code, status = "audit_broken", 500


class LiabilitiesInvalid(DaemonError):
    code, status = "liabilities_invalid", 400


class ProofInvalid(DaemonError):
    code, status = "proof_invalid", 400
