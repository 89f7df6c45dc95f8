"""Signing a reviewed Bitcoin batch: this owner's partial signature on every input, SIGHASH_ALL (BIP-143).

Only called with what ``signer.psbtreview`` returned, so every input is the wallet's and its branch and index
are the ones re-derived from the pinned keys; the key is checked once more to be one of the input's witness
script's before it signs.

The signature file's PSBT is the batch's, in its version (0 or 2: embit writes a parsed PSBT back in the version
it read), with the partial signatures added and nothing else changed. BIP-370 asks a signer of a version 2 PSBT
to clear PSBT_GLOBAL_TX_MODIFIABLE's flags for what its signature fixes; the review refused any flag set, so
there is nothing to clear.
"""

from __future__ import annotations

from typing import Any

from embit.script import Script
from embit.transaction import SIGHASH

from signer.btcbatch import BtcSignature, psbt_version
from signer.btckeys import BitcoinKey
from signer.errors import SignerError
from signer.psbtreview import BtcReview


def sign_review(found: BtcReview, account: Any, key: BitcoinKey) -> BtcSignature:
    """The signature file: the batch's PSBT with this owner's partial signature on each input. ``account`` is
    the owner's BIP-48 account private key (``UnlockedKey.bitcoin_account``), ``key`` its public card entry."""
    psbt = found.batch.parsed_psbt()
    for i, spend in enumerate(found.inputs):
        inp = psbt.inputs[i]
        child = account.derive([spend.branch, spend.index])
        pub = child.key.get_public_key()
        script = bytes(inp.witness_script.data)
        if bytes(pub.sec()) not in script:
            raise SignerError(f"this key is not one of input {i}'s keys; nothing was signed")
        digest = psbt.sighash_segwit(i, Script(script), spend.value, sighash=SIGHASH.ALL)
        inp.partial_sigs[pub] = bytes(child.key.sign(digest).serialize()) + bytes([SIGHASH.ALL])
    if psbt_version(psbt) != found.psbt_version:  # embit keeps the version it read; a change would be a bug here
        raise SignerError("the signed PSBT would not be in the batch's PSBT version; nothing was signed")
    return BtcSignature(found.batch.id, found.txid, key.fingerprint, str(psbt.to_base64()))
