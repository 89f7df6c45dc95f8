"""What the Bitcoin tests build with embit, as an online host would: cold wallet files over real BIP-48 keys,
fake previous transactions, and PSBTs with real derivations (the signer re-derives everything from the pinned
xpubs, so only the previous transactions are invented, as a node would hand them over)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from embit import ec
from embit.networks import NETWORKS
from embit.psbt import PSBT, DerivationPath
from embit.script import Script, p2wpkh
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from policies.canonical import canonical_bytes
from signer.btckeys import BitcoinKey, account_indexes
from signer.btcwallet import BtcColdWallet, derived_pubkey, descriptor_text, parse_btc_cold_wallet
from signer.psbtreview import RBF_SEQUENCE

NETWORK = "regtest"
SAT = 10**8


def wallet_bytes(
    keys: Sequence[BitcoinKey],
    threshold: int,
    daemon_key: str,
    *,
    network: str = NETWORK,
    names: Sequence[str] | None = None,
    descriptor: str | None = None,
) -> bytes:
    """The cold wallet file as ``custody cold create`` writes it (``descriptor`` overrides the honest one)."""
    owners = [
        {
            "name": (names or [f"op{i}" for i in range(len(keys))])[i],
            "fingerprint": k.fingerprint,
            "path": k.path,
            "xpub": k.xpub,
        }
        for i, k in enumerate(keys)
    ]
    return canonical_bytes(
        {
            "kind": "custody-btc-cold-wallet",
            "format": 1,
            "network": network,
            "threshold": threshold,
            "owners": owners,
            "descriptor": descriptor or descriptor_text(network, threshold, keys),
            "daemon_key": daemon_key,
        }
    )


def address_script(seed: int) -> tuple[str, bytes]:
    """A P2WPKH regtest address nobody in the tests owns, and its script."""
    script = p2wpkh(ec.PrivateKey(bytes([seed]) * 32).get_public_key())
    return script.address(NETWORKS["regtest"]), bytes(script.data)


_counter = [0]


def prev_tx(outputs: Sequence[tuple[bytes, int]]) -> Transaction:
    """A previous transaction paying ``outputs`` (script, sat), from a made-up coin: a distinct txid each call."""
    _counter[0] += 1
    fake = hashlib.sha256(b"coin %d" % _counter[0]).digest()
    return Transaction(
        version=2,
        vin=[TransactionInput(fake, 0, sequence=0xFFFFFFFF)],
        vout=[TransactionOutput(v, Script(s)) for s, v in outputs],
    )


@dataclass
class Coin:
    """An output of the wallet, at ``branch/index``, worth ``value`` sat, in ``tx`` at ``vout``."""

    branch: int
    index: int
    value: int
    tx: Transaction
    vout: int = 0


def coin(wallet: BtcColdWallet, value: int, branch: int = 0, index: int = 0) -> Coin:
    return Coin(branch, index, value, prev_tx([(wallet.script_pubkey(branch, index), value)]))


def derivations(wallet: BtcColdWallet, branch: int, index: int) -> dict[Any, DerivationPath]:
    out: dict[Any, DerivationPath] = {}
    for k in wallet.account_keys():
        pub = ec.PublicKey.parse(derived_pubkey(wallet.network, k.xpub, branch, index))
        out[pub] = DerivationPath(bytes.fromhex(k.fingerprint), [*account_indexes(wallet.network), branch, index])
    return out


@dataclass
class Spec:
    """A PSBT as the honest daemon would build it; tests edit the spec or the built PSBT."""

    wallet: BtcColdWallet
    coins: list[Coin]
    pays: list[tuple[bytes, int]]  # (script, sat) per withdrawal, in order
    change: tuple[int, int] | None = None  # (index on branch 1, sat)
    locktime: int = 0
    version: int = 2
    sequence: int = RBF_SEQUENCE
    extra: list[tuple[bytes, int]] = field(default_factory=list)

    def build(self) -> Any:
        vin = [TransactionInput(bytes(c.tx.txid()), c.vout, sequence=self.sequence) for c in self.coins]
        outs = [TransactionOutput(v, Script(s)) for s, v in self.pays]
        if self.change is not None:
            index, value = self.change
            outs.append(TransactionOutput(value, Script(self.wallet.script_pubkey(1, index))))
        outs += [TransactionOutput(v, Script(s)) for s, v in self.extra]
        psbt = PSBT(Transaction(version=self.version, vin=vin, vout=outs, locktime=self.locktime))
        for inp, c in zip(psbt.inputs, self.coins, strict=True):
            inp.non_witness_utxo = c.tx
            inp.witness_utxo = c.tx.vout[c.vout]
            inp.witness_script = Script(self.wallet.witness_script(c.branch, c.index))
            inp.bip32_derivations = derivations(self.wallet, c.branch, c.index)
        if self.change is not None:
            out = psbt.outputs[len(self.pays)]
            out.witness_script = Script(self.wallet.witness_script(1, self.change[0]))
            out.bip32_derivations = derivations(self.wallet, 1, self.change[0])
        return psbt


def parse_wallet(raw: bytes) -> BtcColdWallet:
    return parse_btc_cold_wallet(raw)
