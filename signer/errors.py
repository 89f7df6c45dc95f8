"""Errors of the signer, each with a stable ``code``; the CLI turns any of them into one line and exit 1.

CustodyError (policies.errors)
└── SignerError               signer_error
    ├── WrongPassphrase       wrong_passphrase
    ├── KeystoreDamaged       keystore_damaged: not a keystore, or altered
    ├── MnemonicInvalid       mnemonic_invalid: unknown word, wrong length or checksum
    ├── StateError            signer_state: the signer's own state directory is missing or inconsistent
    │   └── LedgerDamaged     signer_ledger_damaged: the ledger of signed batches does not verify
    ├── ConfirmationDeclined  confirmation_declined: the operator's typed confirmation did not match
    ├── ColdWalletNotCanonical cold_wallet_not_canonical: not a Safe the canonical 1.4.1 factory makes for
    │                         exactly these owners and threshold, or another MultiSendCallOnly
    ├── BatchInvalid          batch_invalid: a batch or signature file that is malformed
    │   ├── BatchSignatureInvalid  batch_daemon_signature_invalid: not signed by the pinned daemon key
    │   ├── BatchMismatch          batch_mismatch: the SafeTx differs from the one rebuilt from the withdrawals
    │   ├── BatchWrongWallet       batch_wrong_wallet: another chain, Safe or MultiSendCallOnly than pinned
    │   ├── BatchPolicyRefused     batch_policy_refused: a transfer the newest verified policy refuses
    │   ├── BatchExpired           batch_expired
    │   ├── BatchTimeInvalid       batch_time_invalid: dated in the future, valid too long, or undisplayable
    │   ├── BatchNonceTooFar       batch_nonce_too_far: too far above the highest Safe nonce signed
    │   ├── WithdrawalAlreadySigned withdrawal_already_signed: a withdrawal signed before at another nonce
    │   ├── WithdrawalChanged      withdrawal_changed: re-exported at its nonce with another amount or destination
    │   ├── BatchOverWindow        batch_over_window: with what the ledger signed, over a velocity window
    │   └── TopUpOverLimit         batch_topup_over_limit: top-ups of the hot wallet over the policy's cap
    └── StatementInvalid      statement_invalid: a proof-of-reserves statement or signature that does not hold
        ├── StatementPolicyMismatch statement_policy_mismatch: cites another policy bundle than the newest
        │                           one this signer verified (or it has verified none)
        ├── StatementAssetUnknown   statement_asset_unknown: an asset that is not in that policy
        ├── StatementAssetContract  statement_asset_contract: an asset on another contract than the policy's
        │                           (or a token where the policy has the native coin, or the reverse)
        └── StatementAssetDecimals  statement_asset_decimals: chain decimals other than the policy's
"""

from __future__ import annotations

from policies.errors import CustodyError


class SignerError(CustodyError):
    code = "signer_error"


class WrongPassphrase(SignerError):
    code = "wrong_passphrase"


class KeystoreDamaged(SignerError):
    code = "keystore_damaged"


class MnemonicInvalid(SignerError):
    code = "mnemonic_invalid"


class StateError(SignerError):
    code = "signer_state"


class BatchInvalid(SignerError):
    """A batch or signature file that is malformed, or that does not say what it claims."""

    code = "batch_invalid"


class BatchSignatureInvalid(BatchInvalid):
    code = "batch_daemon_signature_invalid"


class BatchMismatch(BatchInvalid):
    """The SafeTx in the file is not the one rebuilt from the listed withdrawals."""

    code = "batch_mismatch"


class BatchWrongWallet(BatchInvalid):
    """Chain id, Safe or MultiSendCallOnly differ from the pinned cold wallet."""

    code = "batch_wrong_wallet"


class BatchPolicyRefused(BatchInvalid):
    """A transfer that the newest verified policy does not allow, or a batch made under another policy."""

    code = "batch_policy_refused"


class BatchExpired(BatchInvalid):
    code = "batch_expired"


class StatementInvalid(SignerError):
    code = "statement_invalid"


class LedgerDamaged(StateError):
    code = "signer_ledger_damaged"


class ConfirmationDeclined(SignerError):
    code = "confirmation_declined"


class ColdWalletNotCanonical(SignerError):
    code = "cold_wallet_not_canonical"


class BatchTimeInvalid(BatchInvalid):
    code = "batch_time_invalid"


class BatchNonceTooFar(BatchInvalid):
    code = "batch_nonce_too_far"


class WithdrawalAlreadySigned(BatchInvalid):
    code = "withdrawal_already_signed"


class WithdrawalChanged(BatchInvalid):
    code = "withdrawal_changed"


class BatchOverWindow(BatchInvalid):
    code = "batch_over_window"


class TopUpOverLimit(BatchInvalid):
    code = "batch_topup_over_limit"


class StatementPolicyMismatch(StatementInvalid):
    """The statement cites a policy bundle other than the newest one this signer has verified."""

    code = "statement_policy_mismatch"


class StatementAssetUnknown(StatementInvalid):
    code = "statement_asset_unknown"


class StatementAssetContract(StatementInvalid):
    code = "statement_asset_contract"


class StatementAssetDecimals(StatementInvalid):
    code = "statement_asset_decimals"
