"""The hot wallet's Bitcoin account on the online side: a BIP-84 (P2WPKH) account ``m/84'/coin'/0'`` of the
daemon's hot seed, watched by a watch-only descriptor wallet on the node, which tracks its coins and holds no
private key. The daemon signs in-process (``custody.hot.btcpayer``); the node only lists coins and relays.

The node's wallet gets the one multipath descriptor ``wpkh([fp/84h/coin h/0h]tpub…/<0;1>/*)`` (branch 0
receives, branch 1 is change) as its active pair. The wallet is recorded once per network (with an audit
entry) with its receive address at index 0: the address to fund it at, which ``custody status`` shows.

Balance: what the wallet's coins add up to as if no pending payment had happened yet (the coins a pending
payment reserves counted, its own outputs not), because the hot position (``custody.ledger.positions``) takes
the withdrawals still being paid off that reading. It is written as the hot wallet's ``ChainBalance`` of the
asset (under the hot wallet's registered address, which is how positions find the hot wallet's readings).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from embit.descriptor import Descriptor
from embit.networks import NETWORKS as EMBIT_NETWORKS
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from custody.chain.bitcoin import RPC_WALLET_EXISTS, BitcoinNode, open_wallet
from custody.errors import BitcoinNodeError, ChainMismatch, ConfigError
from custody.keys import BtcHotAccount
from custody.ledger import audit
from custody.store.db import Store
from custody.store.models import BtcHotInput, BtcHotTransaction, BtcHotWallet, ChainBalance, HotWallet
from signer.btckeys import xpub_version

log = logging.getLogger("custody.bitcoin")
SAT = Decimal(10) ** 8
RANGE_END = 999  # addresses per branch the node derives up front; it extends the range as they are used
NODE_CHAINS = {"main": "mainnet", "test": "testnet", "testnet4": "testnet", "signet": "signet", "regtest": "regtest"}
_EMBIT = {"mainnet": "main", "testnet": "test", "signet": "signet", "regtest": "regtest"}
PENDING = ("signed", "broadcast")  # a payment's versions not settled yet


@dataclass(frozen=True)
class HotAccount:
    """The account's public side on one network: its descriptor (with the node's checksum) and keys."""

    network: str
    descriptor: str
    key: BtcHotAccount

    @property
    def wallet(self) -> str:
        return f"custody-hot-{self.network}-{self.descriptor.rpartition('#')[2]}"

    def script(self, branch: int, index: int) -> bytes:
        body = self.descriptor.rpartition("#")[0]
        return bytes(Descriptor.from_string(body).derive(index, branch_index=branch).script_pubkey().data)

    def address(self, branch: int, index: int) -> str:
        body = self.descriptor.rpartition("#")[0]
        derived = Descriptor.from_string(body).derive(index, branch_index=branch)
        return str(derived.address(EMBIT_NETWORKS[_EMBIT[self.network]]))


def node_network(node: BitcoinNode) -> str:
    chain = str(node.call("getblockchaininfo").get("chain"))
    if chain not in NODE_CHAINS:
        raise ChainMismatch(f"the configured bitcoind is on an unknown chain {chain!r}")
    return NODE_CHAINS[chain]


def account(node: BitcoinNode, network: str, accounts: dict[int, BtcHotAccount]) -> HotAccount:
    """The account of ``network`` with its descriptor, checksummed by the node."""
    key = accounts[0 if network == "mainnet" else 1]
    body = f"wpkh([{key.fingerprint}/{key.path}]{key.xpub(xpub_version(network))}/<0;1>/*)"
    info = node.call("getdescriptorinfo", body)
    return HotAccount(network, f"{body}#{info['checksum']}", key)


def ensure(store: Store, node: BitcoinNode, acct: HotAccount, now: int) -> BitcoinNode:
    """The node's watch-only wallet of the account, made and recorded the first time; the wallet to use."""
    with store.read() as s:
        row = s.execute(select(BtcHotWallet).where(BtcHotWallet.network == acct.network)).scalar_one_or_none()
    if row is not None:
        if row.descriptor != acct.descriptor:
            raise ConfigError(
                f"the Bitcoin hot wallet recorded on {acct.network} ({row.wallet}) is not this hot seed's: "
                "refusing to pay from another key"
            )
        return open_wallet(node, row.wallet)
    try:
        node.call("createwallet", acct.wallet, True, True, "", False, True, True)
        watch = node.for_wallet(acct.wallet)
    except BitcoinNodeError as exc:
        if exc.node_code != RPC_WALLET_EXISTS:
            raise
        watch = open_wallet(node, acct.wallet)
    results = watch.call(
        "importdescriptors", [{"desc": acct.descriptor, "active": True, "range": [0, RANGE_END], "timestamp": "now"}]
    )
    if not all(r.get("success") for r in results):
        raise ConfigError(f"the node did not import the hot wallet's descriptor: {str(results)[:300]}")
    if watch.call("getwalletinfo").get("private_keys_enabled"):
        raise ConfigError(f"the node's wallet {acct.wallet} holds private keys: it must be watch-only")
    try:
        with store.transaction() as s:
            if s.get(BtcHotWallet, acct.wallet) is None:
                address = acct.address(0, 0)
                s.add(
                    BtcHotWallet(
                        wallet=acct.wallet,
                        network=acct.network,
                        descriptor=acct.descriptor,
                        address=address,
                        next_change=0,
                        created_at=now,
                    )
                )
                audit.append(
                    s,
                    now,
                    "hotwallet.registered",
                    acct.wallet,
                    {"chain": "bitcoin", "network": acct.network, "descriptor": acct.descriptor, "address": address},
                )
    except IntegrityError:  # another replica recorded it a moment ago
        pass
    return watch


