"""Errors of the daemon, each with a stable ``code`` as a class attribute.

Raise sites never override the code: a new code is a new class here. The HTTP status each one is answered
with is decided in one place, ``custody.api.problems``; the CLI prints any of them as one line.

    CustodyError (policies.errors)
    └── DaemonError                  daemon_error
        ├── ConfigError              config_invalid
        ├── DataDirExists            data_dir_exists
        ├── Unauthorized             unauthorized
        │   ├── MissingSignature     missing_signature
        │   ├── UnknownKey           unknown_key
        │   ├── BadSignature         bad_signature
        │   ├── InvalidTimestamp     invalid_timestamp: X-Custody-Timestamp is not decimal unix seconds
        │   ├── ExpiredTimestamp     expired_timestamp
        │   ├── ReplayedRequest      replayed_request
        │   └── UnknownOperator      unknown_operator: a review decision by a key not among the policy's operators
        ├── Forbidden                missing_scope
        │   ├── SourceNotAllowed     source_not_allowed: the key may not call from this network (policy sources)
        │   └── NotABackend          not_a_backend: the key is not one of the policy's [[backends]] (or its key differs)
        ├── NotAnOwner               not_a_safe_owner: a batch signature by someone not an owner of the Safe
        ├── NotFound                 not_found
        ├── Conflict                 conflict
        │   ├── IdempotencyConflict  idempotency_conflict: the Idempotency-Key was used for another request
        │   ├── IdempotencyBusy      idempotency_busy: the Idempotency-Key is being used concurrently
        │   ├── NotCancellable       not_cancellable
        │   ├── IllegalTransition    illegal_transition
        │   ├── KeyExists            key_exists: an API key of that name exists already
        │   ├── AddressExists        address_exists: the customer's address book has this address for the asset
        │   ├── Frozen               frozen: payments are frozen until a quorum unfreezes them
        │   ├── NoColdWallet         no_cold_wallet
        │   ├── ColdWalletExists     cold_wallet_exists
        │   ├── ColdWalletMismatch   cold_wallet_mismatch: the Safe on chain is not the one the signers derive
        │   ├── ColdWalletFailed     cold_wallet_failed: no contract where the Safe was to be created
        │   │   └── HotWalletUnfunded hot_wallet_unfunded: the hot wallet cannot pay the gas (says how much to add)
        │   ├── ColdWalletPending    cold_wallet_pending: the Safe creation is not mined yet
        │   ├── NotHeld              not_held: a review decision on a withdrawal that is not held
        │   └── AlreadyDecided       already_decided: this operator has decided this withdrawal already
        ├── BatchRefused             batch_refused
        │   ├── NothingToExport      nothing_to_export
        │   └── BatchWaitingForNonce batch_waiting_for_nonce: an earlier Safe nonce must execute first
        ├── SignatureForAnotherBatch signature_for_another_batch
        │   └── PartialSignatureInvalid partial_signature_invalid: a Bitcoin signature file's signature does not verify
        ├── BodyTooLarge             body_too_large
        ├── InvalidRequest           invalid_request
        │   ├── MalformedJson        malformed_json
        │   ├── UnknownField         unknown_field
        │   ├── MissingField         missing_field
        │   ├── InvalidField         invalid_field
        │   ├── InvalidCursor        invalid_cursor
        │   ├── MissingIdempotencyKey missing_idempotency_key
        │   ├── UnknownAsset         unknown_asset
        │   ├── AssetDisabled        asset_disabled
        │   ├── InvalidScopes        invalid_scopes
        │   ├── InvalidKeyName       invalid_name
        │   ├── InvalidPublicKey     invalid_public_key
        │   ├── InvalidCustomer      invalid_customer: not a customer id (^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$)
        │   └── LockTooShort         lock_too_short: an address-book lock shorter than the policy's address_lock
        ├── RateLimited              rate_limited
        ├── NoActivePolicy           no_active_policy
        ├── NodeUnavailable          node_unavailable: the Ethereum node is unreachable or did not answer
        ├── ChainMismatch            chain_mismatch: the node is on another chain than configured
        ├── BroadcastRefused         broadcast_refused: the node refused a transaction
        ├── CallReverted             call_reverted: an eth_call reverted
        ├── SafeError                safe_error: the canonical Safe contracts are missing or answer wrongly
        ├── AuditBroken              audit_broken: the audit chain does not verify
        ├── LiabilitiesInvalid       liabilities_invalid: a liabilities CSV row refused (with its line)
        ├── ProofInvalid             proof_invalid: a proof of reserves that does not verify
        ├── WorkerDied               worker_died: a forked worker of a long job died (killed, or out of memory)
        └── BitcoinNodeError         bitcoin_node_error: bitcoind answered an error, refused the login or is unreachable

Policy-side errors (invalid_amount, invalid_address, bundle errors) keep their own codes, in
``policies.errors``.
"""

