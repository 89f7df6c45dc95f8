"""The signer's memory of policy: the pinned genesis and the newest bundle it has verified.

Kept in the signer's state directory, so a rollback to an older bundle is refused even if the online side
presents one with valid (old) signatures:

    <state>/genesis.json     the genesis document, pinned once with `signer policy pin`
    <state>/policy.json      the newest verified bundle
    <state>/policy.sigs      its signatures, one signature file per line
    <state>/transcript.log   one line per ceremony action
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from policies.bundle import (
    Bundle,
    BundleSignature,
    Head,
    check_not_rollback,
    parse_bundle,
    parse_genesis,
    parse_signature,
    verify_successor,
)
from signer.errors import SignerError, StateError


def default_state_dir() -> Path:
    return Path(os.environ.get("SIGNER_HOME") or Path.home() / ".custody-signer")


def pin_genesis(state: Path, raw: bytes) -> Head:
    head = parse_genesis(raw)
    pin_once(state, "genesis.json", raw, "genesis")
    return head


def pin_once(state: Path, name: str, raw: bytes, what: str) -> None:
    """Keep ``raw`` as ``<state>/<name>``; the same bytes again are fine, different ones are refused."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / name
    if path.exists():
        if path.read_bytes() != raw:
            raise StateError(f"a different {what} is already pinned in {state}; refusing to replace it")
        return
    write_atomic(path, raw)


def newest(state: Path) -> tuple[Head, Bundle | None]:
    """The head that the next bundle must follow, and the newest verified bundle if there is one."""
    genesis = state / "genesis.json"
    if not genesis.exists():
        raise StateError(f"no genesis is pinned in {state}: run `signer policy pin GENESIS` first")
    current = state / "policy.json"
    if not current.exists():
        return parse_genesis(genesis.read_bytes()), None
    bundle = parse_bundle(current.read_bytes())
    return bundle.head(), bundle


def verified_bundle(state: Path) -> Bundle:
    """The newest verified bundle, which every batch is checked against; refused before the first one."""
    _, bundle = newest(state)
    if bundle is None:
        raise SignerError("this signer has verified no policy bundle yet: run `signer policy accept` first")
    return bundle


def accept(state: Path, bundle: Bundle, signatures: list[BundleSignature]) -> tuple[str, ...]:
    """Verify ``bundle`` on top of the newest one and remember it; an older one is refused."""
    head, current = newest(state)
    if current is not None:
        check_not_rollback(head, bundle)
    signers = verify_successor(head, bundle, signatures)
    write_atomic(state / "policy.sigs", b"".join(s.to_bytes() + b"\n" for s in signatures))
    write_atomic(state / "policy.json", bundle.raw)
    return signers


def newest_signatures(state: Path) -> list[BundleSignature]:
    path = state / "policy.sigs"
    return [parse_signature(line) for line in path.read_bytes().splitlines() if line] if path.exists() else []


def record(state: Path, action: str, subject: str, digest: str, decision: str) -> None:
    """Append one line to the ceremony transcript."""
    state.mkdir(parents=True, exist_ok=True)
    line = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "action": action,
        "subject": subject,
        "hash": digest,
        "decision": decision,
    }
    with open(state / "transcript.log", "a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
