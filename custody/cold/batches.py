"""Cold batches on the online side: export, expire, cancel, reconcile with the Safe's nonce. Importing the
owners' signatures, executing at quorum and settling are in ``custody.cold.execution``; listing in
``custody.cold.views``.

A batch's life (``Batch.state``), beside its withdrawals' own (``custody.ledger.states``):

    exported  --quorum imported-->  executing  --mined-->  executed | failed
    exported  --expiry / cancel-->  expired | cancelled         (withdrawals back to queued_cold)
    exported  --its Safe nonce used by another transaction-->  stale   (kept until an operator cancels it)
    exported  --executed by someone else with the signatures-->  executed

Safe nonces: a batch takes the lowest nonce at or above the Safe's on-chain nonce that no open batch holds. An
expired or cancelled batch frees its nonce, so the next batch reuses it: only one of the two can ever execute.
When nothing is left to pay, the next export is an empty batch (a no-op call to the Safe itself) that uses
the freed nonce up, so old signatures can never be replayed. A withdrawal once exported goes out again only at
the nonce it had (``Withdrawal.cold_nonce``): signers refuse it at any other (``signer.ledger``). If another
transaction used that nonce, it is cancelled with that reason, for the backend to request it again.

A customer payout goes into the file with what signers check it by (``signer.payouts``): its customer and
destination kind, the backend's signed request as stored at intake, for an address-book payout the signed
request that added the entry (the entry live when the payout was requested), and the operators' signed
decisions if it was held. Each transfer is put through the signers' own checks first
(``signer.review.withdrawal_refusal``, then ``signer.ledger.BatchRoom``); one they would refuse waits, with
the reason, instead of spoiling the batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from eth_utils.crypto import keccak
from nacl.signing import SigningKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.chain import safe as safe_contract
from custody.chain.ethereum import EthereumNode
from custody.errors import (
    BatchRefused,
    NoColdWallet,
    NotFound,
    NothingToExport,
)
from custody.ledger import audit, freeze
from custody.ledger.policy import PolicyCache
from custody.ledger.states import State
from custody.ledger.transitions import move
from custody.store.db import Store
from custody.store.models import AddressBookEntry, Approval, Batch, ColdWallet, Withdrawal
from policies.errors import CustodyError
from policies.evaluate import static_failures
from policies.loader import Reader
from policies.model import Policy
from signer.apirequest import SignedRequest, address_body
from signer.batchfile import BatchWithdrawal, parse_request, withdrawal_problem, write_batch_file
from signer.decisions import Decision
from signer.ledger import BatchRoom
from signer.payouts import check_withdrawal
from signer.review import assemble, withdrawal_refusal


class BatchState(StrEnum):
    """A batch's state (``Batch.state``), as drawn above; the value is what the database and the API hold."""

    EXPORTED = "exported"
    EXECUTING = "executing"
    EXECUTED = "executed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    STALE = "stale"


OPEN = (BatchState.EXPORTED, BatchState.EXECUTING)
DEFAULT_EXPIRY = 24 * 3600
MAX_PER_BATCH = 100
EXECUTION_SUCCESS = "0x" + keccak(text="ExecutionSuccess(bytes32,uint256)").hex()


# -- the cold wallet ---------------------------------------------------------------------------------------
def cold_wallet(s: Session, *, lock: bool = False) -> ColdWallet:
    """The cold wallet; with ``lock``, its row is held until the transaction ends, so that two exports on
    PostgreSQL replicas cannot both choose the same free Safe nonce (SQLite writers are serialised anyway)."""
    query = select(ColdWallet).limit(1)
    row = s.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if row is None or row.owners is None or row.multisend is None:
        raise NoColdWallet("there is no cold wallet yet: create one with `custody cold create`")
    return row


def owners_of(row: ColdWallet) -> list[str]:
    return list(json.loads(row.owners or "[]"))


# -- export ------------------------------------------------------------------------------------------------
@dataclass
class Exported:
    batch_id: str
    path: Path
    safe_nonce: int
    safe_tx_hash: str
    withdrawals: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (withdrawal id, why)


