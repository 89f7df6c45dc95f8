"""The red team's bench: an offline signing ceremony, and a compromised online host that writes files.

Every red-team test plays someone who controls the online host completely: the daemon, its database, its
configuration and its Ed25519 identity key (so it can sign any batch file it likes). It writes the files such
a host would write, with the project's own writers and then edited, and hands them to the real ``signer`` CLI,
which must refuse with one specific error code.

The ceremony is built once per session (three operators' keystores, a genesis, a quorum-signed policy, the
pinned cold wallet); each test gets a fresh copy of the signer's state directory, so ledgers never leak between
tests. Nothing here needs a node: the Safe's address is derived offline, as the signer derives it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from nacl.signing import SigningKey

from custody.intake.signatures import sign_request
from policies.bundle import Bundle, genesis_bytes, make_bundle, parse_genesis, sign_bundle
from policies.loader import Reader, load_policy_toml
from signer.apirequest import SignedRequest
from signer.batchfile import Batch, BatchWithdrawal, sign_batch_body, write_batch_file
from signer.coldwallet import ColdWallet
from signer.decisions import Decision, sign_decision
from signer.keystore import load_keystore, unlock
from signer.review import assemble
from signer.safecontracts import MULTISEND_CALL_ONLY, safe_address
from tests.cli_helpers import signer
from tests.conftest import DENIED, MAKER, OMNIBUS

NOW = int(time.time())
DAY = 86400
ETH = 10**18
USDC_CONTRACT = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
HOT = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"  # the daemon's hot wallet: its key is the attacker's
STRANGER = "0x2222222222222222222222222222222222222222"
DAEMON = SigningKey(bytes([9]) * 32)  # the daemon's identity key, which the attacker holds
PASSPHRASE = "correct horse battery staple"


def stamp(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def policy_text(admins: Sequence[tuple[str, str]], active_from: int, extra: str = "") -> str:
    """The red team's policy: ETH (250 per hour, 1,000 per day, 100 per transfer), USDC, a whitelisted
    omnibus and market maker, the hot wallet whitelisted as such with a 50 ETH top-up cap per day, a denied
    address. No activation delay, so the ceremony can run now; the tests that need a delay make their own."""
    admin_tables = "\n".join(f'[[governance.admins]]\nname = "{n}"\nkey = "{k}"\n' for n, k in admins)
    active = stamp(active_from)
    return f"""
