"""Errors of the policy engine, each with a stable ``code``.

    CustodyError                  error: the root; a refusal with no more specific code
    ├── AmountError               invalid_amount: not a decimal, zero, negative, too many decimals
    ├── AddressError              invalid_address: not 20 bytes of hex, or a bad EIP-55 checksum
    │   └── AddressWrongChain     address_wrong_chain: a valid address, of another chain or network
    ├── PolicyFileError           policy_invalid: a mistake in a policy file, with its location
    ├── CanonicalError            canonical_invalid: data that has no canonical encoding
    └── BundleError               bundle_invalid: a bundle that must not be applied or trusted
        ├── QuorumError           quorum_not_met
        ├── BundleSequenceError   bundle_out_of_sequence: wrong version or previous hash
        ├── RollbackError         bundle_rollback: older than the newest one verified
        ├── ActivationError       whitelist_activation_too_early
        ├── DecimalsChanged       asset_decimals_changed: a token's decimals differ from the previous bundle's
        ├── AssetRemoved          asset_removed: an asset dropped, or moved to another contract
        └── BundleTimeError       bundle_time_invalid: dated too far from the checking clock

``CustodyError`` is the root of every error the project raises on purpose; the daemon and the signer
subclass it for their own errors, so the edges translate one hierarchy. The engine is pure: which HTTP
status an error is answered with is the daemon's API's business (``custody.api.problems``), not its own.
"""

from __future__ import annotations


class CustodyError(Exception):
    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AmountError(CustodyError):
    code = "invalid_amount"


class AddressError(CustodyError):
    code = "invalid_address"


class AddressWrongChain(AddressError):
    code = "address_wrong_chain"


class PolicyFileError(CustodyError):
    code = "policy_invalid"

    def __init__(self, location: str, message: str) -> None:
        super().__init__(f"{location}: {message}" if location else message)
        self.location = location


class CanonicalError(CustodyError):
    code = "canonical_invalid"


class BundleError(CustodyError):
    code = "bundle_invalid"


class QuorumError(BundleError):
    code = "quorum_not_met"


class BundleSequenceError(BundleError):
    code = "bundle_out_of_sequence"


class RollbackError(BundleError):
    code = "bundle_rollback"


class ActivationError(BundleError):
    code = "whitelist_activation_too_early"


class DecimalsChanged(BundleError):
    code = "asset_decimals_changed"


class BundleTimeError(BundleError):
    code = "bundle_time_invalid"


class AssetRemoved(BundleError):
    code = "asset_removed"
