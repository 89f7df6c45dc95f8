"""The ledger's rules for Bitcoin batches: what this signer signed from the Bitcoin wallet is never signed into
another transaction, except a declared fee bump.

A Bitcoin entry in ``<state>/ledger.jsonl`` (the same hash chain as the Safe's entries, ``signer.ledger``):

    {"seq": n, "prev": "<64 hex>", "at": <signer's unix s>, "batch_id": "<uuid>", "chain": "bitcoin",
     "wallet": "btc:<network>:<descriptor checksum>", "txid": "<64 hex>", "inputs": ["<txid>:<vout>", …],
     "replaces": null | "<batch id>", "transfers": [<as for the Safe>], "hash": "<64 hex>"}

``check`` refuses, before anything is signed:

- an outpoint signed in another batch's transaction (``btc_input_already_signed``), or a withdrawal signed in
  another transaction, Safe or Bitcoin (``withdrawal_already_signed``): two valid transactions could both be
  mined, or both pay it. The exception is a fee bump: the batch declares ``replaces`` = the earlier batch (or
  a bump of it, and so on up the chain), carries exactly its withdrawals (ids, amounts, destinations and
  requests) and spends at least one input of every transaction up that chain (of this wallet), so at most one
  of them can ever be mined;
  anything else that declares ``replaces`` is refused (``btc_replacement_invalid``);
- a batch that was replaced by a fee bump, signed again, or a second, different bump of the same batch
  (``btc_replacement_invalid``): the bump is recorded, so the transaction it replaced stays dead;
- a backend request signed before for another withdrawal (``request_replayed``), and the policy's windows
  over this wallet's history (``batch_over_window`` and the others), as for the Safe.

Signing the same transaction again (a second signature file) is allowed, and recorded once; the same
transaction listed with other withdrawals (other ids or requests for the same outputs) is refused
(``btc_input_already_signed``).
"""

from __future__ import annotations

import fcntl
from collections.abc import Sequence
from pathlib import Path

from policies.model import Policy
from signer.errors import BtcInputAlreadySigned, BtcReplacementInvalid, WithdrawalAlreadySigned
from signer.ledger import (
    FILE,
    ZERO_HASH,
    Entry,
    Transfer,
    check_requests,
    check_times,
    check_windows,
    read,
    transfer_of,
    write_entry,
)
from signer.psbtreview import BtcReview


def wallet_id(network: str, descriptor: str) -> str:
    return f"btc:{network}:{descriptor.rsplit('#', 1)[-1]}"


def transfers(found: BtcReview, policy: Policy) -> tuple[Transfer, ...]:
    return tuple(transfer_of(w, found.payouts[w.id], policy.is_hot(w.destination)) for w in found.batch.withdrawals)