format = 1
[governance]
quorum = 2
activation_delay = "0s"
{admin_tables}
[assets.ETH]
decimals = 18
max_per_transfer = "100"
hot_limit = "5"
windows = [{{ period = "1h", limit = "250" }}, {{ period = "24h", limit = "1000" }}]
hot_topup = {{ period = "24h", limit = "50" }}
[assets.USDC]
contract = "{USDC_CONTRACT}"
decimals = 6
max_per_transfer = "1000000"
hot_limit = "100"
[[whitelist]]
address = "{OMNIBUS}"
assets = ["ETH", "USDC"]
label = "omnibus"
active_from = {active}
[[whitelist]]
address = "{MAKER}"
assets = ["ETH"]
label = "maker"
active_from = {active}
[[whitelist]]
address = "{HOT}"
assets = ["ETH"]
label = "our hot wallet"
active_from = {active}
hot = true
[[deny]]
address = "{DENIED}"
note = "sanctioned"
{extra}
"""


@dataclass
class Operator:
    name: str
    keystore: Path
    card: dict[str, str]
    approval: SigningKey
    owner_key: bytes

    @property
    def address(self) -> str:
        return self.card["owner_address"]


@dataclass
class Template:
    root: Path
    passfile: Path
    operators: list[Operator]
    genesis: bytes
    bundle: Bundle
    cold: ColdWallet


@dataclass
class Ceremony:
    """One test's view: a fresh signer state for each operator, and the attacker's pen."""

    tmp: Path
    passfile: Path
    operators: list[Operator]
    genesis: bytes
    bundle: Bundle
    cold: ColdWallet
    states: list[Path] = field(default_factory=list)

    # -- what the online host writes ---------------------------------------------------------------
    def withdrawal(
        self, asset: str, amount: int, destination: str = OMNIBUS, *, wid: str | None = None
    ) -> BatchWithdrawal:
        """A transfer as the honest exporter would list it (label, token and decimals from the policy)."""
        rule = self.bundle.policy.assets[asset]
        entry = self.bundle.policy.whitelist.get(destination)
        return BatchWithdrawal(
            wid or str(uuid.uuid4()),
            asset,
            amount,
            rule.decimals,
            rule.contract,
            destination,
            entry.label if entry else "",
        )

    def batch(
        self,
        withdrawals: Sequence[BatchWithdrawal],
        *,
        nonce: int = 0,
        created_at: int | None = None,
        lifetime: int = DAY,
        bundle: Bundle | None = None,
    ) -> Batch:
        """A batch exactly as the project's exporter assembles it."""
        b = bundle or self.bundle
        created = NOW if created_at is None else created_at
        return assemble(
            batch_id=str(uuid.uuid4()),
            chain_id=self.cold.chain_id,
            safe=self.cold.safe,
            safe_nonce=nonce,
            multisend=self.cold.multisend,
            policy_version=b.version,
            policy_hash=b.hash,
            created_at=created,
            expires_at=created + lifetime,
            withdrawals=list(withdrawals),
            policy=b.policy,
        )

    def write(self, batch: Batch) -> bytes:
        return write_batch_file(batch, DAEMON)

    def edited(self, batch: Batch, edit: Callable[[dict[str, Any]], None]) -> bytes:
        """The batch's body edited by the attacker, then signed again with the daemon key the attacker holds."""
        body = copy.deepcopy(batch.body())
        edit(body)
        return sign_batch_body(body, DAEMON)

    def file(self, raw: bytes, name: str | None = None) -> Path:
        path = self.tmp / (name or f"file-{uuid.uuid4().hex[:8]}.json")
        path.write_bytes(raw)
        return path

    # -- what the operators run --------------------------------------------------------------------
    def sign(self, raw: bytes, who: int = 0, *, ok: bool = False) -> Result:
        """``signer sign`` on this operator's own state; ``ok`` asserts it signed."""
        path = self.file(raw)
        return self.signing(("sign",), path, self.tmp / f"{path.stem}.{who}.sig", who, ok=ok)

    def signing(
        self, command: Sequence[str], path: Path, out: Path, who: int = 0, *, key: int | None = None, ok: bool = False
    ) -> Result:
        """A signing command (``sign``, ``policy sign``, ``por sign``) on state ``who`` with operator ``key``'s
        keystore (by default the same operator's), confirmation skipped."""
        op = self.operators[who if key is None else key]
        args = [*command, path, "--keystore", op.keystore, "--out", out, "--yes", "--passphrase-file", self.passfile]
        return self.run(*args, who=who, ok=ok)

    def review(self, raw: bytes, who: int = 0, *, ok: bool = False) -> Result:
        return signer("review", self.file(raw), "--state", self.states[who], ok=ok)

    def run(self, *args: object, who: int = 0, ok: bool = False, stdin: str | None = None) -> Result:
        """Any signer command on this operator's state."""
        return signer(*args, "--state", self.states[who], ok=ok, stdin=stdin)


def refused(result: Result, code: str) -> str:
    """The command failed with exactly ``code``; returns its message for further checks."""
    assert result.exit_code == 1, f"expected a refusal [{code}], got exit {result.exit_code}:\n{result.output}"
    marker = f"error [{code}]: "
    assert marker in result.output, f"expected [{code}], got:\n{result.output}"
    return result.output.split(marker, 1)[1]


