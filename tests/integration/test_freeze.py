"""Freeze: payments stop at once whatever stage they are at, intake goes on, only a quorum unfreezes, and the
automatic freeze trips at its threshold."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest
from sqlalchemy import select

from custody.api.client import CustodyClient
from custody.chain.ethereum import EthereumNode
from custody.cold import batches
from custody.errors import Frozen
from custody.ledger import freeze
from custody.ledger import policy as policy_service
from custody.store.models import Freeze, HotTransaction, Withdrawal
from policies.bundle import make_bundle, parse_bundle, sign_bundle
from policies.errors import QuorumError
from policies.model import Window
from tests.cli_helpers import custody
from tests.conftest import ADMINS, running_server
from tests.integration.conftest import ETH, make_daemon


def submit(daemon, tmp_path, amounts: list[str]) -> list[dict]:
    with (
        running_server(daemon.store, tmp_path) as srv,
        CustodyClient(srv.url, daemon.client_key.name, daemon.client_key.key) as client,
    ):
        return [
            client.create_withdrawal("ETH", a, daemon.recipients[i], idempotency_key=str(uuid.uuid4()))
            for i, a in enumerate(amounts)
        ]


def states(daemon) -> dict[str, str]:
    with daemon.store.read() as s:
        return dict(s.execute(select(Withdrawal.id, Withdrawal.state)).all())


def lift(daemon, freeze_id: str, signers: int) -> None:
    """A bundle identical to the active one but for ``unfreeze``, signed by ``signers`` admins."""
    now = int(time.time())
    with daemon.store.read() as s:
        current, active = policy_service.head(s)
    bundle = make_bundle(dataclasses.replace(active.policy, unfreeze=freeze_id), current, now)
    assert parse_bundle(bundle.raw).policy.unfreeze == freeze_id
    sigs = [sign_bundle(bundle.hash, k).to_bytes() for k in ADMINS[:signers]]
    policy_service.apply(daemon.store, bundle.raw, sigs, now)


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_freeze_holds_queued_and_signed_payments_and_only_a_quorum_unfreezes(tmp_path, db_url, chain):
    daemon = make_daemon(tmp_path, db_url, chain)
    worker = daemon.worker(chain)
    worker.ensure_wallet()
    worker.refresh_balances()  # until the hot balance is known, nothing is routed hot
    first, second = submit(daemon, tmp_path, ["1", "2"])
    assert worker.sign_next()  # the first is signed and stored, not yet broadcast
    out = custody("freeze", "--reason", "incident 42", "--config", daemon.config).output
    with daemon.store.read() as s:
        freeze_id = freeze.active(s).id
    assert freeze_id in out and "unfreeze" in out
    assert "already frozen" in custody("freeze", "--reason", "again", "--config", daemon.config).output

    for _ in range(3):
        worker.step()
    assert states(daemon) == {first["id"]: "signed", second["id"]: "queued_hot"}
    with daemon.store.read() as s:
        assert set(s.execute(select(HotTransaction.state)).scalars()) == {"signed"}
    assert chain.eth_balance(daemon.recipients[0]) == 0 == chain.eth_balance(daemon.recipients[1])
    (third,) = submit(daemon, tmp_path, ["0.5"])  # intake goes on
    assert third["state"] == "queued_hot"
    with pytest.raises(Frozen):
        batches.export(daemon.store, EthereumNode(chain.anvil.url, 31337), None, tmp_path / "out", int(time.time()))
    status = custody("status", "--config", daemon.config).output
    assert "FROZEN" in status and freeze_id in status and "incident 42" in status

    with pytest.raises(QuorumError):
        lift(daemon, freeze_id, signers=1)
    with daemon.store.read() as s:
        assert freeze.active(s).id == freeze_id
    lift(daemon, "0123456789abcdef", signers=2)  # a quorum, but for another freeze: this one stays
    with daemon.store.read() as s:
        assert freeze.active(s).id == freeze_id
    lift(daemon, freeze_id, signers=2)
    with daemon.store.read() as s:
        assert freeze.active(s) is None
        assert s.get_one(Freeze, freeze_id).lifted_by_bundle == 3
    for _ in range(20):
        worker.step()
        if set(states(daemon).values()) == {"confirmed"}:
            break
    assert set(states(daemon).values()) == {"confirmed"}
    assert (
        chain.eth_balance(daemon.recipients[0]) == ETH + ETH // 2 and chain.eth_balance(daemon.recipients[1]) == 2 * ETH
    )
    assert "intact" in custody("audit", "verify", "--config", daemon.config).output
    assert "running" in custody("status", "--config", daemon.config).output


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_automatic_freeze_trips_at_its_threshold(tmp_path, db_url, chain):
    daemon = make_daemon(tmp_path, db_url, chain, eth_auto_freeze=Window(3600, 3 * ETH))
    worker = daemon.worker(chain)
    worker.ensure_wallet()
    worker.refresh_balances()
    made = submit(daemon, tmp_path, ["1", "1", "1", "0.000000000000000001"])
    for _ in range(10):
        worker.step()
    # exactly 3 ETH was signed; the wei past it tripped the freeze, which also holds what was signed but not
    # yet sent: nothing leaves until a quorum looks at it
    now = states(daemon)
    assert [now[w["id"]] for w in made] == ["signed", "signed", "signed", "queued_hot"]
    with daemon.store.read() as s:
        active = freeze.active(s)
        assert freeze.hot_outflow(s, "ETH", int(time.time()) - 3600) == 3 * ETH
    assert active is not None and active.by == "auto:ETH" and "limit of 3 ETH per 1h" in active.reason
    assert all(chain.eth_balance(r) == 0 for r in daemon.recipients[:4])
