"""Proof of reserves for the Bitcoin wallets: the statement's ``bitcoin`` claims and the BIP-127 reserve PSBT of
each wallet, defined here because the owners sign it offline (``signer por sign-bitcoin``) and must check what
they sign; the daemon builds it and the verifier rebuilds and checks it.

The claims (statement format 4, ``claims.bitcoin``)::

    {"asset": "BTC", "network": "regtest", "block": {"height": 150, "hash": "<64 hex>"},
     "wallets": [{"kind": "hot" | "cold", "descriptor": "wpkh(…)#xxxxxxxx" | "wsh(sortedmulti(…))#xxxxxxxx",
                  "balance": "<sat>",
                  "utxos": [{"outpoint": "<txid>:<vout>", "amount": "<sat>", "script": "<hex>",
                             "path": "<branch>/<index>", "height": <block the coin was created in>}, …]}]}

The reserve PSBT of a wallet (BIP-127), rebuilt by everyone from the claims alone:

- version 2, locktime 0, every nSequence 0xffffffff;
- input 0, the commitment: outpoint ``SHA-256("Proof-of-Reserves: " ‖ statement hash as 64 lowercase hex):0``,
  the digest being the txid as Bitcoin tools display it (serialized reversed, as every txid). No such coin
  exists, so the transaction can never be mined; every other input's SIGHASH_ALL signature commits to it, so no
  signature can be used in another transaction (or for another statement);
- inputs 1…n: the wallet's UTXOs in the claims' order;
- one output: the UTXOs' total to ``OP_TRUE`` (BIP-127's form: no fee, nobody's key).

Every signature is BIP-143 SIGHASH_ALL: ANYONECANPAY would drop input 0 from what is signed (the signature
would then spend the coin in any transaction paying the OP_TRUE output, which anyone can take), NONE or SINGLE
would leave the output open.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from embit import ec
from embit.descriptor import Descriptor
from embit.descriptor.checksum import checksum
from embit.psbt import PSBT, DerivationPath
from embit.script import Script, p2pkh
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

from policies.errors import CustodyError
from policies.loader import Reader
from policies.units import parse_base_units
from signer.btcbatch import psbt_problem
from signer.errors import StatementInvalid

PREFIX = b"Proof-of-Reserves: "  # BIP-127
OP_TRUE = b"\x51"
FINAL_SEQUENCE = 0xFFFFFFFF
VERSION = 2
BTC_DECIMALS = 8
NETWORKS = ("mainnet", "testnet", "signet", "regtest")
KINDS = ("hot", "cold")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_OUTPOINT = re.compile(r"([0-9a-f]{64}):(0|[1-9][0-9]{0,5})")
_SCRIPT = re.compile(r"(?:[0-9a-f]{2}){1,80}")
_PATH = re.compile(r"([01])/(0|[1-9][0-9]{0,8})")
_DESCRIPTOR = re.compile(r"[ -~]{1,4000}#[a-z0-9]{8}")


# -- errors: each refusal of the signer has its own code (listed in docs/batch-protocol.md, "Error codes") ------
class ReserveInvalid(StatementInvalid):
    """btc_reserve_invalid: a reserve PSBT that is malformed or not the one the statement implies."""

    code = "btc_reserve_invalid"


class ReserveWrongWallet(ReserveInvalid):
    code = "btc_reserve_wrong_wallet"  # another network or descriptor than the pinned Bitcoin wallet


class ReserveSpend(ReserveInvalid):
    code = "btc_reserve_spend"  # input 0 is a real coin (a spend in disguise), not the commitment


class ReserveCommitment(ReserveInvalid):
    code = "btc_reserve_commitment"  # input 0 commits to another statement (or to nothing)


class ReserveForeignInput(ReserveInvalid):
    code = "btc_reserve_foreign_input"  # an input that is not one of the statement's coins of this wallet


class ReserveAmountMismatch(ReserveInvalid):
    code = "btc_reserve_amount_mismatch"  # a coin's amount or script other than the statement lists


class ReserveSighash(ReserveInvalid):
    code = "btc_reserve_sighash"  # a sighash other than SIGHASH_ALL


class ReserveOutput(ReserveInvalid):
    code = "btc_reserve_output"  # not exactly one output of the coins' total to OP_TRUE


class ReserveForm(ReserveInvalid):
    code = "btc_reserve_form"  # version, locktime, sequences or extra fields other than BIP-127's form


ERRORS = (
    ReserveInvalid,
    ReserveWrongWallet,
    ReserveSpend,
    ReserveCommitment,
    ReserveForeignInput,
    ReserveAmountMismatch,
    ReserveSighash,
    ReserveOutput,
    ReserveForm,
)


# -- the claims ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Coin:
    txid: str  # display order
    vout: int
    amount: int
    script: bytes
    branch: int
    index: int
    height: int

    @property
    def outpoint(self) -> str:
        return f"{self.txid}:{self.vout}"

    def body(self) -> dict[str, Any]:
        return {
            "outpoint": self.outpoint,
            "amount": str(self.amount),
            "script": self.script.hex(),
            "path": f"{self.branch}/{self.index}",
            "height": self.height,
        }


@dataclass(frozen=True, slots=True)
class ReserveWallet:
    kind: str
    descriptor: str
    coins: tuple[Coin, ...]

    @property
    def balance(self) -> int:
        return sum(c.amount for c in self.coins)

    def body(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "descriptor": self.descriptor,
            "balance": str(self.balance),
            "utxos": [c.body() for c in self.coins],
        }


def commitment_txid(statement_hash: bytes) -> str:
    """The commitment input's txid (display order): SHA-256("Proof-of-Reserves: " ‖ the statement hash in hex)."""
    return hashlib.sha256(PREFIX + statement_hash.hex().encode()).hexdigest()


