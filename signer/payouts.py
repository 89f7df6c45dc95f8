"""One withdrawal of a cold batch against the policy: the static rules, and for a customer payout the proofs
that the exchange backend asked for it (docs/batch-protocol.md, section 3, check 5).

A compromised host can write any withdrawal it likes into a batch and sign the file with the daemon's key.
What it cannot do is sign as the exchange backend or as an operator: their Ed25519 keys are declared in the
quorum-signed policy (``[[backends]]``, ``[[operators]]``) and never reach the host. So a payout to anything
but the treasury whitelist is signed only if it carries the backend's own signed request for exactly that
payout, and the signer judges the destination itself from what those signatures prove:

- **whitelist**: an active treasury whitelist entry for the asset (the static rules, as before);
- **address book**: the withdrawal carries ``book_request``, the backend's signed POST that added this very
  customer's entry for this asset and address, signed at least the entry's lock (the policy's
  ``address_lock``, or the longer ``lock`` the backend asked for) before the payout request;
- **unlisted**: anything else, allowed only within the asset's ``unlisted`` limits.

In this order, the first failure being the refusal:

1. token and decimals are the policy's; asset enabled, destination not denied, amount within the asset's
   per-transfer maximum (``batch_policy_refused``); a transfer without a customer (the treasury's own) must be
   whitelisted, with the whitelist's label (``batch_policy_refused``);
2. a customer payout not on the whitelist carries ``request`` (``request_missing``);
3. every request present is signed by a policy backend of that name (``request_unknown_backend``) and verifies
   with its key (``request_bad_signature``); it is ``POST /v1/withdrawals`` with an idempotency key and a
   strict JSON body whose asset, amount (in the policy's decimals), destination and customer are exactly the
   withdrawal's (``request_mismatch``);
4. a ``book_request`` present is a policy backend's valid signed ``POST /v1/customers/{customer}/addresses``
   for the same customer, asset and address (``book_request_invalid``); one signed less than the lock before
   the payout request proves nothing, and the payout is judged unlisted;
5. the label is the address-book entry's (as signed in ``book_request``), or empty without one
   (``batch_policy_refused``);
6. a customer payout not on the whitelist is above the asset's hot limit (``customer_payout_hot_only``): at or
   below it the daemon pays only from the hot wallet, and a signer cannot see what the hot wallet paid, so a
   request already paid hot could otherwise be paid again from the Safe;
7. judged unlisted: the asset allows unlisted payouts (``unlisted_refused``), and the amount is within their
   per-transfer maximum (``unlisted_over_limit``); their windows are the ledger's (``unlisted_over_window``);
8. every approval present is an ``approve`` signed by the policy operator it names (``approval_invalid``);
   a withdrawal with approvals, or one that a hold rule this signer can judge offline would have held (a
   destination like a denied address; an address-book entry younger than ``holds.young_entry`` at the
   request), needs two distinct operators' approvals (``approvals_missing``).

What the signer cannot see and does not pretend to: whether an address-book entry was removed after the payout
was requested, and the hold rules that need the customer's history (first payout, median, velocity share).
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.addresses import destination
from policies.decision import BookEntry, Context, Destination, Reason, Request
from policies.errors import AddressError, AmountError
from policies.evaluate import static_failures
from policies.holds import check_holds
from policies.model import AssetRule, Policy
from policies.units import format_amount, parse_amount
from signer.apirequest import AddressBody, SignedRequest, address_body, withdrawal_body
from signer.batchfile import BatchWithdrawal
from signer.decisions import APPROVE
from signer.errors import (
    ApprovalInvalid,
    ApprovalsMissing,
    BatchPolicyRefused,
    BookRequestInvalid,
    CustomerPayoutHotOnly,
    RequestBadSignature,
    RequestMismatch,
    RequestMissing,
    RequestUnknownBackend,
    SignerError,
    UnlistedOverLimit,
    UnlistedRefused,
)

# The hold rules a signer judges from the batch alone (the payout request's time stands for the daemon's
# clock at intake); the others need the customer's history, which only the daemon has.
OFFLINE_HOLDS = frozenset({"hold:similar_to_denied", "hold:young_entry"})
APPROVALS_NEEDED = 2


@dataclass(frozen=True, slots=True)
class Payout:
    """What a signer found a withdrawal to be, once every check passed."""

    kind: Destination
    request: tuple[str, str] | None  # (backend, idempotency key) of the verified request: paid once
    approved_by: tuple[str, ...]  # operators whose approvals verified
    why: str  # how the destination was judged, in a sentence for the operator


def check_withdrawal(policy: Policy, w: BatchWithdrawal, now: int) -> Payout:
    """Every rule of one transfer that needs nothing but the policy, the file and the clock (the module
    docstring); the ledger's rules come after. Raises the refusal."""
    rule = policy.assets.get(w.asset)
    if rule is not None and w.token != rule.contract:
        raise BatchPolicyRefused(
            f"its token contract {w.token} is not {w.asset}'s contract in the policy ({rule.contract})"
        )
    if rule is not None and w.decimals != rule.decimals:
        raise BatchPolicyRefused(f"{w.asset} has {rule.decimals} decimals in the policy, not {w.decimals}")
    failures = static_failures(policy, w.asset, w.amount, w.destination, now)
    others = [r for r in failures if r.rule != "whitelist"]
    if others or (failures and w.customer is None):
        raise BatchPolicyRefused("; ".join(r.message for r in failures))
    request = None if w.request is None else _verified_request(policy, w, w.request)
    book = None if w.book_request is None else _verified_book(policy, w, w.book_request)
    if not failures:  # an active whitelist entry for the asset: the treasury vouched for the destination
        entry = policy.whitelist[w.destination]
        if w.label != entry.label:
            raise BatchPolicyRefused(f"the whitelist labels {w.destination} {entry.label!r}, not {w.label!r}")
        approved = _approvals(policy, w, needed=bool(w.approvals))
        return Payout(Destination.WHITELIST, _identity(policy, request), approved, f"whitelisted as {entry.label!r}")
    if request is None:
        raise RequestMissing(
            f"it pays customer {w.customer!r} to {w.destination}, which is not on the treasury whitelist, and "
            "carries no request signed by the exchange backend"
        )
    kind, why = Destination.UNLISTED, "UNLISTED: not on the whitelist, and no address-book entry is proven"
    if book is not None and w.book_request is not None:
        # The entry is usable from its signed time plus its lock: the policy's, or the longer one asked for.
        lock = max(policy.customers.address_lock, book.lock or 0)
        age = request.time - w.book_request.time
        if age >= lock:
            kind = Destination.ADDRESS_BOOK
            why = f"in the customer's address book as {book.label!r}, signed {age} s before the payout request"
        else:
            why = (
                f"UNLISTED: its address-book entry was signed {age} s before the payout request, within the lock "
                f"of {lock} s"
            )
    expected_label = "" if book is None else book.label
    if w.label != expected_label:
        raise BatchPolicyRefused(
            f"its label is {w.label!r}; "
            + (f"the signed address-book entry says {expected_label!r}" if book else "an unlisted payout has none")
        )
    hot_limit = policy.assets[w.asset].hot_limit
    if w.amount <= hot_limit:
        raise CustomerPayoutHotOnly(
            f"it pays customer {w.customer!r} {format_amount(w.amount, w.decimals)} {w.asset}, at or below the hot "
            f"limit of {format_amount(hot_limit, w.decimals)} {w.asset}: such payouts are paid from the hot wallet "
            "only, and this signer cannot see whether the hot wallet has paid this request already"
        )
    if kind == Destination.UNLISTED:
        _unlisted(policy, w)
    held = _offline_holds(policy, w, request, kind)
    approved = _approvals(policy, w, needed=bool(w.approvals) or bool(held), why=held)
    return Payout(kind, _identity(policy, request), approved, why)


