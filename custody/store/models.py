"""Tables. Amounts are integers in base units inside; see ``Amount`` for how each database stores them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# An auto-incrementing integer key on both SQLite (which needs plain INTEGER) and PostgreSQL.
SerialKey = BigInteger().with_variant(Integer, "sqlite")


class Amount(TypeDecorator[int]):
    """uint256 amounts: NUMERIC(78, 0) on PostgreSQL (exact, and SUM works in SQL); decimal text on SQLite,
    whose integers stop at 2**63."""

    impl = String(80)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(78, 0))
        return dialect.type_descriptor(String(80))

    def process_bind_param(self, value: int | None, dialect: Any) -> Any:
        if value is None:
            return None
        return Decimal(int(value)) if dialect.name == "postgresql" else str(int(value))

    def process_result_value(self, value: Any, dialect: Any) -> int | None:
        return None if value is None else int(value)


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(SerialKey, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    public_key: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RequestNonce(Base):
    """A signature seen recently: accepting each signed request once stops replays."""

    __tablename__ = "request_nonces"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[int] = mapped_column(BigInteger, index=True)


class WindowUsage(Base):
    """Per asset, API key and second: the sum of the withdrawals made then that count against velocity
    windows (``custody.ledger.usage``)."""

    __tablename__ = "window_usage"
    asset: Mapped[str] = mapped_column(String(16), primary_key=True)
    api_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    amount: Mapped[int] = mapped_column(Amount)


class ScopedUsage(Base):
    """Per scope, asset and second, like ``WindowUsage``: the scope is ``customer:<id>`` for a customer's
    windows, or ``unlisted`` for the asset's payouts to unlisted destinations."""

    __tablename__ = "scoped_usage"
    scope: Mapped[str] = mapped_column(String(80), primary_key=True)
    asset: Mapped[str] = mapped_column(String(16), primary_key=True)
    at: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    amount: Mapped[int] = mapped_column(Amount)


class Withdrawal(Base):
    __tablename__ = "withdrawals"
    seq: Mapped[int] = mapped_column(SerialKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    api_key: Mapped[str] = mapped_column(String(64), ForeignKey("api_keys.name"))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))
    asset: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Amount)
    decimals: Mapped[int] = mapped_column(Integer)  # the asset's decimals when the request was made
    # An EIP-55 address (42 characters) or a Bitcoin address (up to 90: bech32's limit).
    destination: Mapped[str] = mapped_column(String(100))
    client_reference: Mapped[str | None] = mapped_column(String(128), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    route: Mapped[str | None] = mapped_column(String(8), nullable=True)
    outcome: Mapped[str] = mapped_column(String(8))
    reasons: Mapped[str] = mapped_column(Text)  # canonical JSON list of {rule, passed, message}
    eligible_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    policy_version: Mapped[int] = mapped_column(Integer)
    policy_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)  # the payment that settled it
    failure: Mapped[str | None] = mapped_column(Text, nullable=True)
    batch_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)  # while in a cold batch
    # The Safe nonce it was last exported at: once signed there, signers refuse it at any other nonce
    # (signer.ledger), so it may only go out again at that nonce.
    cold_nonce: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The exchange's customer it pays (opaque id), and which kind of destination the policy found.
    customer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    destination_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # The backend's original signed request (canonical JSON), kept for every destination not on the treasury
    # whitelist: offline signers verify it before paying such a withdrawal from the cold wallet.
    request: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        UniqueConstraint("api_key", "idempotency_key", name="uq_withdrawals_idempotency"),
        Index("ix_withdrawals_customer_asset_created", "customer", "asset", "created_at"),
        Index("ix_withdrawals_asset_created", "asset", "created_at"),
        Index("ix_withdrawals_key_created", "api_key", "created_at"),
        Index("ix_withdrawals_state_seq", "state", "seq"),
    )


class PolicyBundleRow(Base):
    """Version 0 is the genesis document from `custody init`; versions 1… are applied bundles."""

    __tablename__ = "policy_bundles"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    signatures: Mapped[str] = mapped_column(Text)  # one signature file per line
    applied_at: Mapped[int] = mapped_column(BigInteger)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(64))
    data: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row: the newest entry. Appenders lock it, so the chain never forks under concurrency."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class HotWallet(Base):
    """A hot wallet's address and the next nonce it will use. Nonces are allocated under a lock on this row,
    so replicas never reuse or skip one."""

    __tablename__ = "hot_wallets"
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    next_nonce: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)


