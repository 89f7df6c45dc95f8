"""Pure checks of the PSBTs the node builds and the owners sign, with embit (a second implementation beside the
node's): no I/O, so each rule can be tested with a PSBT crafted to break it.

The daemon does not trust its own node more than it must: before a batch file is written, its PSBT must pay
exactly the withdrawals (script and amount, as many times as they are listed), plus one change output that is the
cold wallet's own (branch 1 of the descriptor, re-derived here), spend only the wallet's coins, and cost at most
the policy's fee. Signers check all of it again offline; the daemon checks first so that it never exports a file
every signer must refuse.

PSBT versions: a batch carries a PSBT version 0 (BIP-174, the default) or 2 (BIP-370), and every owner's
signature file comes back in the batch's version. The node (Bitcoin Core / Knots 29) reads version 0 only, so
what is handed to it is first written as version 0 (``for_node``): the same unsigned transaction, the same
fields, only the global transaction in place of the per-input and per-output ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from embit import ec
from embit.descriptor import Descriptor
from embit.psbt import PSBT
from embit.transaction import SIGHASH, Transaction

from custody.errors import BatchRefused, PartialSignatureInvalid, SignatureForAnotherBatch
from signer.btcbatch import GLOBAL_TX_MODIFIABLE, IN_REQUIRED_HEIGHT_LOCKTIME, IN_REQUIRED_TIME_LOCKTIME
from signer.btcbatch import psbt_version as version_of

CHANGE_BRANCH = 1
SEARCH = 5000  # the highest index a change or input is looked for at (the node's range grows as it is used)


@dataclass(frozen=True)
class Outpoint:
    txid: str  # display order
    vout: int
    amount: int  # satoshis


@dataclass(frozen=True)
class Funded:
    psbt: str  # base64, with every input's previous transaction
    txid: str
    fee: int
    inputs: tuple[Outpoint, ...]
    vsize: int


def parse(text: str) -> PSBT:
    try:
        return PSBT.from_string(text)
    except Exception as exc:  # embit raises many kinds on malformed input
        raise BatchRefused(f"not a PSBT: {type(exc).__name__}") from None


def txid_of(psbt: PSBT) -> str:
    return str(psbt.tx.txid().hex())


def unsigned_tx(psbt: PSBT) -> bytes:
    """The unsigned transaction, byte for byte: what every signed copy of a batch's PSBT must share."""
    return bytes(psbt.tx.serialize())


def descriptor_of(text: str) -> Descriptor:
    return Descriptor.from_string(text.rpartition("#")[0] if "#" in text else text)


def _index(derivations: Iterable[object], branch: int) -> int | None:
    """The index of a script on ``branch`` from any of its BIP-32 derivations (…/branch/index)."""
    for der in derivations:
        path = list(der.derivation)  # type: ignore[attr-defined]
        if len(path) >= 2 and path[-2] == branch and path[-1] < SEARCH:
            return int(path[-1])
    return None


def is_ours(descriptor: Descriptor, script: bytes, derivations: Iterable[object], branch: int) -> bool:
    index = _index(derivations, branch)
    if index is None:
        return False
    return bytes(descriptor.derive(index, branch_index=branch).script_pubkey().data) == script


def check_funded(
    text: str,
    payments: Sequence[tuple[bytes, int]],
    descriptor_text: str,
    max_fee: int,
    previous: Callable[[str], str],
) -> Funded:
    """``text`` (the node's PSBT) checked as the module says; ``previous(txid)`` gives a transaction's hex, for
    inputs the node left without their previous transaction (signers refuse inputs without it)."""
    psbt = parse(text)
    descriptor = descriptor_of(descriptor_text)
    inputs: list[Outpoint] = []
    for i, (vin, inp) in enumerate(zip(psbt.tx.vin, psbt.inputs, strict=True)):
        txid = vin.txid.hex()
        if inp.non_witness_utxo is None:
            inp.non_witness_utxo = Transaction.from_string(previous(txid))
        prev = inp.non_witness_utxo
        if prev.txid().hex() != txid or vin.vout >= len(prev.vout):
            raise BatchRefused(f"input {i}: its previous transaction is not {txid}")
        spent = prev.vout[vin.vout]
        if inp.witness_utxo is None:
            inp.witness_utxo = spent
        if bytes(inp.witness_utxo.serialize()) != bytes(spent.serialize()):
            raise BatchRefused(f"input {i}: its witness UTXO differs from its previous transaction's output")
        ours = any(
            is_ours(descriptor, bytes(spent.script_pubkey.data), inp.bip32_derivations.values(), branch)
            for branch in (0, 1)
        )
        if not ours:
            raise BatchRefused(f"input {i} ({txid}:{vin.vout}) is not the cold wallet's")
        inputs.append(Outpoint(txid, vin.vout, int(spent.value)))
    wanted = Counter(payments)
    change: list[int] = []
    for i, (out, meta) in enumerate(zip(psbt.tx.vout, psbt.outputs, strict=True)):
        key = (bytes(out.script_pubkey.data), int(out.value))
        if wanted[key] > 0:
            wanted[key] -= 1
        elif is_ours(descriptor, key[0], meta.bip32_derivations.values(), CHANGE_BRANCH):
            change.append(i)
        else:
            raise BatchRefused(f"output {i} pays {out.value} sat to a script that is neither a withdrawal nor change")
    if +wanted:
        raise BatchRefused(f"the PSBT leaves out {sum(wanted.values())} of the withdrawals")
    if len(change) != 1:
        raise BatchRefused(f"the PSBT has {len(change)} change outputs, not one")
    fee = sum(o.amount for o in inputs) - sum(int(o.value) for o in psbt.tx.vout)
    if not 0 < fee <= max_fee:
        raise BatchRefused(f"the PSBT's fee is {fee} sat; the policy allows at most {max_fee}")
    for seq in (vin.sequence for vin in psbt.tx.vin):
        if seq >= 0xFFFFFFFE:
            raise BatchRefused("an input does not signal replaceability (BIP-125)")
    return Funded(psbt.to_string(), txid_of(psbt), fee, tuple(inputs), _vsize(psbt))


