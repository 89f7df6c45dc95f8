"""Customers' address books: the addresses an exchange backend has registered for each of its customers, per
asset, and whether a customer may be paid only to them (address-book-only mode).

A new entry is locked until ``active_at`` (added + the lock, at least the policy's ``customers.address_lock``):
only then may the policy engine treat it as the customer's address. Removal takes effect at once. Every change
is an audit entry in the transaction that makes it, and so a webhook: ``address.added``, ``address.removed``,
``customer.updated``, and ``address.active``, which ``due_announcements`` (run by the scheduler) records once
an entry's lock has passed. An entry is only ever marked removed, never deleted, and at most one entry per
customer, asset and address is live; the writes of one customer are serialised (PostgreSQL: an advisory lock;
SQLite: its one writer), so two identical requests at once add one entry.

Only a key named among the policy's ``[[backends]]``, with that public key, may add entries: the signed
request that added one (kept in ``request``) is what offline signers verify before paying an address-book
destination from the cold wallet. Address books belong to the customer, not to the API key: every key sees
and changes the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import false, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from custody.clock import Clock
from custody.errors import (
    AddressExists,
    InvalidCustomer,
    InvalidField,
    LockTooShort,
    NotABackend,
    NotFound,
    UnknownAsset,
)
from custody.intake.apikeys import Principal, Seen, replayed
from custody.intake.sources import Remember
from custody.ledger import audit
from custody.ledger.policy import PolicyCache
from custody.store.db import Store, advisory_lock
from custody.store.models import AddressBookEntry, ApiKey, Customer
from policies.addresses import destination
from policies.sections import CUSTOMER_ID
from policies.text import label_problem

MAX_LABEL = 128
MAX_LOCK = 366 * 86400  # a longer lock is a mistake (seconds for milliseconds), not a policy


class EntryState(StrEnum):
    LOCKED = "locked"
    ACTIVE = "active"
    REMOVED = "removed"


def check_customer(text: str) -> str:
    if CUSTOMER_ID.fullmatch(text) is None:  # the policy's own rule for customer ids
        raise InvalidCustomer(
            f"{text[:70]!r} is not a customer id (1 to 64 of A-Z a-z 0-9 . _ : @ -, starting with a letter or digit)"
        )
    return text


def check_label(text: str) -> str:
    problem = "must be 1 to 128 characters" if not 1 <= len(text) <= MAX_LABEL else label_problem(text)
    if problem is not None:
        raise InvalidField(f"label: {problem} (labels take letters, digits, spaces and punctuation)")
    return text


def state_of(entry: AddressBookEntry, now: int) -> EntryState:
    if entry.removed_at is not None:
        return EntryState.REMOVED
    return EntryState.ACTIVE if now >= entry.active_at else EntryState.LOCKED


@dataclass(frozen=True)
class NewEntry:
    """A request to add an address, as the client sent it (validated by ``AddressBook.add``)."""

    asset: str
    address: str
    label: str
    lock: int | None = None  # seconds; None: the policy's address_lock


@dataclass(frozen=True)
class Entry:
    """An address-book entry as the API shows it, in its state at ``AddressBook``'s clock."""

    id: int
    customer: str
    asset: str
    address: str
    label: str
    state: EntryState
    added_at: int
    active_at: int
    removed_at: int | None


@dataclass(frozen=True)
class Book:
    """A customer's live entries and mode."""

    customer: str
    address_book_only: bool
    entries: list[Entry]


@dataclass(frozen=True)
class CustomerMode:
    customer: str
    address_book_only: bool
    updated_at: int | None  # None: never set (the default mode)


def view(entry: AddressBookEntry, now: int) -> Entry:
    return Entry(
        id=entry.id,
        customer=entry.customer,
        asset=entry.asset,
        address=entry.address,
        label=entry.label,
        state=state_of(entry, now),
        added_at=entry.added_at,
        active_at=entry.active_at,
        removed_at=entry.removed_at,
    )


def _live(s: Session, customer: str, asset: str, address: str, lock: bool = False) -> AddressBookEntry | None:
    query = select(AddressBookEntry).where(
        AddressBookEntry.customer == customer,
        AddressBookEntry.asset == asset,
        AddressBookEntry.address == address,
        AddressBookEntry.removed_at.is_(None),
    )
    return s.execute(query.with_for_update() if lock else query).scalars().first()