def export(
    store: Store,
    node: EthereumNode,
    identity: SigningKey,
    out_dir: Path,
    now: int,
    *,
    limit: int = MAX_PER_BATCH,
    expires_in: int = DEFAULT_EXPIRY,
) -> Exported:
    """Gather eligible ``queued_cold`` withdrawals into one batch file, signed by the daemon, in ``out_dir``."""
    if not 1 <= limit <= MAX_PER_BATCH:
        raise BatchRefused(f"a batch holds 1 to {MAX_PER_BATCH} withdrawals")
    with store.read() as s:
        freeze.refuse_if_frozen(s, "exporting a batch")  # and again under the lock below
    reconcile(store, node, now)
    with store.read() as s:
        wallet = cold_wallet(s)
    onchain = safe_contract.nonce(node, wallet.address)
    out_dir.mkdir(parents=True, exist_ok=True)
    with store.transaction() as s:
        wallet = cold_wallet(s, lock=True)
        freeze.refuse_if_frozen(s, "exporting a batch")
        active = PolicyCache().get(s)
        expire_due(s, now)
        held = set(s.execute(select(Batch.safe_nonce).where(Batch.state.in_(OPEN))).scalars())
        nonce = onchain
        while nonce in held:
            nonce += 1
        # Withdrawals of a bitcoin asset are paid by the Bitcoin cold wallet (custody.cold.btcbatches), never here.
        bitcoin = [symbol for symbol, rule in active.policy.assets.items() if rule.chain == "bitcoin"]
        query = (
            select(Withdrawal)
            .where(Withdrawal.state == State.QUEUED_COLD, Withdrawal.asset.not_in(bitcoin))
            .order_by(Withdrawal.seq)
        )
        if store.is_postgres:
            query = query.with_for_update(skip_locked=True)
        chosen: list[tuple[Withdrawal, BatchWithdrawal]] = []
        skipped: list[tuple[str, str]] = []
        room = BatchRoom(active.policy)
        if expires_in > active.policy.batches.max_lifetime:
            raise BatchRefused(
                f"a batch may live at most {active.policy.batches.max_lifetime} s under the policy (signers refuse "
                "longer ones)"
            )
        for w in s.execute(query).scalars():
            if len(chosen) == limit:
                break
            if w.cold_nonce is not None and w.cold_nonce != nonce:
                if w.cold_nonce < onchain:
                    # Exported at a nonce another transaction has used: signers who signed it there refuse it
                    # at any other nonce (withdrawal_already_signed), so it can never be paid as it is.
                    move(
                        s,
                        w,
                        State.CANCELLED,
                        now,
                        by="batch-export",
                        reason=f"its batch's Safe nonce {w.cold_nonce} was used by another transaction; signers "
                        "will not sign it at another nonce: request it again",
                    )
                continue  # it waits for the batch at its own nonce
            item, why = batch_item(s, w, active.policy, now)
            why = why or withdrawal_problem(item) or withdrawal_refusal(active.policy, item, now)
            if why is None:
                why = room.take(item, check_withdrawal(active.policy, item, now))
            if why is None:
                chosen.append((w, item))
            else:
                skipped.append((w.id, why))
        if not chosen and not _nonce_to_cancel(s, nonce):
            raise NothingToExport(
                "nothing to export: no queued cold withdrawal that the policy allows"
                + (f" ({len(skipped)} skipped)" if skipped else ""),
            )
        doc = assemble(
            batch_id=str(uuid.uuid4()),
            chain_id=wallet.chain_id,
            safe=wallet.address,
            safe_nonce=nonce,
            multisend=wallet.multisend or "",
            policy_version=active.version,
            policy_hash=active.hash,
            created_at=now,
            expires_at=now + expires_in,
            withdrawals=[item for _, item in chosen],
            policy=active.policy,
        )
        raw = write_batch_file(doc, identity)
        path = out_dir / f"batch-{nonce}-{doc.id[:8]}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(raw)
        s.add(
            Batch(
                id=doc.id,
                safe=doc.safe,
                safe_nonce=nonce,
                safe_tx_hash="0x" + doc.safe_tx_hash.hex(),
                state=BatchState.EXPORTED,
                raw=raw,
                policy_version=active.version,
                withdrawals=len(chosen),
                created_at=now,
                expires_at=doc.expires_at,
                updated_at=now,
            )
        )
        s.flush()
        for w, _ in chosen:
            w.batch_id, w.cold_nonce = doc.id, nonce
            move(s, w, State.BATCHED, now, by="batch-export", batch=doc.id, safe_nonce=nonce)
        audit.append(
            s,
            now,
            "batch.exported",
            doc.id,
            {
                "safe": doc.safe,
                "safe_nonce": nonce,
                "safe_tx_hash": "0x" + doc.safe_tx_hash.hex(),
                "withdrawals": [w.id for w, _ in chosen],
                "expires_at": doc.expires_at,
                "skipped": [wid for wid, _ in skipped],
            },
        )
    os.replace(tmp, path)
    return Exported(doc.id, path, nonce, "0x" + doc.safe_tx_hash.hex(), len(chosen), skipped)


