"""The Bitcoin cold wallet on the online side: a P2WSH ``sortedmulti`` descriptor over the owners' BIP-48 account
keys (from their cards), watched by a watch-only descriptor wallet on the node, which can build PSBTs but holds no
private key.

The descriptor is built by the signers' own code (``signer.btcwallet.descriptor_text``), so the daemon and the
signers cannot disagree on it, and the node must compute the same BIP-380 checksum for it before anything is made.
The node's wallet is blank, without private keys, and gets the one multipath descriptor (``<0;1>``: branch 0
receives, branch 1 is change) as its active pair; what it then lists must be exactly those two branches. Only then
is the wallet recorded (one per network) with an audit entry, and the cold wallet file written for ``signer cold
pin``, after the signers' parser has accepted it.

Creating again for the same cards and threshold is refused, naming the wallet; an attempt that stopped between the
node and the database is finished by running it again (the node's wallet is reused, the import is idempotent).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.chain.bitcoin import NODE_CHAINS, RANGE_END, RPC_WALLET_EXISTS, BitcoinNode, open_wallet
from custody.errors import (
    BitcoinNodeError,
    ChainMismatch,
    ColdWalletExists,
    ColdWalletMismatch,
    InvalidRequest,
    NoActivePolicy,
    NoColdWallet,
)
from custody.ledger import audit
from custody.ledger.policy import PolicyCache
from custody.store.db import Store
from custody.store.models import BtcColdWallet, ChainBalance
from signer.btckeys import NETWORKS, BitcoinKey
from signer.btcwallet import MAX_OWNERS, BtcOwner, descriptor_text, parse_btc_cold_wallet
from signer.btcwallet import BtcColdWallet as BtcColdWalletDoc
from signer.keystore import KeyCard

SAT = 10**8


def cold_wallet_file(data_dir: Path, network: str) -> Path:
    """Where ``custody cold create --chain bitcoin`` writes the file the signers pin."""
    return data_dir / f"btc-cold-wallet-{network}.json"


@dataclass(frozen=True)
class Created:
    wallet: str
    network: str
    descriptor: str
    threshold: int
    owners: tuple[dict[str, str], ...]  # {name, fingerprint, path, xpub}, in descriptor order
    raw: bytes
    path: Path


def checksum(descriptor: str) -> str:
    return descriptor.rpartition("#")[2]


def wallet_name(network: str, descriptor: str) -> str:
    """The node's wallet name: a new descriptor gets a new wallet, never another's coins."""
    return f"custody-cold-{network}-{checksum(descriptor)}"


def create(
    store: Store,
    node: BitcoinNode,
    network: str,
    threshold: int,
    cards: Sequence[KeyCard],
    daemon_key: str,
    data_dir: Path,
    now: int,
) -> Created:
    """Make the cold wallet of ``cards`` (in this order) with this threshold on ``network``; see the module."""
    owners = _owners(network, threshold, cards)
    descriptor = descriptor_text(network, threshold, [key for _, key in owners])
    name = wallet_name(network, descriptor)
    with store.read() as s:
        existing = s.execute(select(BtcColdWallet).where(BtcColdWallet.network == network)).scalar_one_or_none()
    if existing is not None:
        if existing.descriptor == descriptor:
            raise ColdWalletExists(
                f"this Bitcoin cold wallet exists already on {network}: {existing.wallet} ({existing.threshold} of "
                f"{len(json.loads(existing.owners))}); nothing was created"
            )
        raise ColdWalletExists(f"{network} has a Bitcoin cold wallet already ({existing.wallet}), with other owners")
    check_network(node, network)
    info = node.call("getdescriptorinfo", descriptor.rpartition("#")[0])
    if info.get("checksum") != checksum(descriptor):
        raise ColdWalletMismatch(
            f"the node computes checksum {str(info.get('checksum'))[:16]!r} for the descriptor, the signers "
            f"{checksum(descriptor)!r}: refusing to make a wallet the signers would not recognise"
        )
    expansions = [str(d) for d in info.get("multipath_expansion") or []]
    if len(expansions) != 2:
        raise ColdWalletMismatch("the node does not read the descriptor as two branches (receive and change)")
    watch = _watch_only_wallet(node, name)
    results = watch.call(
        "importdescriptors", [{"desc": descriptor, "active": True, "range": [0, RANGE_END], "timestamp": "now"}]
    )
    if not all(r.get("success") for r in results):
        raise ColdWalletMismatch(f"the node did not import the descriptor: {json.dumps(results, default=str)[:300]}")
    _check_imported(watch, expansions)
    doc = BtcColdWalletDoc(network, threshold, tuple(BtcOwner(c.name, k) for c, k in owners), descriptor, daemon_key)
    raw = doc.to_bytes()
    if parse_btc_cold_wallet(raw) != doc:  # what the signers check when they pin it
        raise ColdWalletMismatch("the signers' parser reads the cold wallet file differently")
    owner_docs = tuple(o.body() for o in doc.owners)
    with store.transaction() as s:
        if s.get(BtcColdWallet, name) is None:
            s.add(
                BtcColdWallet(
                    wallet=name,
                    network=network,
                    descriptor=descriptor,
                    threshold=threshold,
                    owners=json.dumps(list(owner_docs)),
                    raw=raw,
                    created_at=now,
                )
            )
            audit.append(
                s,
                now,
                "coldwallet.created",
                name,
                {
                    "chain": "bitcoin",
                    "network": network,
                    "descriptor": descriptor,
                    "threshold": threshold,
                    "owners": [o["fingerprint"] for o in owner_docs],
                },
            )
    path = cold_wallet_file(data_dir, network)
    path.write_bytes(raw)
    return Created(name, network, descriptor, threshold, owner_docs, raw, path)


def _owners(network: str, threshold: int, cards: Sequence[KeyCard]) -> list[tuple[KeyCard, BitcoinKey]]:
    if network not in NETWORKS:
        raise InvalidRequest(f"{network!r} is not a Bitcoin network ({', '.join(NETWORKS)})")
    if not 1 <= len(cards) <= MAX_OWNERS:
        raise InvalidRequest(f"a Bitcoin cold wallet has 1 to {MAX_OWNERS} owners")
    if not 1 <= threshold <= len(cards):
        raise InvalidRequest(f"the threshold must be between 1 and the number of owners ({len(cards)})")
    owners = []
    for card in cards:
        key = card.bitcoin_key(network)
        if key is None:
            raise InvalidRequest(
                f"the card of {card.name} has no Bitcoin key: make it again with `signer key card --add-bitcoin`"
            )
        owners.append((card, key))
    fingerprints = [card.fingerprint for card in cards]
    if len(set(fingerprints)) != len(fingerprints):
        raise InvalidRequest("two cards have the same fingerprint: the owners must be distinct keys")
    return owners


def check_network(node: BitcoinNode, network: str) -> None:
    chain = str(node.call("getblockchaininfo").get("chain"))
    if chain not in NODE_CHAINS[network]:
        raise ChainMismatch(f"the configured bitcoind is on {chain!r}, not {network}")


def _watch_only_wallet(node: BitcoinNode, name: str) -> BitcoinNode:
    """A blank descriptor wallet without private keys, loaded at every node start; an earlier attempt's is reused."""
    try:
        node.call("createwallet", name, True, True, "", False, True, True)
    except BitcoinNodeError as exc:
        if exc.node_code != RPC_WALLET_EXISTS:
            raise
        return open_wallet(node, name)
    return node.for_wallet(name)


