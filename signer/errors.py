"""Errors of the signer, each with a stable ``code``; the CLI turns any of them into one line and exit 1.

CustodyError (policies.errors)
└── SignerError               signer_error
    ├── WrongPassphrase       wrong_passphrase
    ├── KeystoreDamaged       keystore_damaged: not a keystore, or altered
    ├── MnemonicInvalid       mnemonic_invalid: unknown word, wrong length or checksum
    └── StateError            signer_state: the signer's own state directory is missing or inconsistent
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