class HotTransaction(Base):
    """One signed version of a transaction from the hot wallet: a hot payment (``withdrawal_id``), the
    execution of a cold batch (``batch_id``), or a plain call such as creating the Safe (neither). Written
    before it is broadcast; replacements are new attempts at the same nonce. Exactly one version per nonce is
    ever mined."""

    __tablename__ = "hot_transactions"
    id: Mapped[int] = mapped_column(SerialKey, primary_key=True, autoincrement=True)
    withdrawal_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("withdrawals.id"), nullable=True)
    batch_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("batches.id"), nullable=True)
    wallet: Mapped[str] = mapped_column(String(42), ForeignKey("hot_wallets.address"))
    nonce: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    tx_hash: Mapped[str] = mapped_column(String(66), unique=True)
    raw: Mapped[str] = mapped_column(Text)
    max_fee: Mapped[int] = mapped_column(Amount)
    priority_fee: Mapped[int] = mapped_column(Amount)
    state: Mapped[str] = mapped_column(String(12))  # signed, broadcast, mined, replaced, orphaned
    created_at: Mapped[int] = mapped_column(BigInteger)
    broadcast_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mined_block: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mined_block_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)

    __table_args__ = (
        UniqueConstraint("wallet", "nonce", "attempt", name="uq_hot_tx_attempt"),
        Index("ix_hot_tx_state", "state"),
        Index("ix_hot_tx_withdrawal", "withdrawal_id"),
    )


class ChainBalance(Base):
    """The newest balance the daemon read for one wallet and asset, and the block it read it at."""

    __tablename__ = "chain_balances"
    wallet: Mapped[str] = mapped_column(String(42), primary_key=True)
    asset: Mapped[str] = mapped_column(String(16), primary_key=True)
    amount: Mapped[int] = mapped_column(Amount)
    block: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class ColdWallet(Base):
    """The cold wallet (a Safe), recorded when it is created; sweeps go here and only here."""

    __tablename__ = "cold_wallets"
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    # Read back from the chain after creation; None for a wallet recorded before migration 0004.
    owners: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of checksummed addresses
    threshold: Mapped[int | None] = mapped_column(Integer, nullable=True)
    multisend: Mapped[str | None] = mapped_column(String(42), nullable=True)  # the pinned MultiSendCallOnly
    # The owners' names from the cards they were created from (JSON {address: name}), for people to read only.
    owner_names: Mapped[str | None] = mapped_column(Text, nullable=True)


class Batch(Base):
    """A cold batch: one Safe transaction paying some ``queued_cold`` withdrawals, and the file the signers
    review. States: exported (waiting for signatures) -> executing -> executed | failed; exported -> expired |
    cancelled (its withdrawals go back to the queue) | stale (its Safe nonce was used by something else)."""

    __tablename__ = "batches"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    safe: Mapped[str] = mapped_column(String(42))
    safe_nonce: Mapped[int] = mapped_column(BigInteger)
    safe_tx_hash: Mapped[str] = mapped_column(String(66))
    state: Mapped[str] = mapped_column(String(12))
    raw: Mapped[bytes] = mapped_column(LargeBinary)  # the batch file, exactly as signed by the daemon
    policy_version: Mapped[int] = mapped_column(Integer)
    withdrawals: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)  # the execTransaction that settled it

    __table_args__ = (Index("ix_batches_state", "state"),)


class BatchSignature(Base):
    """One Safe owner's signature of one batch's SafeTx hash, stored once however often it is imported."""

    __tablename__ = "batch_signatures"
    id: Mapped[int] = mapped_column(SerialKey, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(36), ForeignKey("batches.id"))
    owner: Mapped[str] = mapped_column(String(42))
    signature: Mapped[str] = mapped_column(String(130))
    imported_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (UniqueConstraint("batch_id", "owner", name="uq_batch_signature_owner"),)


class Freeze(Base):
    """A stop of every outgoing payment. Active while ``lifted_at`` is None; only a quorum-signed policy
    bundle naming its id lifts it."""

    __tablename__ = "freezes"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    frozen_at: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    by: Mapped[str] = mapped_column(String(64))  # "operator" or "auto:<asset>"
    lifted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    lifted_by_bundle: Mapped[int | None] = mapped_column(Integer, nullable=True)


