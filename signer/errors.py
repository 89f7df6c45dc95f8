"""Errors of the signer, each with a stable ``code``; the CLI turns any of them into one line and exit 1.

CustodyError (policies.errors)
└── SignerError               signer_error
    ├── WrongPassphrase       wrong_passphrase
    ├── KeystoreDamaged       keystore_damaged: not a keystore, or altered
    ├── MnemonicInvalid       mnemonic_invalid: unknown word, wrong length or checksum
    ├── StateError            signer_state: the signer's own state directory is missing or inconsistent
    └── BatchInvalid          batch_invalid: a batch or signature file that is malformed
        ├── BatchSignatureInvalid  batch_daemon_signature_invalid: not signed by the pinned daemon key
        ├── BatchMismatch          batch_mismatch: the SafeTx differs from the one rebuilt from the withdrawals
        ├── BatchWrongWallet       batch_wrong_wallet: another chain, Safe or MultiSendCallOnly than pinned
        ├── BatchPolicyRefused     batch_policy_refused: a transfer the newest verified policy refuses
        └── BatchExpired           batch_expired
    └── StatementInvalid      statement_invalid: a proof-of-reserves statement or signature that does not hold
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
