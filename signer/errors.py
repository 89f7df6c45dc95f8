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
    │   ├── TopUpOverLimit         batch_topup_over_limit: top-ups of the hot wallet over the policy's cap
    │   ├── RequestMissing         request_missing: a customer payout to a destination not on the treasury
    │   │                          whitelist without the backend's signed request
    │   ├── RequestUnknownBackend  request_unknown_backend: signed by a key name that is not a policy backend
    │   ├── RequestBadSignature    request_bad_signature: the signature does not verify with that backend's key
    │   ├── RequestMismatch        request_mismatch: the signed request is not for this payout (another method,
    │   │                          path, asset, amount, destination or customer; no idempotency key; a body
    │   │                          that is not strict JSON)
    │   ├── RequestReplayed        request_replayed: a request already signed for another withdrawal, or twice
    │   │                          in one batch
    │   ├── BookRequestInvalid     book_request_invalid: an address-book proof that is not a policy backend's
    │   │                          valid signed POST adding this very customer, asset and address
    │   ├── CustomerPayoutHotOnly  customer_payout_hot_only: a customer payout at or below the asset's hot
    │   │                          limit (paid from the hot wallet only)
    │   ├── UnlistedRefused        unlisted_refused: an unlisted destination, and the asset allows no unlisted
    │   │                          payouts
    │   ├── UnlistedOverLimit      unlisted_over_limit: over the asset's unlisted per-transfer maximum
    │   ├── UnlistedOverWindow     unlisted_over_window: with what the ledger signed, over an unlisted window
    │   ├── ApprovalsMissing       approvals_missing: a held payout without two distinct operators' approvals
    │   └── ApprovalInvalid        approval_invalid: a decision not signed by the policy operator it names, or
    │                              a rejection
    ├── BtcWalletInvalid      btc_cold_wallet_invalid: a Bitcoin cold wallet file that is malformed, with keys for
    │   │                     another network or path, a key twice, or a threshold out of range
    │   └── BtcDescriptorMismatch btc_descriptor_mismatch: its descriptor is not the one rebuilt from its owners
    ├── BtcBatchInvalid       btc_batch_invalid: a Bitcoin batch or signature file, or its PSBT, that is malformed
    │   ├── BtcWrongWallet         btc_wrong_wallet: another network or descriptor than the pinned Bitcoin wallet
    │   ├── BtcForeignInput        btc_foreign_input: an input whose derivations do not re-derive its script
    │   │                          from the pinned keys (branch 0 or 1, within the gap limit)
    │   ├── BtcUtxoMissing         btc_utxo_missing: an input without both non_witness_utxo and witness_utxo
    │   ├── BtcUtxoMismatch        btc_utxo_mismatch: a previous transaction that is not the outpoint's, or a
    │   │                          witness_utxo that is not that output
    │   ├── BtcDuplicateInput      btc_duplicate_input: one outpoint spent twice
    │   ├── BtcOutputsMismatch     btc_outputs_mismatch: outputs that are not exactly the withdrawals plus change
    │   ├── BtcChangeInvalid       btc_change_invalid: a change output not on branch 1 of the wallet in the gap limit
    │   ├── BtcOutputForbidden     btc_output_forbidden: an OP_RETURN, zero-value or dust output
    │   ├── BtcFeeTooHigh          btc_fee_too_high: over the asset's max_fee or max_fee_rate, or 10% of the amount
    │   ├── BtcSighashForbidden    btc_sighash_forbidden: an input asking for another sighash than SIGHASH_ALL
    │   ├── BtcXpubMismatch        btc_xpub_mismatch: the PSBT's global xpubs are not the pinned ones
    │   ├── BtcTxFormInvalid       btc_tx_form_invalid: not version 2, RBF not signalled, or a locktime refused
    │   ├── BtcInputAlreadySigned  btc_input_already_signed: an outpoint signed in another batch (not a fee bump)
    │   └── BtcReplacementInvalid  btc_replacement_invalid: a fee bump (``replaces``) that is not one, or of a
    │                              batch already replaced
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


class RequestMissing(BatchInvalid):
    """A customer payout to a destination not on the treasury whitelist carries no signed backend request."""

    code = "request_missing"


class RequestUnknownBackend(BatchInvalid):
    code = "request_unknown_backend"


class RequestBadSignature(BatchInvalid):
    code = "request_bad_signature"


class RequestMismatch(BatchInvalid):
    """The signed request asked for something else than the withdrawal it is attached to."""

    code = "request_mismatch"


class RequestReplayed(BatchInvalid):
    code = "request_replayed"


class BookRequestInvalid(BatchInvalid):
    code = "book_request_invalid"


class CustomerPayoutHotOnly(BatchInvalid):
    """A signer cannot see what the hot wallet paid: a customer payout small enough to be paid hot is never
    signed from the Safe, so a host cannot pay one request from both wallets."""

    code = "customer_payout_hot_only"


class UnlistedRefused(BatchInvalid):
    code = "unlisted_refused"


class UnlistedOverLimit(BatchInvalid):
    code = "unlisted_over_limit"


class UnlistedOverWindow(BatchInvalid):
    code = "unlisted_over_window"


class ApprovalsMissing(BatchInvalid):
    code = "approvals_missing"


class ApprovalInvalid(BatchInvalid):
    code = "approval_invalid"


class StatementPolicyMismatch(StatementInvalid):
    """The statement cites a policy bundle other than the newest one this signer has verified."""

    code = "statement_policy_mismatch"


class StatementAssetUnknown(StatementInvalid):
    code = "statement_asset_unknown"


class StatementAssetContract(StatementInvalid):
    code = "statement_asset_contract"


class StatementAssetDecimals(StatementInvalid):
    code = "statement_asset_decimals"


class BtcWalletInvalid(SignerError):
    code = "btc_cold_wallet_invalid"


class BtcDescriptorMismatch(BtcWalletInvalid):
    code = "btc_descriptor_mismatch"


class BtcBatchInvalid(SignerError):
    code = "btc_batch_invalid"


class BtcWrongWallet(BtcBatchInvalid):
    code = "btc_wrong_wallet"


class BtcForeignInput(BtcBatchInvalid):
    code = "btc_foreign_input"


class BtcUtxoMissing(BtcBatchInvalid):
    code = "btc_utxo_missing"


class BtcUtxoMismatch(BtcBatchInvalid):
    """The segwit fee attack: a witness_utxo claiming another amount than the previous transaction's output."""

    code = "btc_utxo_mismatch"


class BtcDuplicateInput(BtcBatchInvalid):
    code = "btc_duplicate_input"


class BtcOutputsMismatch(BtcBatchInvalid):
    code = "btc_outputs_mismatch"


class BtcChangeInvalid(BtcBatchInvalid):
    code = "btc_change_invalid"


class BtcOutputForbidden(BtcBatchInvalid):
    code = "btc_output_forbidden"


class BtcFeeTooHigh(BtcBatchInvalid):
    code = "btc_fee_too_high"


class BtcSighashForbidden(BtcBatchInvalid):
    code = "btc_sighash_forbidden"


class BtcXpubMismatch(BtcBatchInvalid):
    code = "btc_xpub_mismatch"


class BtcTxFormInvalid(BtcBatchInvalid):
    code = "btc_tx_form_invalid"


class BtcInputAlreadySigned(BtcBatchInvalid):
    code = "btc_input_already_signed"


class BtcReplacementInvalid(BtcBatchInvalid):
    code = "btc_replacement_invalid"