@dataclass(frozen=True)
class Utxo:
    txid: str
    vout: int
    amount: int
    script: bytes
    branch: int | None  # None: not a key of this account's two branches
    index: int | None
    confirmations: int


def unspent(watch: BitcoinNode, minconf: int) -> list[Utxo]:
    """The wallet's coins, each with its derivation from the node's descriptor (checked against the key later)."""
    coins = []
    for u in watch.call("listunspent", minconf):
        branch = index = None
        desc = str(u.get("desc", ""))
        origin = desc.partition("[")[2].partition("]")[0].split("/")
        if len(origin) == 6 and origin[4].isdigit() and origin[5].isdigit():
            branch, index = int(origin[4]), int(origin[5])
        coins.append(
            Utxo(
                str(u["txid"]),
                int(u["vout"]),
                int(Decimal(u["amount"]) * SAT),
                bytes.fromhex(str(u["scriptPubKey"])),
                branch,
                index,
                int(u.get("confirmations", 0)),
            )
        )
    return coins


def read_balance(
    store: Store, node: BitcoinNode, watch: BitcoinNode, network: str, symbol: str | None, now: int
) -> int:
    """Record the wallet's balance (the module docstring) on its row and, for ``symbol``, as the hot wallet's
    ``ChainBalance``; returns it."""
    height = int(node.call("getblockcount"))
    coins = unspent(watch, 0)
    with store.transaction() as s:
        row = s.execute(select(BtcHotWallet).where(BtcHotWallet.network == network).with_for_update()).scalar_one()
        pending = _pending(s, row.wallet)
        versions = set(
            s.execute(select(BtcHotTransaction.txid).where(BtcHotTransaction.payment.in_(pending))).scalars()
        )
        reserved = list(s.execute(select(BtcHotInput).where(BtcHotInput.payment.in_(pending))).scalars())
        held = {(r.txid, r.vout) for r in reserved}
        balance = sum(c.amount for c in coins if c.txid not in versions and (c.txid, c.vout) not in held)
        balance += sum(r.amount for r in reserved)
        row.balance, row.balance_height = balance, height
        holder = s.execute(select(HotWallet.address).order_by(HotWallet.created_at).limit(1)).scalar_one_or_none()
        if symbol is not None and holder is not None:
            _write_reading(s, holder, symbol, balance, height, now)
    return balance


def _pending(s: Session, wallet: str) -> list[str]:
    """Payments of ``wallet`` none of whose versions is settled yet."""
    pending = set(
        s.execute(
            select(BtcHotTransaction.payment).where(
                BtcHotTransaction.wallet == wallet, BtcHotTransaction.state.in_(PENDING)
            )
        ).scalars()
    )
    settled = set(
        s.execute(
            select(BtcHotTransaction.payment).where(
                BtcHotTransaction.payment.in_(pending), BtcHotTransaction.state == "confirmed"
            )
        ).scalars()
    )
    return sorted(pending - settled)


def _write_reading(s: Session, holder: str, symbol: str, amount: int, height: int, now: int) -> None:
    reading = s.get(ChainBalance, (holder, symbol))
    if reading is None:
        s.add(ChainBalance(wallet=holder, asset=symbol, amount=amount, block=height, updated_at=now))
    else:
        reading.amount, reading.block, reading.updated_at = amount, height, now