def signed(result: Result) -> None:
    assert result.exit_code == 0, result.output
    assert "signed 0x" in result.output, result.output


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    root = tmp_path_factory.mktemp("redteam-template")
    passfile = root / "pass.txt"
    passfile.write_text(PASSPHRASE + "\n")
    operators = []
    for i in range(3):
        ks, card = root / f"op{i}.keystore", root / f"op{i}.card.json"
        signer(
            "key",
            "new",
            "--name",
            f"op{i}",
            "--out",
            ks,
            "--passphrase-file",
            passfile,
            "--no-confirm",
            "--state",
            root / "keys",
        )
        signer("key", "card", ks, "--out", card)
        unlocked = unlock(load_keystore(ks.read_bytes()), PASSPHRASE)
        operators.append(
            Operator(f"op{i}", ks, json.loads(card.read_text()), unlocked.approval_key(), unlocked.owner_private_key())
        )
    admins = [(op.name, op.card["approval_key"]) for op in operators]
    governance = Reader(human=True).governance(
        {"quorum": 2, "activation_delay": "0s", "admins": [{"name": n, "key": k} for n, k in admins]}
    )
    genesis = genesis_bytes(governance, NOW - 2 * DAY)
    created = NOW - 60
    bundle = make_bundle(load_policy_toml(policy_text(admins, created)), parse_genesis(genesis), created)
    owners = tuple(op.address for op in operators)
    cold = ColdWallet(
        chain_id=31337,
        safe=safe_address(owners, 2, 0),
        owners=owners,
        threshold=2,
        multisend=MULTISEND_CALL_ONLY,
        daemon_key=DAEMON.verify_key.encode().hex(),
        salt_nonce=0,
    )
    base = root / "state"
    (root / "genesis.json").write_bytes(genesis)
    (root / "cold-wallet.json").write_bytes(cold.to_bytes())
    (root / "bundle-1.json").write_bytes(bundle.raw)
    sigs = []
    for i, op in enumerate(operators[:2]):
        sig = root / f"bundle-1.{i}.sig"
        sig.write_bytes(sign_bundle(bundle.hash, op.approval).to_bytes())
        sigs.append(sig)
    signer("policy", "pin", root / "genesis.json", "--yes", "--state", base)
    signer("policy", "accept", root / "bundle-1.json", *sigs, "--state", base)
    signer("cold", "pin", root / "cold-wallet.json", "--yes", "--state", base)
    return Template(root, passfile, operators, genesis, bundle, cold)


@pytest.fixture
def ceremony(template: Template, tmp_path: Path) -> Ceremony:
    states = []
    for i in range(len(template.operators)):
        state = tmp_path / f"state-{i}"
        shutil.copytree(template.root / "state", state)
        states.append(state)
    return Ceremony(
        tmp_path, template.passfile, template.operators, template.genesis, template.bundle, template.cold, states
    )


# -- customer payouts (issue 16): the backend's and the operators' keys, which the attacker does NOT hold -------
BACKEND = SigningKey(bytes([0x21]) * 32)  # the exchange backend's API key, declared in the policy's [[backends]]
REVIEWERS = {"olga": SigningKey(bytes([0x31]) * 32), "piotr": SigningKey(bytes([0x32]) * 32)}  # [[operators]]
ATTACKER = SigningKey(bytes([0x66]) * 32)  # a key the host made up
CUSTOMER = "cust-42"
PAYEE = "0x1111111111111111111111111111111111111111"  # a customer's own address, on no list


def payout_policy_text(admins: Sequence[tuple[str, str]], active_from: int) -> str:
    """The red team's policy with customer payouts: ETH to unlisted addresses up to 2 ETH a transfer and 5 ETH
    a day, none for USDC; a one-day address lock; holds for an address-book entry younger than three days and
    for an address like a denied one; two operators and one backend."""
    reviewers = "".join(
        f'[[operators]]\nname = "{n}"\nkey = "{k.verify_key.encode().hex()}"\n' for n, k in REVIEWERS.items()
    )
    extra = f"""
[assets.ETH.unlisted]
max_per_transfer = "2"
windows = [{{ period = "24h", limit = "5" }}]
[customers]
address_lock = "24h"
[holds]
young_entry = "3d"
similar_to_denied = true
{reviewers}
[[backends]]
name = "backend"
key = "{BACKEND.verify_key.encode().hex()}"
"""
    # hot limits below every payout the tests make: signers pay customers only above them (smaller payouts are
    # paid hot or not at all)
    text = policy_text(admins, active_from, extra)
    return text.replace('hot_limit = "5"', 'hot_limit = "0.1"', 1).replace('hot_limit = "100"', 'hot_limit = "0.1"', 1)