class WebhookEndpoint(Base):
    """One receiver URL. The audit log is the outbox: every entry about a withdrawal or batch after
    ``cursor`` (an audit seq) is still to be delivered to it, in order."""

    __tablename__ = "webhook_endpoints"
    url: Mapped[str] = mapped_column(String(500), primary_key=True)
    cursor: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer)  # failures in a row of the event at the cursor
    next_attempt_at: Mapped[float] = mapped_column(Float)
    lease_until: Mapped[float] = mapped_column(Float)  # a dispatcher is delivering until then
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class Customer(Base):
    """A customer the exchange has told us something about (only its mode, so far)."""

    __tablename__ = "customers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    book_only: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class AddressBookEntry(Base):
    """A customer's withdrawal address for one asset, usable from ``active_at``; removed entries are kept."""

    __tablename__ = "address_book"
    id: Mapped[int] = mapped_column(SerialKey, primary_key=True, autoincrement=True)
    customer: Mapped[str] = mapped_column(String(64))
    asset: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(100))  # as withdrawals.destination
    label: Mapped[str] = mapped_column(String(128))
    added_at: Mapped[int] = mapped_column(BigInteger)
    active_at: Mapped[int] = mapped_column(BigInteger)
    removed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    announced: Mapped[bool] = mapped_column(Boolean, default=False)  # address.active recorded
    added_by: Mapped[str] = mapped_column(String(64))  # the API key
    request: Mapped[str | None] = mapped_column(Text, nullable=True)  # the backend's signed request, as JSON

    __table_args__ = (
        Index("ix_address_book_lookup", "customer", "asset", "address"),
        Index("ix_address_book_pending", "announced", "active_at"),
    )


class Approval(Base):
    """One operator's signed decision on a held withdrawal."""

    __tablename__ = "approvals"
    withdrawal_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    operator: Mapped[str] = mapped_column(String(64), primary_key=True)
    decision: Mapped[str] = mapped_column(String(8))  # approve | reject
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[str] = mapped_column(String(128))


class BtcColdWallet(Base):
    """A Bitcoin cold wallet: a P2WSH sortedmulti descriptor over the owners' BIP-48 account keys, watched by a
    watch-only descriptor wallet on the node (``wallet``). One per network; the Safe (``ColdWallet``) is apart."""

    __tablename__ = "btc_cold_wallets"
    wallet: Mapped[str] = mapped_column(String(64), primary_key=True)  # the node's wallet name
    network: Mapped[str] = mapped_column(String(16), unique=True)
    descriptor: Mapped[str] = mapped_column(Text)  # with its checksum, exactly as the signers pin it
    threshold: Mapped[int] = mapped_column(Integer)
    owners: Mapped[str] = mapped_column(Text)  # JSON list of {name, fingerprint, path, xpub}, descriptor order
    raw: Mapped[bytes] = mapped_column(LargeBinary)  # the cold wallet file the signers pin
    created_at: Mapped[int] = mapped_column(BigInteger)


class BtcBatch(Base):
    """A Bitcoin cold batch: one PSBT from the watch-only wallet paying some ``queued_cold`` withdrawals of one
    asset. States (``custody.cold.btcbatches.BtcState``): exported -> signed (final transaction stored) ->
    broadcast -> confirmed; exported -> expired | cancelled (inputs unlocked, withdrawals back to the queue)."""

    __tablename__ = "btc_batches"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    wallet: Mapped[str] = mapped_column(String(64), ForeignKey("btc_cold_wallets.wallet"))
    asset: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(12))
    txid: Mapped[str] = mapped_column(String(64))  # of the unsigned transaction, which segwit signing keeps
    psbt: Mapped[str] = mapped_column(Text)  # base64, as exported
    raw: Mapped[bytes] = mapped_column(LargeBinary)  # the batch file, exactly as signed by the daemon
    fee: Mapped[int] = mapped_column(Amount)  # satoshis
    replaces: Mapped[str | None] = mapped_column(String(36), nullable=True)
    policy_version: Mapped[int] = mapped_column(Integer)
    withdrawals: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    # The finalized transaction (hex), stored before it is first broadcast; after a crash it is sent again.
    final_tx: Mapped[str | None] = mapped_column(Text, nullable=True)
    block_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # where it was last seen mined
    block_height: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_btc_batches_state", "state"),)


