"""The Bitcoin half of ``custody por snapshot``: the cold descriptor wallet's and the hot BIP-84 wallet's coins at
one block, read from the node's UTXO set, and their BIP-127 reserve PSBTs (``signer.porbtc``).

One ``scantxoutset`` call scans the UTXO set for both wallets' receive and change branches, each from index 0 to
``SCAN_GAP`` past the highest index handed out (by the node's watch-only wallet, or for the hot wallet's change by
the daemon): the node reports the block it scanned at (height and hash), so
every coin is read at that one block, confirmed coins only. Each coin the node attributes to a key is checked
by re-deriving its script from our own descriptor at the path the node names; a coin that does not re-derive
is refused rather than counted.

The hot wallet's PSBT is signed here, with the hot seed's keys; the cold one is written unsigned for the owners
(``signer por sign-bitcoin``), whose signed copies ``custody por attach`` combines (``attach_psbt``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from embit.script import Script, p2pkh
from embit.transaction import SIGHASH
from sqlalchemy import select

from custody.chain.bitcoin import NODE_CHAINS, RANGE_END, BitcoinNode, open_wallet
from custody.errors import BitcoinNodeError, ConfigError, ProofInvalid
from custody.keys import BtcHotAccount
from custody.store.db import Store
from custody.store.models import BtcColdWallet, BtcHotWallet
from signer.porbtc import (
    Coin,
    ReserveInvalid,
    ReserveWallet,
    descriptor,
    parse_psbt,
    reserve_psbt,
    to_text,
    unsigned_tx,
    valid_signers,
    wallets,
)
from signer.porstatement import ReservePsbt, Statement

SAT = 10**8
# bitcoind's name of each network (getblockchaininfo "chain"), as custody.cold.btcwallet has it (a layer above)
_ORIGIN = re.compile(r"\[([0-9a-f]{8})((?:/[0-9]+[h']?)+)\]")
COLD_PSBT = "btc-cold-reserve.psbt"  # the file the owners sign, in the snapshot directory
SCAN_GAP = 200  # addresses scanned past the highest one handed out, per branch


@dataclass(frozen=True)
class BitcoinSource:
    """The node and the hot seed's Bitcoin accounts (by coin type), for the snapshot."""

    node: BitcoinNode
    accounts: dict[int, BtcHotAccount]


@dataclass(frozen=True)
class BitcoinReserves:
    network: str
    height: int
    block_hash: str
    wallets: tuple[ReserveWallet, ...]

    def claims(self, asset: str) -> dict[str, Any]:
        return {
            "asset": asset,
            "network": self.network,
            "block": {"height": self.height, "hash": self.block_hash},
            "wallets": [w.body() for w in self.wallets],
        }


def read_reserves(store: Store, node: BitcoinNode, network: str) -> BitcoinReserves:
    """Every coin of the cold and hot wallets of ``network`` at the node's tip, as one scan saw them."""
    chain = str(node.call("getblockchaininfo").get("chain"))
    if chain not in NODE_CHAINS[network]:
        raise ConfigError(f"the configured bitcoind is on {chain!r}; the policy's Bitcoin asset is on {network}")
    with store.read() as s:
        cold = s.execute(select(BtcColdWallet).where(BtcColdWallet.network == network)).scalar_one_or_none()
        hot = s.execute(select(BtcHotWallet).where(BtcHotWallet.network == network)).scalar_one_or_none()
    found = [(kind, row.descriptor, row.wallet) for kind, row in (("cold", cold), ("hot", hot)) if row is not None]
    used = 0 if hot is None else hot.next_change
    if not found:
        raise ConfigError(
            f"there is no Bitcoin wallet on {network} to prove: create the cold wallet (`custody cold create "
            "--chain bitcoin`) or run the worker once (the hot wallet), or leave BTC out with --assets"
        )
    scans = []
    for _, text, name in found:
        end = _range_end(node, name, used)
        body = text.rpartition("#")[0]
        scans += [{"desc": body.replace("/<0;1>/*", f"/{b}/*"), "range": [0, end]} for b in (0, 1)]
    try:
        result = node.call("scantxoutset", "start", scans)
    except BitcoinNodeError as exc:
        raise ProofInvalid(f"the node could not scan its UTXO set: {exc.message}") from None
    if not result.get("success"):
        raise ProofInvalid("the node's UTXO set scan did not finish")
    fingerprints = {}
    for kind, text, _ in found:
        for _, fp, _ in descriptor(text).keys(0, 0):
            fingerprints[fp.hex()] = (kind, text)
    coins: dict[str, list[Coin]] = {text: [] for _, text, _ in found}
    for u in result["unspents"]:
        kind, text, coin = _coin(u, fingerprints)
        coins[text].append(coin)
    listed = tuple(
        ReserveWallet(kind, text, tuple(sorted(coins[text], key=lambda c: (c.txid, c.vout)))) for kind, text, _ in found
    )
    return BitcoinReserves(network, int(result["height"]), str(result["bestblock"]), listed)