def batch_item(s: Session, w: Withdrawal, policy: Policy, now: int) -> tuple[BatchWithdrawal, str | None]:
    """``w`` as a batch lists it, with a customer payout's proofs from the database; and why it cannot go, if a
    stored proof does not even parse. The label is the whitelist's for a destination the whitelist lets
    through now, else the address-book entry's as the backend signed it, else empty (as signers expect)."""
    rule = policy.assets.get(w.asset)
    entry = policy.whitelist.get(w.destination)
    failures = static_failures(policy, w.asset, w.amount, w.destination, now)
    whitelisted = entry is not None and not any(r.rule == "whitelist" for r in failures)
    label = entry.label if entry is not None and (whitelisted or w.customer is None) else ""
    item = BatchWithdrawal(
        id=w.id,
        asset=w.asset,
        amount=w.amount,
        decimals=w.decimals,
        token=rule.contract if rule else None,
        destination=w.destination,
        label=label,
    )
    if w.customer is None:
        return item, None
    kind = w.destination_kind or "whitelist"
    try:
        request = None if w.request is None else _stored_request(w.request)
        book = _book_request(s, w) if kind == "address_book" else None
    except (CustodyError, ValueError) as exc:
        return item, f"a stored signed request does not parse: {getattr(exc, 'message', exc)}"
    if book is not None and not label:
        with contextlib.suppress(ValueError):  # signers refuse it, with the reason (book_request_invalid)
            label = address_body(book).label
    approvals = s.execute(select(Approval).where(Approval.withdrawal_id == w.id).order_by(Approval.operator)).scalars()
    decisions = tuple(Decision(a.operator, a.decision, a.reason, a.at, bytes.fromhex(a.signature)) for a in approvals)
    return (
        BatchWithdrawal(
            id=w.id,
            asset=w.asset,
            amount=w.amount,
            decimals=w.decimals,
            token=item.token,
            destination=w.destination,
            label=label,
            customer=w.customer,
            kind=kind,
            request=request,
            book_request=book,
            approvals=decisions,
        ),
        None,
    )


def _stored_request(text: str) -> SignedRequest:
    """A request as intake stored it (``signer.apirequest.SignedRequest.to_json``), read as a signer reads it."""
    return parse_request(Reader(human=False), json.loads(text), "request")


