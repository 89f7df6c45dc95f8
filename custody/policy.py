"""The daemon's side of policy: the genesis, proposing bundles, applying quorum-signed ones, and the
active policy that intake evaluates against."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody import audit, freeze
from custody.errors import NoActivePolicy
from custody.store.db import Store
from custody.store.models import PolicyBundleRow
from policies.bundle import (
    Bundle,
    Head,
    check_activations,
    genesis_bytes,
    make_bundle,
    parse_bundle,
    parse_genesis,
    parse_signature,
    verify_successor,
)
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


def propose(store: Store, policy_toml: str, now: int) -> Bundle:
    """Compile a policy file into the next bundle; refuse now what apply would refuse later."""
    policy = load_policy_toml(policy_toml)
    with store.read() as s:
        current, _ = head(s)
    bundle = make_bundle(policy, current, now)
    check_activations(current, bundle)
    return bundle


def apply(store: Store, raw: bytes, signature_files: list[bytes], now: int) -> Bundle:
    bundle = parse_bundle(raw)
    signatures = [parse_signature(data) for data in signature_files]
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