def _range_end(node: BitcoinNode, name: str, used: int) -> int:
    """``SCAN_GAP`` past the highest index handed out on either branch (the node's ``next_index``, or ``used``):
    a scan's cost grows with the scripts it derives, and a coin past the gap is left out, never invented."""
    try:
        listed = open_wallet(node, name).call("listdescriptors")["descriptors"]
    except BitcoinNodeError:
        return RANGE_END
    handed = [int(d.get("next_index", d.get("next", 0))) for d in listed]
    return max([used, *handed]) + SCAN_GAP


def _coin(u: dict[str, Any], fingerprints: dict[str, tuple[str, str]]) -> tuple[str, str, Coin]:
    """The coin, its wallet (kind, descriptor) and path from the node's own description of the key that owns it,
    re-derived here: a script that is not our descriptor's at that path is refused."""
    origin = _ORIGIN.search(str(u.get("desc", "")))
    where = f"{u.get('txid')}:{u.get('vout')}"
    if origin is None or origin[1] not in fingerprints:
        raise ProofInvalid(f"the node lists coin {where} for a key this daemon does not know")
    steps = origin[2].strip("/").split("/")
    if len(steps) < 2 or not steps[-1].isdigit() or not steps[-2].isdigit():
        raise ProofInvalid(f"the node's derivation of coin {where} is not <branch>/<index>")
    kind, text = fingerprints[origin[1]]
    amount = Decimal(str(u["amount"])) * SAT
    coin = Coin(
        str(u["txid"]),
        int(u["vout"]),
        int(amount),
        bytes.fromhex(str(u["scriptPubKey"])),
        int(steps[-2]),
        int(steps[-1]),
        int(u["height"]),
    )
    if (
        amount != coin.amount
        or coin.branch not in (0, 1)
        or descriptor(text).script(coin.branch, coin.index) != coin.script
    ):
        raise ProofInvalid(f"coin {where} is not the {kind} wallet's at the path the node gives")
    return kind, text, coin


def control(statement_hash: bytes, reserves: BitcoinReserves, accounts: dict[int, BtcHotAccount]) -> list[ReservePsbt]:
    """Each wallet's reserve PSBT: the hot one signed with the hot keys, the cold one unsigned."""
    out = []
    for wallet in reserves.wallets:
        psbt = reserve_psbt(statement_hash, wallet)
        if wallet.kind == "hot":
            _sign_hot(psbt, wallet, accounts[0 if reserves.network == "mainnet" else 1])
        out.append(ReservePsbt(wallet.descriptor, to_text(psbt)))
    return out


def _sign_hot(psbt: Any, wallet: ReserveWallet, account: BtcHotAccount) -> None:
    desc = descriptor(wallet.descriptor)
    for i, coin in enumerate(wallet.coins, 1):
        key = account.child(coin.branch, coin.index)
        pub = key.get_public_key()
        if [bytes(pub.sec())] != [k for k, _, _ in desc.keys(coin.branch, coin.index)]:
            raise ConfigError("the hot wallet's recorded descriptor is not this hot seed's: refusing to sign")
        digest = psbt.sighash_segwit(i, Script(p2pkh(pub).data), coin.amount, sighash=SIGHASH.ALL)
        psbt.inputs[i].partial_sigs[pub] = bytes(key.sign(digest).serialize()) + bytes([SIGHASH.ALL])


def is_psbt(raw: bytes) -> bool:
    return raw[:5] == b"psbt\xff" or raw.lstrip()[:7] == b"cHNidP8"


def attach_psbt(statement: Statement, raw: bytes) -> tuple[Statement, str, int]:
    """Merge the owners' signatures from a signed copy of a wallet's reserve PSBT into the statement's, each
    signature checked valid for its coin first (one bad signature refuses the file). Returns the statement, the
    wallet's descriptor and how many signatures were new."""
    signed = parse_psbt(raw)
    for index, wallet in enumerate(wallets(statement.claims)):
        if bytes(signed.tx.serialize()) != bytes(unsigned_tx(statement.hash, wallet).serialize()):
            continue
        mine = parse_psbt(statement.bip127[index].psbt)
        desc = descriptor(wallet.descriptor)
        added = 0
        for i, coin in enumerate(wallet.coins, 1):
            try:
                valid_signers(signed, i, desc, coin)
            except ReserveInvalid as exc:
                raise ProofInvalid(f"the signed reserve PSBT: {exc.message}") from None
            for pub, sig in signed.inputs[i].partial_sigs.items():
                if pub not in mine.inputs[i].partial_sigs:
                    mine.inputs[i].partial_sigs[pub] = sig
                    added += 1
        psbts = list(statement.bip127)
        psbts[index] = ReservePsbt(wallet.descriptor, to_text(mine))
        return replace(statement, bip127=tuple(psbts)), wallet.descriptor, added
    raise ProofInvalid(
        "the PSBT is not the reserve PSBT of any Bitcoin wallet of this statement (another statement, or altered)"
    )
