"""The signer's memory of what it signed, and the rules it enforces from that memory alone.

A compromised online host can write any batch file and sign it with the daemon's key. What stops it from
paying a withdrawal twice, stockpiling signatures for far-future nonces, or draining the Safe in many
"small" batches is this ledger: an append-only, hash-chained file in the signer's state directory,
``<state>/ledger.jsonl``, one canonical JSON object per line:

    {"seq": n, "prev": "<64 hex: the previous entry's hash, zeros for the first>", "at": <signer's unix s>,
     "batch_id": "<uuid>", "safe": "0x…", "safe_nonce": 7, "safe_tx_hash": "0x…",
     "transfers": [{"id": "<withdrawal uuid>", "asset": "ETH", "amount": "<base units>", "destination": "0x…",
                    "hot": false,
                    # a customer payout only, each key only when set (older lines keep their bytes):
                    "customer": "<customer id>", "kind": "address_book" | "unlisted",
                    "request": {"backend": "<public key hex>", "idempotency_key": "<key>"}}, …],
     "hash": "<SHA-256 of the canonical entry without 'hash'>"}

``kind`` is what this signer found the destination to be (``signer.payouts``; absent: the treasury whitelist),
``request`` the backend request it verified for the payout.

A Bitcoin batch has an entry of its own shape in the same chain (``"chain": "bitcoin"``, the wallet, txid,
outpoints spent and the batch it fee-bumps); its rules are ``signer.btcledger``'s, and it shares with the Safe's
entries the backend requests paid and the windows' arithmetic (``check_requests``, ``check_windows``).

``check`` refuses, before anything is signed (policy rules from the newest verified bundle, times from this
machine's clock):

- an expired batch (``batch_expired``); a batch dated more than ``batches.max_future`` ahead of the clock,
  valid for longer than ``batches.max_lifetime``, or expiring before it was created (``batch_time_invalid``);
- a Safe nonce more than ``batches.max_nonce_gap`` above the highest nonce signed, or above that gap from 0 when
  nothing was signed yet (``batch_nonce_too_far``);
- a withdrawal id already signed at another Safe nonce (``withdrawal_already_signed``): two executable
  transactions would pay it twice. The same id at the same nonce is a re-export after expiry (only one of
  the two transactions can ever execute), but only with the same asset, amount and destination
  (``withdrawal_changed``): otherwise a 1-wei "anchor" could be re-exported as 50 ETH that no window counts;
- a backend request (backend, idempotency key) signed before for another withdrawal id, on any Safe, or
  carried by two withdrawals of this batch (``request_replayed``): the backend asked for one payment;
- per asset and per window of the policy, this batch plus every other withdrawal the ledger signed within the
  window over the limit (``batch_over_window``); each withdrawal id counts once;
- per asset and per window of its ``unlisted`` limits, the same over the payouts found unlisted
  (``unlisted_over_window``);
- per asset, transfers to a hot wallet (a whitelist entry marked ``hot``, one per chain) over ``hot_topup`` in
  its window, this batch included (``batch_topup_over_limit``).

Signing the same SafeTx for the same withdrawals again (a second signature file) is allowed and is recorded
once; the same SafeTx listed under other withdrawal ids is recorded again, so those ids are bound too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from policies.canonical import canonical_bytes
from policies.decision import Destination
from policies.model import Policy, Window
from policies.text import when
from policies.units import format_amount
from signer.batchfile import Batch, BatchWithdrawal
from signer.errors import (
    BatchExpired,
    BatchNonceTooFar,
    BatchOverWindow,
    BatchTimeInvalid,
    LedgerDamaged,
    RequestReplayed,
    TopUpOverLimit,
    UnlistedOverWindow,
    WithdrawalAlreadySigned,
    WithdrawalChanged,
)
from signer.payouts import Payout, check_withdrawal

FILE = "ledger.jsonl"
ZERO_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class Transfer:
    id: str
    asset: str
    amount: int
    destination: str
    hot: bool
    kind: str | None = None  # "address_book" | "unlisted" as this signer found it; None: the treasury whitelist
    customer: str | None = None
    # (backend's public key in hex, idempotency key) of the verified request: the key, not the name, which is
    # not signed and which a later bundle may change
    request: tuple[str, str] | None = None

    @property
    def payment(self) -> tuple[str, int, str, tuple[str, str] | None]:
        """What moves, and on whose request: a re-export must repeat it exactly (``hot`` and ``kind`` follow the
        policy of the day)."""
        return self.asset, self.amount, self.destination, self.request

    @property
    def unlisted(self) -> bool:
        return self.kind == Destination.UNLISTED

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "asset": self.asset,
            "amount": str(self.amount),
            "destination": self.destination,
            "hot": self.hot,
        }
        if self.customer is not None:
            out["customer"] = self.customer
        if self.kind is not None:
            out["kind"] = self.kind
        if self.request is not None:
            out["request"] = {"backend": self.request[0], "idempotency_key": self.request[1]}
        return out

    @classmethod
    def from_json(cls, t: dict[str, Any]) -> Transfer:
        request = t.get("request")
        return cls(
            t["id"],
            t["asset"],
            int(t["amount"]),
            t["destination"],
            bool(t["hot"]),
            t.get("kind"),
            t.get("customer"),
            None if request is None else (request["backend"], request["idempotency_key"]),
        )


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    prev: str
    at: int
    batch_id: str
    safe: str
    safe_nonce: int
    safe_tx_hash: str
    transfers: tuple[Transfer, ...]
    # A Bitcoin entry (``signer.btcledger``): ``safe`` holds the wallet's id, ``safe_tx_hash`` the txid, and it
    # records the outpoints it spends and the batch it fee-bumps; its line has another shape (module docstring).
    chain: str = "ethereum"
    inputs: tuple[str, ...] = ()
    replaces: str | None = None

    def body(self) -> dict[str, Any]:
        if self.chain == "bitcoin":
            return {
                "seq": self.seq,
                "prev": self.prev,
                "at": self.at,
                "batch_id": self.batch_id,
                "chain": self.chain,
                "wallet": self.safe,
                "txid": self.safe_tx_hash,
                "inputs": list(self.inputs),
                "replaces": self.replaces,
                "transfers": [t.body() for t in self.transfers],
            }
        return {
            "seq": self.seq,
            "prev": self.prev,
            "at": self.at,
            "batch_id": self.batch_id,
            "safe": self.safe,
            "safe_nonce": self.safe_nonce,
            "safe_tx_hash": self.safe_tx_hash,
            "transfers": [t.body() for t in self.transfers],
        }

    @property
    def hash(self) -> str:
        return hashlib.sha256(canonical_bytes(self.body())).hexdigest()

    def line(self) -> bytes:
        return canonical_bytes(self.body() | {"hash": self.hash}) + b"\n"


def transfers_of(batch: Batch, policy: Policy, now: int) -> tuple[Transfer, ...]:
    """What the batch pays, as the ledger records it: each transfer checked again (``signer.payouts``) for
    what its destination is and which backend request it pays."""
    return tuple(
        transfer_of(w, check_withdrawal(policy, w, now), policy.is_hot(w.destination)) for w in batch.withdrawals
    )


def transfer_of(w: BatchWithdrawal, payout: Payout, hot: bool) -> Transfer:
    kind = None if payout.kind == Destination.WHITELIST else str(payout.kind)
    return Transfer(w.id, w.asset, w.amount, w.destination, hot, kind, w.customer, payout.request)


# -- reading and writing -------------------------------------------------------------------------------
def read(state: Path) -> list[Entry]:
    """Every entry, after checking the chain: a ledger edited, truncated in the middle or reordered is refused."""
    path = state / FILE
    if not path.exists():
        return []
    entries: list[Entry] = []
    prev = ZERO_HASH
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            doc = json.loads(raw)
            entry = _entry(doc)
            ok = entry.line() == raw + b"\n" and doc["hash"] == entry.hash
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok or entry.seq != n or entry.prev != prev:
            raise LedgerDamaged(
                f"{path} line {n} does not verify: the ledger of signed batches was altered; restore it from the "
                "backup of this signer's state before signing anything"
            )
        entries.append(entry)
        prev = entry.hash
    return entries


def _entry(doc: dict[str, Any]) -> Entry:
    transfers = tuple(Transfer.from_json(t) for t in doc["transfers"])
    if doc.get("chain") == "bitcoin":
        return Entry(
            doc["seq"],
            doc["prev"],
            doc["at"],
            doc["batch_id"],
            doc["wallet"],
            0,
            doc["txid"],
            transfers,
            "bitcoin",
            tuple(doc["inputs"]),
            doc["replaces"],
        )
    return Entry(
        seq=doc["seq"],
        prev=doc["prev"],
        at=doc["at"],
        batch_id=doc["batch_id"],
        safe=doc["safe"],
        safe_nonce=doc["safe_nonce"],
        safe_tx_hash=doc["safe_tx_hash"],
        transfers=transfers,
    )


def write_entry(state: Path, entry: Entry) -> None:
    """Append ``entry`` durably (its seq and prev already set from the entries read under the lock)."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / FILE, "ab") as f:
        f.write(entry.line())
        f.flush()
        os.fsync(f.fileno())


