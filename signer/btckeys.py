"""An operator's Bitcoin key: the BIP-48 multisig account of the seed it already holds, and what derives from it.

One account per network family, from the same seed as the Ethereum owner key (``signer.keystore``):

    mainnet                      m/48h/0h/0h/2h   written as an xpub (version 0x0488b21e)
    testnet, signet, regtest     m/48h/1h/0h/2h   written as a tpub (version 0x043587cf)

(BIP-48: purpose 48', coin type, account 0', script type 2' = native segwit multisig, P2WSH.) The cold wallet
is ``wsh(sortedmulti(M, …/<0;1>/*))`` over these accounts: branch 0 receives, branch 1 is change, each index a
child of the account key, so anyone holding the account xpubs (the cards) can re-derive every script and no
secret is needed to check that an input or a change output is the wallet's own.

Paths are written with ``h`` for hardened, as descriptors write them; the key text is the standard BIP-32
serialisation, which the parser reads back only for the network family it is written for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from embit import bip32
from embit.networks import NETWORKS as EMBIT_NETWORKS

from signer.errors import BtcWalletInvalid

NETWORKS = ("mainnet", "testnet", "signet", "regtest")
# embit's name of each network (its version bytes and HRPs are the contract's)
_EMBIT = {"mainnet": "main", "testnet": "test", "signet": "signet", "regtest": "regtest"}
PURPOSE, ACCOUNT, SCRIPT_TYPE = 48, 0, 2
HARDENED = 0x80000000
GAP_LIMIT = 1000  # addresses per branch a signer will re-derive looking for an input's or change's index
_XPUB = re.compile(r"[xt]pub[1-9A-HJ-NP-Za-km-z]{100,108}")


@dataclass(frozen=True, slots=True)
class BitcoinKey:
    """One owner's BIP-48 account key, as a card and a cold wallet file list it."""

    fingerprint: str  # the seed's BIP-32 master fingerprint, 8 hex
    path: str  # "m/48h/1h/0h/2h"
    xpub: str  # xpub on mainnet, tpub on the test networks

    def origin(self) -> str:
        """The key origin of a descriptor: ``[<fp>/48h/1h/0h/2h]``."""
        return f"[{self.fingerprint}{self.path[1:]}]"


def check_network(network: object) -> str:
    if network not in NETWORKS:
        raise BtcWalletInvalid(f"{str(network)[:40]!r} is not a Bitcoin network ({', '.join(NETWORKS)})")
    return str(network)


def coin_type(network: str) -> int:
    return 0 if check_network(network) == "mainnet" else 1


def account_path(network: str) -> str:
    return f"m/{PURPOSE}h/{coin_type(network)}h/{ACCOUNT}h/{SCRIPT_TYPE}h"


def account_indexes(network: str) -> list[int]:
    return [PURPOSE + HARDENED, coin_type(network) + HARDENED, ACCOUNT + HARDENED, SCRIPT_TYPE + HARDENED]


def xpub_version(network: str) -> bytes:
    return bytes(EMBIT_NETWORKS[_EMBIT[check_network(network)]]["xpub"])


def embit_network(network: str) -> dict[str, Any]:
    """embit's parameters of ``network`` (version bytes, bech32 HRP)."""
    return dict(EMBIT_NETWORKS[_EMBIT[check_network(network)]])


def master_fingerprint(seed: bytes) -> str:
    return bytes(bip32.HDKey.from_seed(seed).my_fingerprint).hex()


def account_key(seed: bytes, network: str) -> BitcoinKey:
    """The BIP-48 P2WSH multisig account of ``seed`` for ``network``, public half only."""
    root = bip32.HDKey.from_seed(seed)
    account = root.derive(account_indexes(network)).to_public()
    return BitcoinKey(
        fingerprint=bytes(root.my_fingerprint).hex(),
        path=account_path(network),
        xpub=str(account.to_base58(version=xpub_version(network))),
    )


def account_private(seed: bytes, network: str) -> Any:
    """The account's private HD key (embit ``HDKey``), for signing; never written anywhere."""
    return bip32.HDKey.from_seed(seed).derive(account_indexes(network))


def parse_xpub(text: object, network: str) -> Any:
    """The embit ``HDKey`` of an account xpub written for ``network`` (xpub on mainnet, tpub on the test
    networks), public, at depth 4 as a BIP-48 account is; BtcWalletInvalid otherwise."""
    if not isinstance(text, str) or _XPUB.fullmatch(text) is None:
        raise BtcWalletInvalid(f"{str(text)[:24]!r}… is not an extended public key (xpub or tpub)")
    try:
        key = bip32.HDKey.from_base58(text)
    except Exception:  # embit raises several kinds (base58 checksum, point not on the curve)
        raise BtcWalletInvalid(f"{text[:16]}… is not a valid extended public key (checksum or key)") from None
    if key.is_private:
        raise BtcWalletInvalid(f"{text[:16]}… is a private key; only public keys belong here")
    if bytes(key.version) != xpub_version(network):
        family = "xpub" if network == "mainnet" else "tpub"
        raise BtcWalletInvalid(f"{text[:16]}… is not a {network} key (a {network} key is written as a {family})")
    if key.to_base58() != text:
        raise BtcWalletInvalid(f"{text[:16]}… is not in its standard encoding")
    if key.depth != 4 or key.child_number != SCRIPT_TYPE + HARDENED:
        raise BtcWalletInvalid(f"{text[:16]}… is not a BIP-48 account key (depth 4, last step {SCRIPT_TYPE}h)")
    return key


def child_pubkey(account: Any, branch: int, index: int) -> bytes:
    """The compressed public key at ``<account>/branch/index`` (unhardened: derivable from the xpub)."""
    return bytes(account.derive([branch, index]).key.sec())
