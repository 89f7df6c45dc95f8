"""The daemon's side of policy: the genesis, proposing bundles, applying quorum-signed ones, and the
active policy that intake evaluates against."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.errors import NoActivePolicy
from custody.ledger import audit, freeze
from custody.store.db import Store
from custody.store.models import BtcHotWallet, HotWallet, PolicyBundleRow
from policies.bundle import (
    Bundle,
    Head,
    check_activations,
    check_created_at,
    check_decimals,
    genesis_bytes,
    make_bundle,
    parse_bundle,
    parse_genesis,
    parse_signature,
    verify_successor,
)
from policies.errors import BundleTimeError, PolicyFileError
from policies.loader import load_policy_toml
from policies.model import Governance, Policy


@dataclass(frozen=True)
class Active:
    version: int
    hash: str
    policy: Policy


def install_genesis(session: Session, governance: Governance, now: int) -> bytes:
    """Record the genesis admin set as version 0; return the genesis document for the signers to pin."""
    raw = genesis_bytes(governance, now)
    head = parse_genesis(raw)
    session.add(PolicyBundleRow(version=0, hash=head.hash, raw=raw, signatures="", applied_at=now))
    audit.append(
        session,
        now,
        "policy.genesis",
        "v0",
        {"hash": head.hash, "quorum": governance.quorum, "admins": [a.key for a in governance.admins]},
    )
    return raw


def record_genesis(store: Store, governance: Governance, now: int) -> bytes:
    """``install_genesis`` in a transaction of its own (``custody init``, on a new database)."""
    with store.transaction() as s:
        return install_genesis(s, governance, now)


def _newest_row(session: Session, lock: bool = False) -> PolicyBundleRow:
    query = select(PolicyBundleRow).order_by(PolicyBundleRow.version.desc()).limit(1)
    row = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if row is None:
        raise NoActivePolicy("the database has no policy genesis: was it created with `custody init`?")
    return row


def head(session: Session, lock: bool = False) -> tuple[Head, Bundle | None]:
    row = _newest_row(session, lock)
    if row.version == 0:
        return parse_genesis(row.raw), None
    bundle = parse_bundle(row.raw)
    return bundle.head(), bundle


def current(store: Store) -> tuple[Head, Bundle | None]:
    """``head`` in a read transaction of its own (``custody policy show``)."""
    with store.read() as s:
        return head(s)


def propose(store: Store, policy_toml: str, now: int) -> Bundle:
    """Compile a policy file into the next bundle; refuse now what apply (or a signer) would refuse later."""
    policy = load_policy_toml(policy_toml)
    with store.read() as s:
        current, _ = head(s)
        hot_wallets = {a.lower() for a in s.execute(select(HotWallet.address)).scalars()}
        hot_wallets |= {a.lower() for a in s.execute(select(BtcHotWallet.address)).scalars()}  # its receive address
    check_hot_marked(policy, hot_wallets)
    if now < current.created_at:
        raise BundleTimeError(
            f"this computer's clock ({now}) is before the current bundle's date ({current.created_at}): "
            "a bundle may not be dated before the one it replaces; check the clock"
        )
    bundle = make_bundle(policy, current, now)
    check_created_at(bundle.created_at, now)
    check_activations(current, bundle)
    check_decimals(current, bundle)
    return bundle


def check_hot_marked(policy: Policy, hot_wallets: set[str]) -> None:
    """The daemon's own hot wallet may be whitelisted only as such (``hot = true``): then every cold payment to
    it is a top-up, capped by ``hot_topup``. Listed as an ordinary destination, it would let a host that holds
    the hot key drain the cold wallet into it at the whitelist's limits. ``hot_wallets`` are the addresses the
    hot worker has registered (the EOA, and each Bitcoin account's receive address); before it first runs the
    daemon does not know them, and nothing is checked. Addresses are compared in lower case."""
    for address, entry in sorted(policy.whitelist.items()):
        if address.lower() in hot_wallets and not entry.hot:
            raise PolicyFileError(
                "whitelist",
                f"{address} is this daemon's hot wallet: its entry must say hot = true (and each asset it receives "
                "a hot_topup limit)",
            )


def apply(store: Store, raw: bytes, signature_files: list[bytes], now: int) -> Bundle:
    bundle = parse_bundle(raw)
    signatures = [parse_signature(data) for data in signature_files]
    # Dated ahead of this clock, the bundle would block every later one (their dates may not go back); dated
    # in the past is fine: each admin's signer refused it unless it was fresh when they signed.
    check_created_at(bundle.created_at, now, max_age=None)
    with store.transaction() as s:
        current, _ = head(s, lock=True)
        signers = verify_successor(current, bundle, signatures)
        s.add(
            PolicyBundleRow(
                version=bundle.version,
                hash=bundle.hash,
                raw=bundle.raw,
                signatures="\n".join(sig.to_bytes().decode() for sig in signatures),
                applied_at=now,
            )
        )
        audit.append(
            s,
            now,
            "policy.applied",
            f"v{bundle.version}",
            {"hash": bundle.hash, "previous_hash": bundle.previous_hash, "signers": list(signers)},
        )
        freeze.on_apply(s, bundle, now)
    return bundle


class PolicyCache:
    """The active policy, parsed once per version; a cheap query tells whether a newer one was applied."""

    def __init__(self) -> None:
        self._active: Active | None = None
        self._lock = threading.Lock()

    def get(self, session: Session) -> Active:
        version, digest = session.execute(
            select(PolicyBundleRow.version, PolicyBundleRow.hash).order_by(PolicyBundleRow.version.desc()).limit(1)
        ).one_or_none() or (0, "")
        if version == 0:
            raise NoActivePolicy("no policy bundle has been applied yet: propose one and apply it with a quorum")
        cached = self._active
        if cached is not None and cached.version == version and cached.hash == digest:
            return cached
        raw = session.execute(select(PolicyBundleRow.raw).where(PolicyBundleRow.version == version)).scalar_one()
        active = Active(version, digest, parse_bundle(raw).policy)
        with self._lock:
            self._active = active
        return active