class AddressBook:
    """The address-book use cases, one transaction each. ``remember`` records the nonce of a signed request in
    the transaction that adds its entry, so the request is consumed exactly when the entry exists."""

    def __init__(self, store: Store, policies: PolicyCache, clock: Clock, remember: Remember | None = None) -> None:
        self.store, self.policies, self.clock, self.remember = store, policies, clock, remember

    def add(self, who: Principal, customer: str, new: NewEntry, request: str, seen: Seen | None = None) -> Entry:
        """Add ``new`` to the customer's book, locked for ``new.lock`` seconds (the policy's address_lock if
        None); ``request`` is the signed request, as JSON, kept with the entry. Refused, writing nothing: a
        malformed customer, address or label, an unknown asset, a lock under the policy's, a key that is not a
        backend, or a live entry for the same address and asset."""
        customer, label = check_customer(customer), check_label(new.label)
        if new.lock is not None and not 0 <= new.lock <= MAX_LOCK:
            raise InvalidField(f"lock: must be 0 to {MAX_LOCK} seconds")
        now = self.clock.now()
        try:
            with self.store.transaction() as s:
                if seen is not None and self.remember is not None:
                    verdict = self.remember(s, [seen])[0]
                    if verdict is not None:
                        raise verdict
                policy = self.policies.get(s).policy
                backend = next((b for b in policy.backends if b.name == who.name), None)
                key = s.execute(select(ApiKey.public_key).where(ApiKey.name == who.name)).scalar_one_or_none()
                if backend is None or key is None or key.lower() != backend.key.lower():
                    raise NotABackend(
                        f"API key {who.name!r} is not one of the policy's backends with this public key: only a "
                        "backend may add address-book entries"
                    )
                rule = policy.assets.get(new.asset)
                if rule is None:
                    raise UnknownAsset(f"asset {new.asset[:16]!r} is not known to the active policy")
                # in the canonical form of the asset's chain, as the policy engine compares destinations
                address = destination(rule.chain, rule.network, new.address)
                minimum = policy.customers.address_lock
                lock = minimum if new.lock is None else new.lock
                if lock < minimum:
                    raise LockTooShort(f"lock: {lock} s is shorter than the policy's address_lock ({minimum} s)")
                advisory_lock(s, f"addressbook:{customer}")
                if _live(s, customer, new.asset, address) is not None:
                    raise AddressExists(f"customer {customer!r} has {address} for {new.asset} already")
                entry = AddressBookEntry(
                    customer=customer,
                    asset=new.asset,
                    address=address,
                    label=label,
                    added_at=now,
                    active_at=now + lock,
                    removed_at=None,
                    announced=False,
                    added_by=who.name,
                    request=request,
                )
                s.add(entry)
                s.flush()
                audit.append(
                    s,
                    now,
                    "address.added",
                    customer,
                    {
                        "id": entry.id,
                        "customer": customer,
                        "asset": new.asset,
                        "address": address,
                        "label": label,
                        "added_at": now,
                        "active_at": entry.active_at,
                        "by": who.name,
                    },
                )
        except IntegrityError:  # another replica recorded this signed request's nonce at the same moment
            raise replayed() from None
        return view(entry, now)

    def book(self, customer: str, asset: str | None = None) -> Book:
        """The customer's live entries (of ``asset`` if given), by asset then age, and its mode."""
        customer = check_customer(customer)
        now = self.clock.now()
        query = select(AddressBookEntry).where(
            AddressBookEntry.customer == customer, AddressBookEntry.removed_at.is_(None)
        )
        if asset is not None:
            query = query.where(AddressBookEntry.asset == asset)
        with self.store.read() as s:
            rows = s.execute(query.order_by(AddressBookEntry.asset, AddressBookEntry.id)).scalars().all()
            mode = s.get(Customer, customer)
        return Book(customer, bool(mode and mode.book_only), [view(r, now) for r in rows])

    def remove(self, who: Principal, customer: str, asset: str, address: str) -> Entry:
        """Remove the customer's live entry for ``address`` and ``asset``, at once."""
        customer = check_customer(customer)
        now = self.clock.now()
        with self.store.transaction() as s:
            rule = self.policies.get(s).policy.assets.get(asset)
            if rule is None:
                raise NotFound(f"customer {customer!r} has no {asset[:16]} entry: the active policy has no such asset")
            address = destination(rule.chain, rule.network, address)
            advisory_lock(s, f"addressbook:{customer}")
            entry = _live(s, customer, asset, address, lock=True)
            if entry is None:
                raise NotFound(f"customer {customer!r} has no {asset[:16]} entry for {address}")
            entry.removed_at = now
            audit.append(
                s,
                now,
                "address.removed",
                customer,
                {
                    "id": entry.id,
                    "customer": customer,
                    "asset": entry.asset,
                    "address": address,
                    "removed_at": now,
                    "by": who.name,
                },
            )
        return view(entry, now)

    def set_book_only(self, who: Principal, customer: str, book_only: bool) -> CustomerMode:
        """Put the customer in address-book-only mode (True) or back to the default; recorded only if it
        changes anything."""
        customer = check_customer(customer)
        now = self.clock.now()
        with self.store.transaction() as s:
            advisory_lock(s, f"addressbook:{customer}")
            row = s.get(Customer, customer, with_for_update=True)
            if row is not None and row.book_only == book_only:
                return CustomerMode(customer, book_only, row.updated_at)
            if row is None and not book_only:
                return CustomerMode(customer, False, None)
            if row is None:
                row = Customer(id=customer, book_only=book_only, updated_at=now)
                s.add(row)
            else:
                row.book_only, row.updated_at = book_only, now
            audit.append(
                s,
                now,
                "customer.updated",
                customer,
                {"customer": customer, "address_book_only": book_only, "by": who.name},
            )
        return CustomerMode(customer, book_only, now)


def due_announcements(store: Store, now: int, limit: int = 100) -> int:
    """Record ``address.active`` for live entries whose lock has passed and that were not announced yet (at
    most ``limit``, oldest first); returns how many. Safe to run on every replica at once."""
    query = (
        select(AddressBookEntry)
        .where(
            AddressBookEntry.announced == false(),
            AddressBookEntry.active_at <= now,
            AddressBookEntry.removed_at.is_(None),
        )
        .order_by(AddressBookEntry.active_at, AddressBookEntry.id)
        .limit(limit)
    )
    with store.transaction() as s:
        if store.is_postgres:
            query = query.with_for_update(skip_locked=True)
        due = list(s.execute(query).scalars())
        if not due:
            return 0  # nothing to record: the audit head is left alone
        for entry in due:
            entry.announced = True
        audit.append_all(
            s,
            now,
            [
                (
                    "address.active",
                    e.customer,
                    {
                        "id": e.id,
                        "customer": e.customer,
                        "asset": e.asset,
                        "address": e.address,
                        "active_at": e.active_at,
                    },
                )
                for e in due
            ],
        )
    return len(due)