def _book_request(s: Session, w: Withdrawal) -> SignedRequest | None:
    """The signed request that added the customer's address-book entry that was live when ``w`` was requested."""
    entry = s.execute(
        select(AddressBookEntry)
        .where(
            AddressBookEntry.customer == w.customer,
            AddressBookEntry.asset == w.asset,
            AddressBookEntry.address == w.destination,
            AddressBookEntry.added_at <= w.created_at,
            (AddressBookEntry.removed_at.is_(None)) | (AddressBookEntry.removed_at > w.created_at),
        )
        .order_by(AddressBookEntry.added_at.desc(), AddressBookEntry.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if entry is None or entry.request is None:
        return None
    return _stored_request(entry.request)


def _nonce_to_cancel(s: Session, nonce: int) -> bool:
    """Whether an expired or cancelled batch left this nonce behind: then an empty batch must use it up."""
    return (
        s.execute(
            select(Batch.id)
            .where(Batch.safe_nonce == nonce, Batch.state.in_((BatchState.EXPIRED, BatchState.CANCELLED)))
            .limit(1)
        ).first()
        is not None
    )


# -- expiry, cancellation, reconciliation with the chain ---------------------------------------------------
def release(s: Session, batch: Batch, state: BatchState, now: int, reason: str) -> None:
    """Close an unexecuted batch and put its withdrawals back in the cold queue."""
    for w in s.execute(
        select(Withdrawal).where(Withdrawal.batch_id == batch.id, Withdrawal.state == State.BATCHED).with_for_update()
    ).scalars():
        w.batch_id = None
        move(s, w, State.QUEUED_COLD, now, by="batch-" + state, batch=batch.id, reason=reason)
    audit.append(s, now, f"batch.{state}", batch.id, {"from": batch.state, "reason": reason})
    batch.state, batch.updated_at = state, now


def expire_due(s: Session, now: int) -> int:
    due = list(
        s.execute(
            select(Batch).where(Batch.state == BatchState.EXPORTED, Batch.expires_at <= now).with_for_update()
        ).scalars()
    )
    for batch in due:
        release(s, batch, BatchState.EXPIRED, now, "expired before a quorum of signatures was imported")
    return len(due)


def housekeeping(store: Store, node: EthereumNode, now: int) -> bool:
    """What the worker does for batches on every pass: release expired ones and notice batches whose Safe
    nonce the chain has used. True if it changed anything."""
    with store.read() as s:
        due = s.execute(
            select(Batch.id).where(Batch.state == BatchState.EXPORTED, Batch.expires_at <= now).limit(1)
        ).first()
    expired = 0
    if due is not None:
        with store.transaction() as s:
            expired = expire_due(s, now)
    return bool(expired) | reconcile(store, node, now)


def cancel(store: Store, batch_id: str, reason: str, now: int) -> None:
    with store.transaction() as s:
        batch = s.get(Batch, batch_id, with_for_update=True)
        if batch is None:
            raise NotFound(f"no batch {batch_id}")
        if batch.state not in (BatchState.EXPORTED, BatchState.STALE):
            raise BatchRefused(f"batch {batch_id} is {batch.state}; only an exported or stale batch can be cancelled")
        release(s, batch, BatchState.CANCELLED, now, reason)


def reconcile(store: Store, node: EthereumNode, now: int) -> bool:
    """Exported batches whose Safe nonce the chain has used: executed by someone holding the signatures (then
    settle them), or overtaken by another transaction at that nonce (stale: they can never execute).
    True if any batch changed."""
    with store.read() as s:
        waiting = list(s.execute(select(Batch).where(Batch.state == BatchState.EXPORTED)).scalars())
    if not waiting:
        return False
    onchain = safe_contract.nonce(node, waiting[0].safe)
    changed = False
    for batch in waiting:
        if batch.safe_nonce >= onchain:
            continue
        blocks = node.logs(batch.safe, [EXECUTION_SUCCESS, batch.safe_tx_hash])
        with store.transaction() as s:
            row = s.get_one(Batch, batch.id, with_for_update=True)
            if row.state != BatchState.EXPORTED:
                continue
            if blocks:
                audit.append(s, now, "batch.executed_elsewhere", row.id, {"block": blocks[0]})
                for w in members(s, row.id, State.BATCHED):
                    move(s, w, State.SIGNED, now, by="batch-reconcile", batch=row.id)
                    move(s, w, State.BROADCAST, now, by="batch-reconcile", batch=row.id)
                row.state = BatchState.EXECUTING
                settle(s, row.id, None, True, blocks[0], now)
            else:
                audit.append(s, now, "batch.stale", row.id, {"safe_nonce": row.safe_nonce, "onchain_nonce": onchain})
                row.state, row.updated_at = BatchState.STALE, now
            changed = True
    return changed


def members(s: Session, batch_id: str, state: State) -> list[Withdrawal]:
    """The batch's withdrawals in ``state``, locked, in intake order."""
    return list(
        s.execute(
            select(Withdrawal)
            .where(Withdrawal.batch_id == batch_id, Withdrawal.state == state)
            .order_by(Withdrawal.seq)
            .with_for_update()
        ).scalars()
    )


def broadcast(s: Session, batch_id: str, tx_hash: str, now: int) -> None:
    """The execution was sent: its withdrawals are broadcast."""
    for w in members(s, batch_id, State.SIGNED):
        move(s, w, State.BROADCAST, now, by="batch-execute", batch=batch_id, tx_hash=tx_hash)


def settle(s: Session, batch_id: str, tx_hash: str | None, success: bool, block: int, now: int) -> None:
    """The execution is deep enough: every withdrawal of the batch is confirmed, or all failed together."""
    batch = s.get_one(Batch, batch_id, with_for_update=True)
    if batch.state != BatchState.EXECUTING:
        return
    for w in members(s, batch_id, State.SIGNED):  # sent by a replica that crashed before recording it
        move(s, w, State.BROADCAST, now, by="batch-execute", batch=batch_id, tx_hash=tx_hash)
    for w in members(s, batch_id, State.BROADCAST):
        w.tx_hash = tx_hash
        if success:
            move(s, w, State.CONFIRMED, now, by="batch-execute", batch=batch_id, tx_hash=tx_hash, block=block)
        else:
            w.failure = f"batch execution reverted in block {block}"
            move(s, w, State.FAILED, now, by="batch-execute", batch=batch_id, reason=w.failure, block=block)
    batch.state, batch.updated_at = (BatchState.EXECUTED if success else BatchState.FAILED), now
    batch.tx_hash = tx_hash or batch.tx_hash
    audit.append(s, now, f"batch.{batch.state}", batch_id, {"tx_hash": tx_hash, "block": block})
