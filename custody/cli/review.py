"""`custody review …`: held withdrawals and the operators' four-eyes decisions (``custody.intake.review``).

An operator's key is an Ed25519 key made with `custody review keygen`; its public key is declared in the policy
(``[[operators]]``), so only a quorum of admins decides who may release a held withdrawal. Each decision is
signed on this machine with that key and verified by the daemon.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import click
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import SigningKey

from custody.cli.common import config_option, echo_json, json_option, open_store
from custody.clock import SystemClock
from custody.errors import InvalidField
from custody.intake.review import HeldView, Review, sign_decision
from custody.ledger.policy import PolicyCache
from custody.store.models import Withdrawal
from policies.text import escape
from policies.units import format_amount
from signer.cliutil import read_file
from signer.decisions import APPROVE, REJECT


@click.group()
def review() -> None:
    """Held withdrawals: list them, show one, approve or reject it (two operators release one)."""


def _service(config_path: Path) -> Review:
    _, store = open_store(config_path)
    return Review(store, PolicyCache(), SystemClock())


def _when(ts: int | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def line(w: Withdrawal) -> str:
    """One withdrawal on one line."""
    amount = f"{format_amount(w.amount, w.decimals)} {w.asset}"
    customer = escape(w.customer) if w.customer is not None else "-"
    kind = w.destination_kind or "-"
    return f"{w.id}  {w.state:<11} {_when(w.created_at)}  {amount:>24}  {customer:<24} {w.destination} ({kind})"


def describe(view: HeldView) -> list[str]:
    """What `custody review show` prints: the withdrawal, why it is held, who decided, the customer's history."""
    w = view.withdrawal
    lines = [
        f"withdrawal   {w.id}",
        f"state        {w.state}",
        f"customer     {escape(w.customer) if w.customer is not None else '-'}",
        f"amount       {format_amount(w.amount, w.decimals)} {w.asset}",
        f"destination  {w.destination} ({w.destination_kind or '-'})",
        f"api key      {escape(w.api_key)}",
        f"created      {_when(w.created_at)}",
        "held because:" if view.holds else "held because: (no hold rule fired)",
    ]
    lines += [f"  {escape(h['rule'])}: {escape(h['message'])}" for h in view.holds]
    lines.append("decisions:" if view.approvals else "decisions: none yet (two approvals release it)")
    lines += [f"  {a.decision:<7} {escape(a.operator)} at {_when(a.at)}: {escape(a.reason)}" for a in view.approvals]
    lines.append(f"customer's recent withdrawals ({len(view.history)}):" if view.history else "no other withdrawal")
    lines += [f"  {line(h)}" for h in view.history]
    return lines


def load_operator_key(path: Path) -> SigningKey:
    """The operator's private key: the first line of the file, 64 hex digits (`custody review keygen`)."""
    lines = read_file(path, limit=4096).decode("ascii", "replace").splitlines()
    try:
        return SigningKey(bytes.fromhex(lines[0].strip() if lines else ""))
    except (ValueError, NaclValueError):
        raise InvalidField(f"{path}: not an operator key (64 hex digits of an Ed25519 private key)") from None


@review.command("keygen")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
def review_keygen(out: Path) -> None:
    """Make an operator's key: the private key goes to OUT (never overwritten), the public key is printed, to
    be declared in the policy under [[operators]]."""
    key = SigningKey.generate()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(bytes(key).hex() + "\n")
    click.echo(key.verify_key.encode().hex())


@review.command("list")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@config_option
@json_option
def review_list(limit: int, config_path: Path, as_json: bool) -> None:
    """The held withdrawals, oldest first."""
    held = _service(config_path).held(limit)
    if as_json:
        echo_json(
            [
                {
                    "id": w.id,
                    "state": w.state,
                    "asset": w.asset,
                    "amount": format_amount(w.amount, w.decimals),
                    "customer": w.customer,
                    "destination": w.destination,
                    "destination_kind": w.destination_kind,
                    "created_at": w.created_at,
                    "holds": [r["rule"] for r in json.loads(w.reasons) if not r["passed"]],
                }
                for w in held
            ]
        )
        return
    for w in held:
        click.echo(line(w))
    if not held:
        click.echo("no held withdrawal")


@review.command("show")
@click.argument("withdrawal_id")
@config_option
def review_show(withdrawal_id: str, config_path: Path) -> None:
    """One withdrawal: why it is held, the decisions so far, and its customer's recent withdrawals."""
    for text in describe(_service(config_path).show(withdrawal_id)):
        click.echo(text)


def _decide(decision: str, withdrawal_id: str, reason: str, key_path: Path, config_path: Path) -> None:
    key = load_operator_key(key_path)
    service = _service(config_path)
    w = service.decide(sign_decision(key, withdrawal_id, decision, reason, service.clock.now()))
    click.echo(f"{decision}d withdrawal {w.id}: it is {w.state}")


_reason = click.option("--reason", required=True, help="Why: signed with the decision and kept with it.")
_key = click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The operator's private key file (custody review keygen).",
)


@review.command("approve")
@click.argument("withdrawal_id")
@_reason
@_key
@config_option
def review_approve(withdrawal_id: str, reason: str, key_path: Path, config_path: Path) -> None:
    """Approve a held withdrawal; the second operator's approval releases it."""
    _decide(APPROVE, withdrawal_id, reason, key_path, config_path)


@review.command("reject")
@click.argument("withdrawal_id")
@_reason
@_key
@config_option
def review_reject(withdrawal_id: str, reason: str, key_path: Path, config_path: Path) -> None:
    """Reject a held withdrawal: one operator's reject is enough."""
    _decide(REJECT, withdrawal_id, reason, key_path, config_path)