def _identity(policy: Policy, request: SignedRequest | None) -> tuple[str, str] | None:
    """What is paid once: the backend's public key (its name is not signed, and a bundle may rename it) and the
    request's idempotency key."""
    if request is None:
        return None
    return _backend_key(policy, request, RequestUnknownBackend), request.idempotency_key


def _backend_key(policy: Policy, request: SignedRequest, error: type[SignerError]) -> str:
    backend = next((b for b in policy.backends if b.name == request.key), None)
    if backend is None:
        names = ", ".join(sorted(b.name for b in policy.backends)) or "none"
        raise error(f"it is signed as {request.key!r}, which is not one of the policy's backends ({names})")
    return backend.key


def _verified_request(policy: Policy, w: BatchWithdrawal, request: SignedRequest) -> SignedRequest:
    key = _backend_key(policy, request, RequestUnknownBackend)
    if not request.verify(key):
        raise RequestBadSignature(f"the request's signature does not verify with backend {request.key!r}'s key")
    try:
        body = withdrawal_body(request)
    except ValueError as exc:
        raise RequestMismatch(f"the signed request is not this payout: {exc}") from None
    if not request.idempotency_key:
        raise RequestMismatch("the signed request has no idempotency key, so nothing stops it being paid twice")
    rule = policy.assets[w.asset]
    try:
        amount = parse_amount(body.amount, rule.decimals)
    except AmountError as exc:
        raise RequestMismatch(f"the signed amount is not one: {exc.message}") from None
    differences = _differences(
        ("asset", body.asset, w.asset),
        ("destination", _canonical(rule, body.destination), w.destination),
        ("customer", body.customer, w.customer),
    )
    if amount != w.amount:
        differences.append(
            f"amount {format_amount(amount, rule.decimals)} {w.asset} where the withdrawal pays "
            f"{format_amount(w.amount, rule.decimals)} {w.asset}"
        )
    if differences:
        raise RequestMismatch("the backend signed " + "; ".join(differences))
    return request