def parse_bitcoin(r: Reader, value: Any, symbols: Sequence[str]) -> dict[str, Any]:
    """``claims.bitcoin``, strictly: its asset among ``symbols``, one known network, the block, and each wallet
    with a descriptor of one of the two forms, its coins once each (in no wallet twice), and its balance their sum."""
    b = r.table(value, "claims.bitcoin", {"asset", "network", "block", "wallets"})
    if b["asset"] not in symbols:
        raise StatementInvalid("claims.bitcoin.asset: must be one of the statement's assets")
    if b["network"] not in NETWORKS:
        raise StatementInvalid(f"claims.bitcoin.network: must be one of {', '.join(NETWORKS)}")
    block = r.table(b["block"], "claims.bitcoin.block", {"height", "hash"})
    height = r.count(block["height"], "claims.bitcoin.block.height", 0, 2**31)
    r.text(block["hash"], "claims.bitcoin.block.hash", _HEX64, "block hash")
    seen: set[str] = set()
    kinds = []
    for i, w in enumerate(r.array(b["wallets"], "claims.bitcoin.wallets")):
        wallet = parse_wallet(r, w, f"claims.bitcoin.wallets[{i}]", b["network"])
        kinds.append(wallet.kind)
        for coin in wallet.coins:
            if coin.outpoint in seen:
                raise StatementInvalid(f"claims.bitcoin: the coin {coin.outpoint} is listed twice")
            seen.add(coin.outpoint)
            if coin.height > height:
                raise StatementInvalid(f"claims.bitcoin: the coin {coin.outpoint} is from after the snapshot block")
    r.unique([w["descriptor"] for w in b["wallets"]], lambda d: d, "claims.bitcoin.wallets", "descriptor")
    return b


def parse_wallet(r: Reader, value: Any, path: str, network: str) -> ReserveWallet:
    w = r.table(value, path, {"kind", "descriptor", "balance", "utxos"})
    if w["kind"] not in KINDS:
        raise StatementInvalid(f"{path}.kind: must be hot or cold")
    text = r.typed(w["descriptor"], str, f"{path}.descriptor")
    if _DESCRIPTOR.fullmatch(text) is None:
        raise StatementInvalid(f"{path}.descriptor: must be a descriptor with its checksum")
    desc = descriptor(text)
    if (w["kind"] == "hot") != (desc.threshold == 0):
        raise StatementInvalid(f"{path}: a hot wallet is wpkh(), a cold one wsh(sortedmulti())")
    coins = []
    for j, u in enumerate(r.array(w["utxos"], f"{path}.utxos")):
        where = f"{path}.utxos[{j}]"
        r.table(u, where, {"outpoint", "amount", "script", "path", "height"})
        point = _OUTPOINT.fullmatch(r.typed(u["outpoint"], str, f"{where}.outpoint"))
        derivation = _PATH.fullmatch(r.typed(u["path"], str, f"{where}.path"))
        if point is None or derivation is None:
            raise StatementInvalid(f"{where}: an outpoint is <64 hex>:<n>, a path <0 or 1>/<index>")
        script = bytes.fromhex(r.text(u["script"], f"{where}.script", _SCRIPT, "output script (hex)"))
        amount = _units(u["amount"], f"{where}.amount")
        if not 0 < amount <= 21_000_000 * 10**8:
            raise StatementInvalid(f"{where}.amount: a coin holds 1 sat to 21 million BTC")
        coin = Coin(
            point[1],
            int(point[2]),
            amount,
            script,
            int(derivation[1]),
            int(derivation[2]),
            r.count(u["height"], f"{where}.height", 0, 2**31),
        )
        if desc.script(coin.branch, coin.index) != coin.script:
            raise StatementInvalid(f"{where}: the script is not the descriptor's at {coin.branch}/{coin.index}")
        coins.append(coin)
    wallet = ReserveWallet(w["kind"], text, tuple(coins))
    if _units(w["balance"], f"{path}.balance") != wallet.balance:
        raise StatementInvalid(f"{path}.balance: is not the sum of its coins ({wallet.balance})")
    if not same_network(desc.network, network):
        raise StatementInvalid(f"{path}.descriptor: its keys are not {network} keys")
    return wallet