from __future__ import annotations

from policies.errors import CustodyError


class DaemonError(CustodyError):
    code = "daemon_error"


class ConfigError(DaemonError):
    code = "config_invalid"


class DataDirExists(DaemonError):
    code = "data_dir_exists"


class Unauthorized(DaemonError):
    code = "unauthorized"


class MissingSignature(Unauthorized):
    code = "missing_signature"


class UnknownKey(Unauthorized):
    code = "unknown_key"


class BadSignature(Unauthorized):
    code = "bad_signature"


class InvalidTimestamp(Unauthorized):
    code = "invalid_timestamp"


class ExpiredTimestamp(Unauthorized):
    code = "expired_timestamp"


class ReplayedRequest(Unauthorized):
    code = "replayed_request"


class Forbidden(DaemonError):
    code = "missing_scope"


class SourceNotAllowed(Forbidden):
    code = "source_not_allowed"


class NotABackend(Forbidden):
    code = "not_a_backend"


class NotAnOwner(DaemonError):
    code = "not_a_safe_owner"


class NotFound(DaemonError):
    code = "not_found"


class Conflict(DaemonError):
    code = "conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class IdempotencyBusy(Conflict):
    code = "idempotency_busy"


class NotCancellable(Conflict):
    code = "not_cancellable"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class KeyExists(Conflict):
    code = "key_exists"


class AddressExists(Conflict):
    code = "address_exists"


class Frozen(Conflict):
    code = "frozen"


class NoColdWallet(Conflict):
    code = "no_cold_wallet"


class ColdWalletExists(Conflict):
    code = "cold_wallet_exists"


class ColdWalletMismatch(Conflict):
    code = "cold_wallet_mismatch"


class ColdWalletFailed(Conflict):
    code = "cold_wallet_failed"


class HotWalletUnfunded(ColdWalletFailed):
    code = "hot_wallet_unfunded"


class ColdWalletPending(Conflict):
    code = "cold_wallet_pending"


class BatchRefused(DaemonError):
    code = "batch_refused"


class NothingToExport(BatchRefused):
    code = "nothing_to_export"


class BatchWaitingForNonce(BatchRefused):
    code = "batch_waiting_for_nonce"


class SignatureForAnotherBatch(DaemonError):
    code = "signature_for_another_batch"


class PartialSignatureInvalid(SignatureForAnotherBatch):
    code = "partial_signature_invalid"


class BodyTooLarge(DaemonError):
    code = "body_too_large"


class InvalidRequest(DaemonError):
    code = "invalid_request"


class MalformedJson(InvalidRequest):
    code = "malformed_json"


class UnknownField(InvalidRequest):
    code = "unknown_field"


class MissingField(InvalidRequest):
    code = "missing_field"


class InvalidField(InvalidRequest):
    code = "invalid_field"


class InvalidCursor(InvalidRequest):
    code = "invalid_cursor"


class MissingIdempotencyKey(InvalidRequest):
    code = "missing_idempotency_key"


class UnknownAsset(InvalidRequest):
    code = "unknown_asset"


class AssetDisabled(InvalidRequest):
    code = "asset_disabled"


class InvalidScopes(InvalidRequest):
    code = "invalid_scopes"


class InvalidKeyName(InvalidRequest):
    code = "invalid_name"


class InvalidPublicKey(InvalidRequest):
    code = "invalid_public_key"


class InvalidCustomer(InvalidRequest):
    code = "invalid_customer"


class LockTooShort(InvalidRequest):
    code = "lock_too_short"


class RateLimited(DaemonError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoActivePolicy(DaemonError):
    code = "no_active_policy"


class NodeUnavailable(DaemonError):
    code = "node_unavailable"


class ChainMismatch(DaemonError):
    code = "chain_mismatch"


class BroadcastRefused(DaemonError):
    code = "broadcast_refused"


class CallReverted(DaemonError):
    code = "call_reverted"


class SafeError(DaemonError):
    code = "safe_error"


class AuditBroken(DaemonError):
    code = "audit_broken"


class LiabilitiesInvalid(DaemonError):
    code = "liabilities_invalid"


class ProofInvalid(DaemonError):
    code = "proof_invalid"


class WorkerDied(DaemonError):
    code = "worker_died"


class BitcoinNodeError(DaemonError):
    """bitcoind's JSON-RPC error: ``node_code`` is the node's own error code (``None`` when there was no JSON-RPC
    answer: unreachable, timed out, login refused) and ``node_message`` its message. Never holds the password."""

    code = "bitcoin_node_error"

    def __init__(self, message: str, *, node_code: int | None = None, node_message: str = "") -> None:
        super().__init__(message)
        self.node_code = node_code
        self.node_message = node_message


class UnknownOperator(Unauthorized):
    code = "unknown_operator"


class NotHeld(Conflict):
    code = "not_held"


class AlreadyDecided(Conflict):
    code = "already_decided"