def _vsize(psbt: PSBT) -> int:
    """The unsigned size in vbytes plus each input's witness at most (sortedmulti: threshold signatures)."""
    size = len(psbt.tx.serialize())
    witness = 0
    for inp in psbt.inputs:
        script = bytes(inp.witness_script.data) if inp.witness_script is not None else b""
        witness += 1 + 1 + 73 * 15 + 3 + len(script)  # an upper bound: 15 signatures at most
    return size + (2 + witness + 3) // 4


PSBT_VERSIONS = (0, 2)
# BIP-370 fields that have no place in a version 0 PSBT (embit keeps them among a scope's unknown keys).
_V2_ONLY_INPUT = (IN_REQUIRED_TIME_LOCKTIME, IN_REQUIRED_HEIGHT_LOCKTIME)


def with_version(text: str, version: int) -> str:
    """``text`` written as a PSBT of ``version`` (0 or 2), base64: the same unsigned transaction (its txid is
    checked to be kept) and the same per-input and per-output fields. A version 2 PSBT whose inputs or outputs
    are still modifiable, or whose inputs require a locktime, has no one version 0 spelling: refused."""
    if version not in PSBT_VERSIONS:
        raise BatchRefused(f"PSBT version {version}: the batch protocol knows versions 0 and 2")
    psbt = parse(text)
    if version_of(psbt) == version:
        return str(psbt.to_string())
    if GLOBAL_TX_MODIFIABLE in psbt.unknown or any(k in inp.unknown for inp in psbt.inputs for k in _V2_ONLY_INPUT):
        raise BatchRefused("the version 2 PSBT is still modifiable or requires a locktime: no version 0 spelling")
    txid = txid_of(psbt)
    psbt.version = None if version == 0 else version
    again = parse(str(psbt.to_string()))
    if txid_of(again) != txid or version_of(again) != version:
        raise BatchRefused(f"the PSBT written as version {version} is not the same transaction")
    return str(again.to_string())


def for_node(text: str) -> str:
    """What the node reads: the PSBT as version 0 (Bitcoin Core 29 refuses version 2)."""
    return with_version(text, 0)


def signatures_onto(batch_text: str, signed_text: str) -> PSBT:
    """The batch's own PSBT with only the partial signatures of ``signed_text`` copied in: whatever else a
    signature file's PSBT says (a UTXO amount, a script, a derivation) is not taken, so signatures are checked,
    and combined, against what the batch exported."""
    batch, signed = parse(batch_text), parse(signed_text)
    if version_of(signed) != version_of(batch):
        # A signer writes the batch's PSBT back in its version: another version is another file than it wrote.
        raise SignatureForAnotherBatch(
            f"the signed PSBT is version {version_of(signed)}; the batch's PSBT is version {version_of(batch)}"
        )
    if unsigned_tx(signed) != unsigned_tx(batch):
        raise BatchRefused("the signed PSBT is not for the batch's transaction")
    for mine, theirs in zip(batch.inputs, signed.inputs, strict=True):
        mine.partial_sigs = dict(theirs.partial_sigs)
    return batch


def signed_by(psbt: PSBT, fingerprints: Sequence[str]) -> set[str]:
    """The owners (of ``fingerprints``) with a valid SIGHASH_ALL signature on every input. A signature that does
    not verify is refused outright: a signer never writes one, so the file was altered."""
    per_input: list[set[str]] = []
    for i, inp in enumerate(psbt.inputs):
        if inp.witness_script is None or inp.witness_utxo is None:
            raise PartialSignatureInvalid(f"input {i} has no witness script or UTXO to check signatures against")
        digest = psbt.tx.sighash_segwit(i, inp.witness_script, inp.witness_utxo.value, SIGHASH.ALL)
        found: set[str] = set()
        for pub, sig in inp.partial_sigs.items():
            der = inp.bip32_derivations.get(pub)
            fingerprint = bytes(der.fingerprint).hex() if der is not None else None
            if fingerprint is None or fingerprint not in fingerprints:
                raise PartialSignatureInvalid(f"input {i} has a signature by a key that is not an owner's")
            if not sig or sig[-1] != SIGHASH.ALL:
                raise PartialSignatureInvalid(f"input {i}: the signature of {fingerprint} is not SIGHASH_ALL")
            try:
                valid = pub.verify(ec.Signature.parse(sig[:-1]), digest)
            except Exception:  # a malformed DER signature
                valid = False
            if not valid:
                raise PartialSignatureInvalid(f"input {i}: the signature of {fingerprint} does not verify")
            found.add(fingerprint)
        per_input.append(found)
    return set.intersection(*per_input) if per_input else set()