def _units(value: Any, path: str) -> int:
    try:
        return parse_base_units(value)
    except CustodyError as exc:
        raise StatementInvalid(f"{path}: {exc.message}") from None


def wallets(claims: dict[str, Any]) -> list[ReserveWallet]:
    b = claims["bitcoin"]
    return [parse_wallet(Reader(human=False), w, "wallet", b["network"]) for w in b["wallets"]]


# -- descriptors: the two forms a reserve wallet may have -----------------------------------------------------------
@dataclass(frozen=True)
class WalletDescriptor:
    parsed: Any  # embit Descriptor
    threshold: int  # 0 for wpkh (one key), M for wsh(sortedmulti(M, …))
    network: str

    def derived(self, branch: int, index: int) -> Any:
        return self.parsed.derive(index, branch_index=branch)

    def script(self, branch: int, index: int) -> bytes:
        return bytes(self.derived(branch, index).script_pubkey().data)

    def keys(self, branch: int, index: int) -> list[tuple[bytes, bytes, list[int]]]:
        """(compressed public key, fingerprint, full derivation) of every key at ``branch/index``."""
        return [
            (bytes(k.get_public_key().sec()), bytes(k.origin.fingerprint), list(k.origin.derivation))
            for k in self.derived(branch, index).keys
        ]

    def script_code(self, branch: int, index: int) -> bytes:
        """What BIP-143 signs as the script: the witness script, or for P2WPKH the key's P2PKH script."""
        derived = self.derived(branch, index)
        if self.threshold:
            return bytes(derived.witness_script().data)
        return bytes(p2pkh(derived.keys[0].get_public_key()).data)

    def needs(self) -> int:
        return self.threshold or 1


@cache
def descriptor(text: str) -> WalletDescriptor:
    """``wpkh(KEY)`` or ``wsh(sortedmulti(M, KEY, …))``, each KEY ``[fingerprint/path]xpub/<0;1>/*``, with a valid
    BIP-380 checksum; StatementInvalid otherwise."""
    body, _, given = text.rpartition("#")
    if checksum(body) != given:
        raise StatementInvalid("a wallet descriptor's checksum is wrong")
    try:
        d = Descriptor.from_string(body)
    except Exception:  # embit raises several kinds on malformed text
        raise StatementInvalid("a wallet descriptor does not parse") from None
    if d.is_wrapped or d.is_taproot or not d.is_segwit or d.num_branches != 2 or not d.is_wildcard:
        raise StatementInvalid("a reserve wallet's descriptor is wpkh() or wsh(sortedmulti()) with <0;1>/*")
    if d.is_pkh:
        threshold = 0
    elif d.is_basic_multisig and d.is_sorted:
        threshold = int(d.miniscript.args[0].num)
    else:
        raise StatementInvalid("a reserve wallet's descriptor is wpkh() or wsh(sortedmulti()) with <0;1>/*")
    versions = {bytes(k.key.version[:4]) for k in d.keys}
    network = "mainnet" if versions == {bytes.fromhex("0488b21e")} else "regtest"
    if versions not in ({bytes.fromhex("0488b21e")}, {bytes.fromhex("043587cf")}):
        raise StatementInvalid("a reserve wallet's descriptor mixes or misnames networks' keys")
    return WalletDescriptor(d, threshold, network)


def same_network(a: str, b: str) -> bool:
    """Test networks share their key prefix (tpub), so a descriptor tells mainnet from the rest only."""
    return (a == "mainnet") == (b == "mainnet")