def _canonical(rule: AssetRule, address: str) -> str:
    """The address as the daemon stores it (a Bitcoin address signed in its all-uppercase QR spelling is the
    lowercase one), or as signed when it is none: then it differs from the withdrawal's, which is refused."""
    try:
        return destination(rule.chain, rule.network, address)
    except AddressError:
        return address


def _differences(*fields: tuple[str, object, object]) -> list[str]:
    """Each (name, what was signed, what the withdrawal has) that differs, in words."""
    return [
        f"{name} {signed!r} where the withdrawal has {listed!r}" for name, signed, listed in fields if signed != listed
    ]


def _verified_book(policy: Policy, w: BatchWithdrawal, request: SignedRequest) -> AddressBody:
    key = _backend_key(policy, request, BookRequestInvalid)
    if not request.verify(key):
        raise BookRequestInvalid(
            f"the address-book request's signature does not verify with backend {request.key!r}'s key"
        )
    try:
        body = address_body(request)
    except ValueError as exc:
        raise BookRequestInvalid(f"the address-book request is not one: {exc}") from None
    differences = _differences(
        ("customer", body.customer, w.customer),
        ("asset", body.asset, w.asset),
        ("address", _canonical(policy.assets[w.asset], body.address), w.destination),
    )
    if differences:
        raise BookRequestInvalid("the address-book request added " + "; ".join(differences))
    return body


def _unlisted(policy: Policy, w: BatchWithdrawal) -> None:
    rule = policy.assets[w.asset]
    limits = rule.unlisted
    if limits is None:
        raise UnlistedRefused(
            f"{w.destination} is neither whitelisted nor a proven address-book entry of customer {w.customer!r}, "
            f"and the policy allows no unlisted payouts of {w.asset}"
        )
    top = limits.max_per_transfer
    if top is not None and w.amount > top:
        raise UnlistedOverLimit(
            f"{format_amount(w.amount, rule.decimals)} {w.asset} to an unlisted address is over the policy's "
            f"unlisted maximum of {format_amount(top, rule.decimals)} {w.asset} per transfer"
        )


def _offline_holds(policy: Policy, w: BatchWithdrawal, request: SignedRequest, kind: Destination) -> list[str]:
    """The hold rules that fire on what the batch proves, with the engine's own code (``policies.holds``):
    the payout request's time stands for the daemon's clock, the book request's for the entry's ``added_at``.
    What needs history is given as harmless (paid before, no median, no customer windows)."""
    if w.customer is None:
        return []
    book = None
    if w.book_request is not None and kind == Destination.ADDRESS_BOOK:
        book = BookEntry(added_at=w.book_request.time, active_at=w.book_request.time)
    reasons: list[Reason] = []
    check_holds(
        reasons,
        policy,
        Request(w.asset, w.amount, w.destination, request.key, w.customer),
        w.customer,
        kind,
        None,
        Context(now=request.time, book=book, paid_before=True),
    )
    return [r.message for r in reasons if not r.passed and r.rule in OFFLINE_HOLDS]


def _approvals(policy: Policy, w: BatchWithdrawal, *, needed: bool, why: list[str] | None = None) -> tuple[str, ...]:
    """Verify every approval present; when ``needed``, two distinct operators (by key) must have approved."""
    keys = {o.name: o.key for o in policy.operators}
    approvers: dict[str, str] = {}
    for a in w.approvals:
        key = keys.get(a.operator)
        if key is None:
            raise ApprovalInvalid(f"{a.operator!r} is not one of the policy's operators")
        if not a.verifies(w.id, key):
            raise ApprovalInvalid(
                f"the decision attributed to operator {a.operator!r} is not signed with their key for withdrawal {w.id}"
            )
        if a.decision != APPROVE:
            raise ApprovalInvalid(f"operator {a.operator!r} rejected withdrawal {w.id}")
        approvers.setdefault(key, a.operator)
    if needed and len(approvers) < APPROVALS_NEEDED:
        held = f" (held: {'; '.join(why)})" if why else ""
        have = ", ".join(sorted(approvers.values())) or "nobody"
        raise ApprovalsMissing(
            f"it was held for review{held}: it needs the approvals of {APPROVALS_NEEDED} distinct operators, and "
            f"carries valid approvals from {have}"
        )
    return tuple(sorted(approvers.values()))