class BtcBatchInput(Base):
    """A coin a Bitcoin batch spends, locked on the node (``lockunspent``) while the batch is open."""

    __tablename__ = "btc_batch_inputs"
    batch_id: Mapped[str] = mapped_column(String(36), ForeignKey("btc_batches.id"), primary_key=True)
    txid: Mapped[str] = mapped_column(String(64), primary_key=True)
    vout: Mapped[int] = mapped_column(Integer, primary_key=True)
    amount: Mapped[int] = mapped_column(Amount)

    __table_args__ = (Index("ix_btc_batch_inputs_outpoint", "txid", "vout"),)


class BtcBatchSignature(Base):
    """One owner's signed PSBT of one Bitcoin batch, stored once however often it is imported."""

    __tablename__ = "btc_batch_signatures"
    id: Mapped[int] = mapped_column(SerialKey, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(36), ForeignKey("btc_batches.id"))
    fingerprint: Mapped[str] = mapped_column(String(8))
    psbt: Mapped[str] = mapped_column(Text)
    imported_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (UniqueConstraint("batch_id", "fingerprint", name="uq_btc_batch_signature_owner"),)


class BtcHotWallet(Base):
    """The hot wallet's Bitcoin account on one network: a BIP-84 ``wpkh`` descriptor of the hot seed's account
    key, watched by a watch-only descriptor wallet on the node (``wallet``), which tracks its coins."""

    __tablename__ = "btc_hot_wallets"
    wallet: Mapped[str] = mapped_column(String(64), primary_key=True)  # the node's wallet name
    network: Mapped[str] = mapped_column(String(16), unique=True)
    descriptor: Mapped[str] = mapped_column(Text)  # multipath <0;1>, with its checksum; public keys only
    address: Mapped[str] = mapped_column(String(100))  # receive index 0: the address to fund it at
    next_change: Mapped[int] = mapped_column(Integer)  # the next unused index on branch 1
    created_at: Mapped[int] = mapped_column(BigInteger)
    # Its last balance reading (satoshis, pending payments not yet taken off) and the block height it was read at.
    balance: Mapped[int | None] = mapped_column(Amount, nullable=True)
    balance_height: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class BtcHotTransaction(Base):
    """One signed version of a hot Bitcoin payment (``payment``: the id of its first version), stored before it
    is first sent. States: signed -> broadcast -> confirmed, or replaced when another version of the payment
    confirms. Every version of a payment spends exactly the same coins."""

    __tablename__ = "btc_hot_txs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    payment: Mapped[str] = mapped_column(String(36), index=True)
    wallet: Mapped[str] = mapped_column(String(64), ForeignKey("btc_hot_wallets.wallet"))
    asset: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)  # 0 for the first version, then one more per fee bump
    state: Mapped[str] = mapped_column(String(12), index=True)
    txid: Mapped[str] = mapped_column(String(64), unique=True)
    raw: Mapped[str] = mapped_column(Text)  # the signed transaction (hex): only these bytes are ever sent
    fee: Mapped[int] = mapped_column(Amount)  # satoshis
    fee_rate: Mapped[int] = mapped_column(Integer)  # sat/vB asked for
    vsize: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    broadcast_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    block_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # where it was last seen mined
    block_height: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class BtcHotInput(Base):
    """A coin of the hot wallet reserved by a payment before it is signed. The outpoint is the key: no two
    payments (two workers, two replicas) can ever hold the same coin."""

    __tablename__ = "btc_hot_inputs"
    txid: Mapped[str] = mapped_column(String(64), primary_key=True)
    vout: Mapped[int] = mapped_column(Integer, primary_key=True)
    payment: Mapped[str] = mapped_column(String(36), index=True)
    amount: Mapped[int] = mapped_column(Amount)
    branch: Mapped[int] = mapped_column(Integer)  # its key's derivation under the account: branch/index
    index: Mapped[int] = mapped_column(Integer)


class BtcHotPayout(Base):
    """A withdrawal paid by a hot Bitcoin payment; one payment at most per withdrawal (the key)."""

    __tablename__ = "btc_hot_payouts"
    withdrawal_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    payment: Mapped[str] = mapped_column(String(36), index=True)


class ConsoleLoginToken(Base):
    """A sign-in URL of the operators' console (``custody.console.auth``): only the token's SHA-256 is kept; usable
    once (``used_at``), until ``expires_at``."""

    __tablename__ = "console_login_tokens"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator: Mapped[str] = mapped_column(String(64))  # the name in the policy's [[operators]]
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ConsoleSession(Base):
    """A browser signed in to the console: the cookie's token hashed. Ends at ``expires_at`` or at sign-out."""

    __tablename__ = "console_sessions"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    ended_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