# -- the reserve PSBT -----------------------------------------------------------------------------------------------
def unsigned_tx(statement_hash: bytes, wallet: ReserveWallet) -> Transaction:
    """BIP-127's transaction for this wallet and statement (module docstring)."""
    vin = [TransactionInput(bytes.fromhex(commitment_txid(statement_hash)), 0, sequence=FINAL_SEQUENCE)]
    vin += [TransactionInput(bytes.fromhex(c.txid), c.vout, sequence=FINAL_SEQUENCE) for c in wallet.coins]
    return Transaction(VERSION, vin, [TransactionOutput(wallet.balance, Script(OP_TRUE))], 0)


def reserve_psbt(statement_hash: bytes, wallet: ReserveWallet) -> Any:
    """The unsigned reserve PSBT: each coin with its witness_utxo, witness script and every key's derivation,
    which is what a signer needs to sign it; input 0 carries nothing."""
    psbt = PSBT(unsigned_tx(statement_hash, wallet))
    desc = descriptor(wallet.descriptor)
    for inp, coin in zip(psbt.inputs[1:], wallet.coins, strict=True):
        inp.witness_utxo = TransactionOutput(coin.amount, Script(coin.script))
        derived = desc.derived(coin.branch, coin.index)
        if desc.threshold:
            inp.witness_script = derived.witness_script()
        for key in derived.keys:
            inp.bip32_derivations[key.get_public_key()] = DerivationPath(
                bytes(key.origin.fingerprint), list(key.origin.derivation)
            )
    return psbt


def parse_psbt(raw: bytes | str) -> Any:
    """A PSBT from its binary or base64 form, with every field BIP-370 requires of its version (a version 2
    input without its previous txid, or an output without its amount, would otherwise reach the checks as
    nothing and fail there without a reason); ReserveInvalid if it is not."""
    try:
        text = raw if isinstance(raw, str) else raw.decode("ascii").strip() if raw[:5] != b"psbt\xff" else None
        psbt = PSBT.from_base64(text) if text is not None else PSBT.parse(raw)
    except Exception:  # embit raises several kinds on malformed input
        raise ReserveInvalid("not a PSBT (binary or base64)") from None
    problem = psbt_problem(psbt)
    if problem is not None:
        raise ReserveInvalid(problem)
    return psbt


def to_text(psbt: Any) -> str:
    return str(psbt.to_base64())


def sighash(psbt: Any, i: int, desc: WalletDescriptor, coin: Coin) -> bytes:
    return bytes(psbt.sighash_segwit(i, Script(desc.script_code(coin.branch, coin.index)), coin.amount, SIGHASH.ALL))


def valid_signers(psbt: Any, i: int, desc: WalletDescriptor, coin: Coin) -> set[bytes]:
    """The keys of input ``i``'s coin whose partial signature is a valid SIGHASH_ALL signature of it; a signature
    that is not is refused, never skipped."""
    keys = {k for k, _, _ in desc.keys(coin.branch, coin.index)}
    digest = sighash(psbt, i, desc, coin)
    found = set()
    for pub, sig in psbt.inputs[i].partial_sigs.items():
        key = bytes(pub.sec())
        if key not in keys:
            raise ReserveForeignInput(f"input {i} ({coin.outpoint}) has a signature by a key not of its script")
        if not sig or sig[-1] != SIGHASH.ALL:
            raise ReserveSighash(f"input {i} ({coin.outpoint}) has a signature that is not SIGHASH_ALL")
        try:
            ok = pub.verify(ec.Signature.parse(bytes(sig[:-1])), digest)
        except Exception:  # a malformed DER signature
            ok = False
        if not ok:
            raise ReserveInvalid(f"input {i} ({coin.outpoint}) has a signature that does not verify")
        found.add(key)
    return found


def check_signed(statement_hash: bytes, wallet: ReserveWallet, psbt: Any) -> int:
    """The PSBT is this wallet's reserve PSBT for this statement, and every coin has valid signatures from a
    threshold of its keys; returns how many coins. Raises ReserveInvalid (or a subclass) otherwise."""
    if bytes(psbt.tx.serialize()) != bytes(unsigned_tx(statement_hash, wallet).serialize()):
        raise ReserveCommitment(
            "the reserve PSBT is not the one this statement implies (its commitment input, coins or output differ)"
        )
    desc = descriptor(wallet.descriptor)
    for i, coin in enumerate(wallet.coins, 1):
        have = valid_signers(psbt, i, desc, coin)
        if len(have) < desc.needs():
            raise ReserveInvalid(
                f"missing signature: coin {coin.outpoint} of the {wallet.kind} wallet has {len(have)} valid "
                f"signatures, it needs {desc.needs()}"
            )
    return len(wallet.coins)
