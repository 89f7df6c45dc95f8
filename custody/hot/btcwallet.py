"""The hot wallet's Bitcoin account on the online side: a BIP-84 (P2WPKH) account ``m/84'/coin'/0'`` of the
daemon's hot seed, watched by a watch-only descriptor wallet on the node, which tracks its coins and holds no
private key. The daemon signs in-process (``custody.hot.btcpayer``); the node only lists coins and relays.

The node's wallet gets the one multipath descriptor ``wpkh([fp/84h/coin h/0h]tpub…/<0;1>/*)`` (branch 0
receives, branch 1 is change) as its active pair. The wallet is recorded once per network (with an audit
entry) with its receive address at index 0: the address to fund it at, which ``custody status`` shows.

Balance: what the wallet's coins add up to as if no pending payment had happened yet (the coins a pending
payment reserves counted, its own outputs not), because the hot position (``custody.ledger.positions``) takes
the withdrawals still being paid off that reading. It is written as the Bitcoin hot wallet's ``ChainBalance`` of
the asset, under the node's wallet name (``BtcHotWallet.wallet``: how positions find this wallet's readings, and
tell them from the Ethereum hot wallet's), at the node's height. A payment counts as paid in the reading once
one of its versions is mined at or below that height (``_not_shown``), which is what the hot position assumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from embit.descriptor import Descriptor
from embit.networks import NETWORKS as EMBIT_NETWORKS
from sqlalchemy import delete, select
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
RPC_NOT_IN_WALLET = -5


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
    """Record the wallet's balance (the module docstring) at the node's height on its row and, for ``symbol``,
    as the Bitcoin hot wallet's ``ChainBalance`` (under its node wallet name); returns it."""
    height = int(node.call("getblockcount"))
    coins = unspent(watch, 0)
    with store.transaction() as s:
        row = s.execute(select(BtcHotWallet).where(BtcHotWallet.network == network).with_for_update()).scalar_one()
        unpaid = [p for p, txids in _not_shown(s, row.wallet, height).items() if not _mined_by(watch, txids, height)]
        versions = set(s.execute(select(BtcHotTransaction.txid).where(BtcHotTransaction.payment.in_(unpaid))).scalars())
        reserved = list(s.execute(select(BtcHotInput).where(BtcHotInput.payment.in_(unpaid))).scalars())
        held = {(r.txid, r.vout) for r in reserved}
        balance = sum(c.amount for c in coins if c.txid not in versions and (c.txid, c.vout) not in held)
        balance += sum(r.amount for r in reserved)
        row.balance, row.balance_height = balance, height
        if symbol is not None:
            _write_reading(s, row.wallet, symbol, balance, height, now)
    return balance


def _not_shown(s: Session, wallet: str, height: int) -> dict[str, list[str]]:
    """Payments of ``wallet`` that a reading at ``height`` shows as paid only if the node has one of their versions
    mined at or below it, each with its versions' txids: those with no version recorded mined there yet (not
    settled, settled above ``height``, or settled and then orphaned by a deep reorg).

    The hot position (``custody.ledger.positions``) counts a payment as shown by a reading at ``height`` once a
    version is recorded mined at or below it; a version mined there now is recorded so by the follower later,
    never above it (short of a reorg), so asking the node here keeps the reading from counting coins a
    payment already spent as free."""
    T = BtcHotTransaction
    open_ = set(
        s.execute(
            select(T.payment).where(
                T.wallet == wallet,
                T.state.in_([*PENDING, "orphaned"]) | ((T.state == "confirmed") & (T.block_height > height)),
            )
        ).scalars()
    )
    recorded = set(
        s.execute(
            select(T.payment).where(
                T.payment.in_(open_), T.state.in_(["broadcast", "confirmed"]), T.block_height <= height
            )
        ).scalars()
    )
    txids: dict[str, list[str]] = {p: [] for p in open_ - recorded}
    for payment, txid in s.execute(select(T.payment, T.txid).where(T.payment.in_(list(txids)))):
        txids[payment].append(txid)
    return txids


def _mined_by(watch: BitcoinNode, txids: list[str], height: int) -> bool:
    """Whether the node has one of ``txids`` in a block at or below ``height`` of its best chain."""
    for txid in txids:
        try:
            tx = watch.call("gettransaction", txid)
        except BitcoinNodeError as exc:
            if exc.node_code != RPC_NOT_IN_WALLET:
                raise
            continue
        if int(tx.get("confirmations", 0)) > 0 and int(tx.get("blockheight", height + 1)) <= height:
            return True
    return False


def _write_reading(s: Session, holder: str, symbol: str, amount: int, height: int, now: int) -> None:
    reading = s.get(ChainBalance, (holder, symbol))
    if reading is None:
        s.add(ChainBalance(wallet=holder, asset=symbol, amount=amount, block=height, updated_at=now))
    else:
        reading.amount, reading.block, reading.updated_at = amount, height, now
    # Before each chain's hot wallet kept its own readings, this one's went under the Ethereum hot wallet's
    # address: such a row is no Ethereum reading (that worker reads Ethereum assets only), and no longer this one.
    s.execute(
        delete(ChainBalance).where(ChainBalance.asset == symbol, ChainBalance.wallet.in_(select(HotWallet.address)))
    )