def accept_payout_policy(ceremony: Ceremony) -> Bundle:
    """Bundle v2 (the payout policy), signed by a quorum of admins and accepted by every operator's signer;
    the ceremony's writers use it from then on."""
    admins = [(op.name, op.card["approval_key"]) for op in ceremony.operators]
    created = NOW - 30
    # the whitelist as active as in bundle 1, so unchanged (a changed entry would have to activate later)
    text = payout_policy_text(admins, ceremony.bundle.created_at)
    v2 = make_bundle(load_policy_toml(text), ceremony.bundle.head(), created)
    path = ceremony.file(v2.raw, "bundle-2.json")
    sigs = [
        ceremony.file(sign_bundle(v2.hash, op.approval).to_bytes(), f"v2.{i}.sig")
        for i, op in enumerate(ceremony.operators[:2])
    ]
    for who in range(len(ceremony.states)):
        ceremony.run("policy", "accept", path, *sigs, who=who, ok=True)
    ceremony.bundle = v2
    return v2


def backend_request(
    method: str,
    path: str,
    body: dict[str, Any],
    *,
    key: SigningKey = BACKEND,
    name: str = "backend",
    at: int = NOW - 60,
    idempotency_key: str | None = None,
) -> SignedRequest:
    """A request exactly as the backend's client signs and the daemon stores it."""
    raw = json.dumps(body).encode()
    idem = uuid.uuid4().hex if idempotency_key is None else idempotency_key
    headers = sign_request(key, name, at, method, path, raw, idem)
    return SignedRequest(
        key=name,
        method=method,
        path=path,
        timestamp=str(at),
        nonce=headers["X-Custody-Nonce"],
        idempotency_key=idem,
        body=raw,
        signature=bytes.fromhex(headers["X-Custody-Signature"]),
    )


def payout_request(asset: str, amount: str, destination: str, customer: str = CUSTOMER, **kw: Any) -> SignedRequest:
    body = {"asset": asset, "amount": amount, "destination": destination, "customer": customer}
    return backend_request("POST", "/v1/withdrawals", body, **kw)


def book_request(
    asset: str, address: str, label: str, customer: str = CUSTOMER, *, at: int, **kw: Any
) -> SignedRequest:
    body = {"asset": asset, "address": address, "label": label}
    return backend_request("POST", f"/v1/customers/{customer}/addresses", body, at=at, idempotency_key="", **kw)


def approval(operator: str, wid: str, *, key: SigningKey | None = None, decision: str = "approve") -> Decision:
    """An operator's signed decision on withdrawal ``wid``, by default with that operator's own key."""
    signing = key or REVIEWERS[operator]
    return sign_decision(signing, operator, wid, decision, "checked with the customer", NOW - 120)


def payout(
    ceremony: Ceremony,
    asset: str,
    amount: int,
    destination: str = PAYEE,
    *,
    kind: str = "unlisted",
    request: SignedRequest | None = None,
    book: SignedRequest | None = None,
    label: str = "",
    approvals: Sequence[Decision] = (),
    wid: str | None = None,
    customer: str = CUSTOMER,
) -> BatchWithdrawal:
    """A customer payout as the exporter lists it; ``request`` None means no backend request at all."""
    base = ceremony.withdrawal(asset, amount, destination, wid=wid)
    return dataclasses.replace(
        base,
        label=label,
        customer=customer,
        kind=kind,
        request=request,
        book_request=book,
        approvals=tuple(sorted(approvals, key=lambda a: a.operator)),
    )


def refused_unsigned(ceremony: Ceremony, raw: bytes, code: str, who: int = 0) -> str:
    """``signer sign`` refuses with exactly ``code``, writes no signature file and records nothing as signed."""
    path = ceremony.file(raw)
    out = ceremony.tmp / f"{path.stem}.{who}.sig"
    ledger_before = (
        (ceremony.states[who] / "ledger.jsonl").read_bytes()
        if (ceremony.states[who] / "ledger.jsonl").exists()
        else b""
    )
    message = refused(ceremony.signing(("sign",), path, out, who), code)
    assert not out.exists(), "a refused batch must leave no signature file"
    ledger = ceremony.states[who] / "ledger.jsonl"
    assert (ledger.read_bytes() if ledger.exists() else b"") == ledger_before, "a refusal recorded something"
    return message