def _check_imported(watch: BitcoinNode, expansions: list[str]) -> None:
    """The wallet's active descriptors are exactly the receive and change branches, and it has no private key."""
    info = watch.call("getwalletinfo")
    if info.get("private_keys_enabled") or not info.get("descriptors"):
        raise ColdWalletMismatch(f"the node's wallet {watch.wallet} is not a watch-only descriptor wallet")
    listed = {
        (str(d["desc"]), bool(d.get("internal")), bool(d.get("active")))
        for d in watch.call("listdescriptors")["descriptors"]
    }
    wanted = {(expansions[0], False, True), (expansions[1], True, True)}
    if listed != wanted:
        raise ColdWalletMismatch(
            f"the node's wallet {watch.wallet} watches other descriptors than the cold wallet's receive and change "
            "branches: remove or rename that wallet on the node"
        )


def wallet_row(s: Session, network: str) -> BtcColdWallet:
    row = s.execute(select(BtcColdWallet).where(BtcColdWallet.network == network)).scalar_one_or_none()
    if row is None:
        raise NoColdWallet(
            f"there is no Bitcoin cold wallet on {network} yet: create one with `custody cold create --chain bitcoin`"
        )
    return row


def owner_fingerprints(row: BtcColdWallet) -> list[str]:
    return [str(o["fingerprint"]) for o in json.loads(row.owners)]


def receive_address(store: Store, node: BitcoinNode, network: str) -> str:
    """A fresh address of the cold wallet's receive branch (deposits, sweeps, funding in tests)."""
    with store.read() as s:
        row = wallet_row(s, network)
    return str(open_wallet(node, row.wallet).call("getnewaddress", "", "bech32"))


def record_balances(store: Store, node: BitcoinNode, now: int) -> None:
    """The watch-only wallets' balances (``getbalances``: confirmed, and unconfirmed change of our own sends)
    as ``ChainBalance`` rows under the node's wallet name, one per bitcoin asset of the wallet's network: what
    ``GET /v1/balances``, ``custody status`` and ``/metrics`` show as the cold balance. Written when it changed."""
    with store.read() as s:
        wallets = [(w.wallet, w.network) for w in s.execute(select(BtcColdWallet)).scalars()]
        try:
            policy = PolicyCache().get(s).policy
        except NoActivePolicy:
            return
    if not wallets:
        return
    height = int(node.call("getblockcount"))
    for name, network in wallets:
        assets = [a for a, r in policy.assets.items() if r.chain == "bitcoin" and r.network == network]
        if not assets:
            continue
        mine = open_wallet(node, name).call("getbalances")["mine"]
        amount = int(Decimal(str(mine["trusted"])) * SAT)
        with store.transaction() as s:
            for asset in assets:
                row = s.get(ChainBalance, (name, asset))
                if row is None:
                    s.add(ChainBalance(wallet=name, asset=asset, amount=amount, block=height, updated_at=now))
                elif (row.amount, row.block) != (amount, height):
                    row.amount, row.block, row.updated_at = amount, height, now
