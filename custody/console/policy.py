"""The policy: the active bundle field by field, every version applied (with who signed it), and the
difference between any two versions, shown with the signer's own review functions (``signer.policyview``):
what an admin read before signing is what the console shows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.console.auth import Signed
from custody.console.deps import Services, services, signed_in
from custody.console.render import page
from custody.errors import InvalidField, NoActivePolicy, NotFound
from custody.store.models import AuditEntry, PolicyBundleRow
from policies.bundle import parse_bundle, parse_genesis
from policies.model import Governance, Policy
from signer.policyview import Field, describe_bundle, flatten, flatten_governance

router = APIRouter()


@dataclass(frozen=True)
class Version:
    version: int
    hash: str
    applied_at: int
    signers: list[str]  # the admins whose signatures applied it (from the audit log)


def history(s: Session) -> list[Version]:
    rows = s.execute(
        select(PolicyBundleRow.version, PolicyBundleRow.hash, PolicyBundleRow.applied_at).order_by(
            PolicyBundleRow.version.desc()
        )
    ).all()
    signers: dict[str, list[str]] = {}
    query = select(AuditEntry.subject, AuditEntry.data).where(AuditEntry.kind == "policy.applied")
    for subject, data in s.execute(query).all():
        signers[subject] = [str(x) for x in json.loads(data).get("signers", [])]
    return [Version(v, h, at, signers.get(f"v{v}", [])) for v, h, at in rows]


def _version(text: str | None, name: str, newest: int) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit() or int(text) > newest:
        raise InvalidField(f"{name} must be a policy version from 0 to {newest}")
    return int(text)


def _raw(s: Session, version: int) -> bytes:
    raw = s.execute(select(PolicyBundleRow.raw).where(PolicyBundleRow.version == version)).scalar_one_or_none()
    if raw is None:
        raise NotFound(f"no policy version {version}")
    return raw


def _policy_or_governance(s: Session, version: int) -> Policy | Governance:
    raw = _raw(s, version)
    return parse_genesis(raw).governance if version == 0 else parse_bundle(raw).policy


@dataclass(frozen=True)
class PolicyPage:
    current: int
    fields: list[Field]  # the active version, flattened
    versions: list[Version]
    a: int
    b: int
    review: list[str]  # describe_bundle(b, a): the header, headline counts and the field-by-field diff


def read(s: Session, a_text: str | None, b_text: str | None, now: int) -> PolicyPage:
    versions = history(s)
    if not versions:
        raise NoActivePolicy("the database has no policy genesis: was it created with `custody init`?")
    newest = versions[0].version
    raw = _raw(s, newest)
    fields = flatten_governance(parse_genesis(raw).governance) if newest == 0 else flatten(parse_bundle(raw).policy)
    b = _version(b_text, "to", newest)
    b = newest if b is None else b
    a = _version(a_text, "from", newest)
    a = max(b - 1, 0) if a is None else a
    review: list[str] = []
    if b == 0:
        review = ["Version 0 is the genesis (the admin set): choose a bundle (1 or later) to compare to."]
    else:
        review = describe_bundle(parse_bundle(_raw(s, b)), None if a == b else _policy_or_governance(s, a), now)
    return PolicyPage(newest, fields, versions, a, b, review)


@router.get("/policy")
def policy_page(
    svc: Annotated[Services, Depends(services)],
    signed: Annotated[Signed, Depends(signed_in)],
    a: str | None = None,
    b: str | None = None,
) -> Response:
    with svc.store.read() as s:
        p = read(s, a, b, svc.clock.now())
    return page("policy.html", here="/policy", signed=signed, p=p)