def append(state: Path, entries: Sequence[Entry], batch: Batch, policy: Policy, now: int) -> Entry | None:
    """Record ``batch`` as signed (before its signature file is written); None if it was recorded already."""
    tx_hash = "0x" + batch.safe_tx_hash.hex()
    transfers = transfers_of(batch, policy, now)
    ids = [(t.id, t.payment) for t in transfers]
    if any(
        e.safe_tx_hash == tx_hash and e.safe == batch.safe and [(t.id, t.payment) for t in e.transfers] == ids
        for e in entries
    ):
        return None
    entry = Entry(
        seq=len(entries) + 1,
        prev=entries[-1].hash if entries else ZERO_HASH,
        at=now,
        batch_id=batch.id,
        safe=batch.safe,
        safe_nonce=batch.safe_nonce,
        safe_tx_hash=tx_hash,
        transfers=transfers,
    )
    write_entry(state, entry)
    return entry


def record(state: Path, batch: Batch, policy: Policy, now: int) -> Entry | None:
    """Check ``batch`` once more at the moment of signing and record it, under an exclusive lock on the ledger,
    so two signing processes on one state directory cannot both pass the checks on the same history."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / (FILE + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = read(state)
        check(batch, policy, entries, now)
        return append(state, entries, batch, policy, now)


# -- the rules -----------------------------------------------------------------------------------------
class Dated(Protocol):
    """A batch of either chain, as far as its dates go."""

    @property
    def created_at(self) -> int: ...

    @property
    def expires_at(self) -> int: ...


def check_times(batch: Dated, policy: Policy, now: int) -> None:
    """The batch's dates against this machine's clock: not expired, not from the future, not long-lived."""
    if now >= batch.expires_at:
        raise BatchExpired(f"the batch expired at {when(batch.expires_at)}; ask for a new export")
    rules = policy.batches
    if batch.created_at > now + rules.max_future:
        raise BatchTimeInvalid(
            f"the batch is dated {batch.created_at - now} s ahead of this machine's clock (at most "
            f"{rules.max_future} s): check this machine's clock, or ask for a new export"
        )
    if batch.expires_at <= batch.created_at:
        raise BatchTimeInvalid("the batch expires before it was created")
    if batch.expires_at - batch.created_at > rules.max_lifetime:
        raise BatchTimeInvalid(
            f"the batch is valid for {batch.expires_at - batch.created_at} s; the policy allows at most "
            f"{rules.max_lifetime} s, so that signatures cannot be stockpiled"
        )


def check(batch: Batch, policy: Policy, entries: Sequence[Entry], now: int) -> None:
    """Every rule the ledger enforces, for ``batch`` about to be signed at ``now`` (see the module docstring)."""
    check_times(batch, policy, now)
    # Every entry counts, the same SafeTx included: its withdrawals are this batch's own ids (left out of
    # "earlier" below), and the same SafeTx under other ids binds those ids too (counted twice: never less).
    history = [e for e in entries if e.safe == batch.safe]
    highest = max((e.safe_nonce for e in history), default=0)
    gap = policy.batches.max_nonce_gap
    if batch.safe_nonce > highest + gap:
        raise BatchNonceTooFar(
            f"Safe nonce {batch.safe_nonce} is more than {gap} above the highest this signer has signed ({highest})"
            if history
            else f"Safe nonce {batch.safe_nonce} is more than {gap} above 0, and this signer has signed nothing yet"
        )
    signed_at: dict[str, tuple[int, Transfer]] = {}
    for e in history:
        for t in e.transfers:
            signed_at.setdefault(t.id, (e.safe_nonce, t))
    mine = transfers_of(batch, policy, now)
    for t in mine:
        if t.id not in signed_at:
            continue
        nonce, before = signed_at[t.id]
        if nonce != batch.safe_nonce:
            raise WithdrawalAlreadySigned(
                f"withdrawal {t.id} was signed before at Safe nonce {nonce}; signing it at nonce "
                f"{batch.safe_nonce} would make two transactions that each pay it"
            )
        if before.payment != t.payment:
            raise WithdrawalChanged(
                f"withdrawal {t.id} was signed before at this nonce as {before.amount} base units of {before.asset} "
                f"to {before.destination}; a re-export must pay exactly that"
            )
    check_requests(mine, entries)
    check_windows(mine, history, policy, now)


def check_windows(mine: Sequence[Transfer], history: Sequence[Entry], policy: Policy, now: int) -> None:
    """Velocity, unlisted and top-up windows: ``mine`` (the batch's transfers) with every other withdrawal
    signed from the same wallet (``history``) within each window."""
    ids = {t.id for t in mine}
    earlier = _distinct(t for e in history for t in e.transfers if t.id not in ids)
    times = _signed_times(history)
    for asset in sorted({t.asset for t in mine}):
        rule = policy.assets[asset]
        here = sum(t.amount for t in mine if t.asset == asset)
        for window in rule.windows:
            used = _used(earlier, times, asset, window, now, _any)
            if used + here > window.limit:
                raise BatchOverWindow(
                    f"{asset}: this batch's {_units(here, rule.decimals)} and the "
                    f"{_units(used, rule.decimals)} this signer signed in the last {window.seconds} s make more "
                    f"than the policy's limit of {_units(window.limit, rule.decimals)} {asset} per {window.seconds} s"
                )
        unlisted = sum(t.amount for t in mine if t.asset == asset and t.unlisted)
        for window in rule.unlisted.windows if unlisted and rule.unlisted is not None else ():
            used = _used(earlier, times, asset, window, now, _unlisted)
            if used + unlisted > window.limit:
                raise UnlistedOverWindow(
                    f"{asset}: this batch's {_units(unlisted, rule.decimals)} {asset} to unlisted addresses and the "
                    f"{_units(used, rule.decimals)} {asset} this signer signed to unlisted addresses in the last "
                    f"{window.seconds} s make more than the policy's unlisted limit of "
                    f"{_units(window.limit, rule.decimals)} {asset} per {window.seconds} s"
                )
        topup = sum(t.amount for t in mine if t.asset == asset and t.hot)
        if topup:
            cap = rule.hot_topup
            if cap is None:  # the loader requires a cap for every asset the hot entry receives
                raise TopUpOverLimit(f"{asset}: the policy states no top-up limit for the hot wallet")
            used = _used(earlier, times, asset, cap, now, _hot)
            if used + topup > cap.limit:
                raise TopUpOverLimit(
                    f"{asset}: top-ups of the hot wallet would reach {_units(used + topup, rule.decimals)} in "
                    f"{cap.seconds} s; the policy allows {_units(cap.limit, rule.decimals)} {asset}"
                )


def check_requests(mine: Sequence[Transfer], entries: Sequence[Entry]) -> None:
    """One payment per backend request, whatever withdrawal id the host gives it and whichever Safe pays it.
    The same id with the same request is a re-export (its nonce is checked above)."""
    paid: dict[tuple[str, str], str] = {}
    for e in entries:
        for t in e.transfers:
            if t.request is not None:
                paid.setdefault(t.request, t.id)
    for t in mine:
        if t.request is None:
            continue
        before = paid.setdefault(t.request, t.id)
        if before != t.id:
            backend, key = t.request
            raise RequestReplayed(
                f"backend key {backend[:16]}…'s request with idempotency key {key!r} was already signed for withdrawal "
                f"{before}; withdrawal {t.id} would pay it again"
            )


def _any(t: Transfer) -> bool:
    return True


def _unlisted(t: Transfer) -> bool:
    return t.unlisted


def _hot(t: Transfer) -> bool:
    return t.hot


def _distinct(transfers: Iterable[Transfer]) -> dict[str, Transfer]:
    out: dict[str, Transfer] = {}
    for t in transfers:
        out.setdefault(t.id, t)
    return out


def _signed_times(entries: Sequence[Entry]) -> dict[str, int]:
    """When each withdrawal was last signed (a re-export is signed again)."""
    times: dict[str, int] = {}
    for e in entries:
        for t in e.transfers:
            times[t.id] = max(times.get(t.id, e.at), e.at)
    return times


def _used(
    earlier: dict[str, Transfer],
    times: dict[str, int],
    asset: str,
    window: Window,
    now: int,
    counts: Callable[[Transfer], bool],
) -> int:
    return sum(
        t.amount
        for t in earlier.values()
        # no upper bound: a signature dated after this clock's now (a clock set back) still counts
        if t.asset == asset and counts(t) and now - window.seconds < times[t.id]
    )


def _units(value: int, decimals: int) -> str:
    return format_amount(value, decimals)


class BatchRoom:
    """What one batch may hold so that a signer with an empty window signs it: per asset, no more than the
    smallest window's limit, payouts found unlisted within the smallest unlisted window, top-ups of the hot
    wallet within ``hot_topup``, and each backend request once. The exporter fills a batch through it, so it
    never writes a batch the ledger rules refuse on their own."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.totals: dict[str, int] = {}
        self.topups: dict[str, int] = {}
        self.unlisted: dict[str, int] = {}
        self.requests: set[tuple[str, str]] = set()

    def take(self, w: BatchWithdrawal, payout: Payout | None = None) -> str | None:
        """Count ``w`` in and return None, or say why it waits for a later batch. ``payout`` is what
        ``signer.payouts.check_withdrawal`` found it to be (None: a treasury transfer)."""
        if payout is not None and payout.request is not None and payout.request in self.requests:
            return "its backend request is in this batch already"
        rule = self.policy.assets[w.asset]
        total = self.totals.get(w.asset, 0) + w.amount
        for window in rule.windows:
            if total > window.limit:
                return f"{w.asset}: the batch would pass the limit of {window.limit} base units per {window.seconds} s"
        unlisted = self.unlisted.get(w.asset, 0)
        if payout is not None and payout.kind == Destination.UNLISTED:
            unlisted += w.amount
            for window in rule.unlisted.windows if rule.unlisted is not None else ():
                if unlisted > window.limit:
                    return (
                        f"{w.asset}: the batch would pass the unlisted limit of {window.limit} base units per "
                        f"{window.seconds} s"
                    )
        topup = self.topups.get(w.asset, 0)
        if self.policy.is_hot(w.destination):
            topup += w.amount
            if rule.hot_topup is not None and topup > rule.hot_topup.limit:
                return f"{w.asset}: top-ups of the hot wallet would pass the policy's cap"
        self.totals[w.asset], self.topups[w.asset], self.unlisted[w.asset] = total, topup, unlisted
        if payout is not None and payout.request is not None:
            self.requests.add(payout.request)
        return None