def check(found: BtcReview, policy: Policy, entries: Sequence[Entry], now: int) -> None:
    batch = found.batch
    check_times(batch, policy, now)
    wallet = wallet_id(batch.network, batch.descriptor)
    mine = transfers(found, policy)
    by_id = {e.batch_id: e for e in entries if e.chain == "bitcoin" and e.safe == wallet}
    replaced_by: dict[str, Entry] = {e.replaces: e for e in by_id.values() if e.replaces is not None}
    same_tx = [e for e in by_id.values() if e.safe_tx_hash == found.txid]
    for e in same_tx:
        bump = replaced_by.get(e.batch_id)
        if bump is not None and bump.safe_tx_hash != found.txid:
            raise BtcReplacementInvalid(
                f"transaction {found.txid} (batch {e.batch_id}) was replaced by the fee bump in batch "
                f"{bump.batch_id}; it is never signed again"
            )
    ancestors = _ancestors(batch.replaces, by_id)
    if batch.replaces is not None:
        _check_bump(found, mine, by_id, replaced_by)
    ids = {t.id for t in mine}
    points = set(found.outpoints)
    paid = sorted((t.id, t.payment) for t in mine)
    for e in entries:
        if e.safe_tx_hash == found.txid and e.safe == wallet:
            if sorted((t.id, t.payment) for t in e.transfers) != paid:
                # One transaction pays one set of withdrawals: the same outputs relabelled as other withdrawals
                # would have the signer count both as paid.
                raise BtcInputAlreadySigned(
                    f"transaction {found.txid} was signed before in batch {e.batch_id} for other withdrawals"
                )
            continue  # this very transaction, signed before: a second signature file
        if e.chain == "bitcoin" and e.safe == wallet and e.batch_id in ancestors:
            # What this bump replaces, directly or up the chain: skipped only if the two transactions spend a
            # same coin, so at most one of them is ever mined (a bump of a bump could otherwise drop the coins
            # of the first transaction, and both would pay). Only this wallet's entries: a Safe batch's id
            # named in ``replaces`` excuses nothing.
            if not points & set(e.inputs):
                raise BtcReplacementInvalid(
                    f"this fee bump spends none of the inputs of transaction {e.safe_tx_hash} (batch {e.batch_id}), "
                    "which it replaces: both could be mined"
                )
            continue
        shared = sorted(points & set(e.inputs)) if e.safe == wallet else []
        if shared:
            raise BtcInputAlreadySigned(
                f"outpoint {shared[0]} was signed before in batch {e.batch_id} (transaction {e.safe_tx_hash}); "
                "a second transaction spending it is signed only as a declared fee bump of that batch"
            )
        again = sorted(ids & {t.id for t in e.transfers})
        if again:
            raise WithdrawalAlreadySigned(
                f"withdrawal {again[0]} was signed before in batch {e.batch_id}; signing it into another "
                "transaction could pay it twice"
            )
    check_requests(mine, entries)
    check_windows(mine, [e for e in entries if e.safe == wallet], policy, now)


def _ancestors(replaces: str | None, by_id: dict[str, Entry]) -> set[str]:
    """The batch ids this batch replaces, directly or through earlier bumps."""
    found: set[str] = set()
    while replaces is not None and replaces not in found:
        found.add(replaces)
        entry = by_id.get(replaces)
        replaces = None if entry is None else entry.replaces
    return found


def _check_bump(
    found: BtcReview, mine: Sequence[Transfer], by_id: dict[str, Entry], replaced_by: dict[str, Entry]
) -> None:
    batch = found.batch
    old = by_id.get(batch.replaces or "")
    if old is None:
        return  # this signer did not sign the original: to it, the bump is a batch like any other
    bump = replaced_by.get(old.batch_id)
    if bump is not None and bump.safe_tx_hash != found.txid:
        raise BtcReplacementInvalid(
            f"batch {old.batch_id} was already replaced by the fee bump in batch {bump.batch_id}; bump that one"
        )
    if sorted((t.id, t.payment) for t in mine) != sorted((t.id, t.payment) for t in old.transfers):
        raise BtcReplacementInvalid(
            f"a fee bump of batch {old.batch_id} must carry exactly its withdrawals, with the same amounts and "
            "destinations"
        )
    if not set(found.outpoints) & set(old.inputs):
        raise BtcReplacementInvalid(
            f"a fee bump of batch {old.batch_id} spends at least one of its inputs (otherwise both could be mined)"
        )


def record(state: Path, found: BtcReview, policy: Policy, now: int) -> Entry | None:
    """Check once more under the ledger's exclusive lock and record the batch as signed, before the signature
    exists; None if this very transaction for the same withdrawals was recorded already."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / (FILE + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = read(state)
        check(found, policy, entries, now)
        batch = found.batch
        wallet = wallet_id(batch.network, batch.descriptor)
        mine = transfers(found, policy)
        ids = sorted((t.id, t.payment) for t in mine)
        if any(
            e.safe == wallet and e.safe_tx_hash == found.txid and sorted((t.id, t.payment) for t in e.transfers) == ids
            for e in entries
        ):
            return None
        entry = Entry(
            seq=len(entries) + 1,
            prev=entries[-1].hash if entries else ZERO_HASH,
            at=now,
            batch_id=batch.id,
            safe=wallet,
            safe_nonce=0,
            safe_tx_hash=found.txid,
            transfers=mine,
            chain="bitcoin",
            inputs=found.outpoints,
            replaces=batch.replaces,
        )
        write_entry(state, entry)
        return entry
