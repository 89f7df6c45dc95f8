"""Customer payouts on a real anvil node: 200 customers, each paid to an address of their own that is on no
treasury whitelist (half in their address book, half unlisted), through the hot wallet and one cold batch
whose backend request signatures the offline signers verify. Every recipient holds exactly its amount."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace

from sqlalchemy import select

from custody.api.client import CustodyClient
from custody.store.models import Withdrawal
from policies.model import Backend, CustomerRules, Limits, Policy, Window
from signer.batchfile import parse_batch_file
from tests.cli_helpers import custody
from tests.conftest import DAY, running_server
from tests.integration.conftest import ETH, make_cold, recipients, sign_as
from tests.integration.test_hot_wallet import states_of, wait_until

CUSTOMERS = 200


def customer_payouts(policy: Policy, backend_key: str) -> Policy:
    """The test policy, plus: the client is a backend, a one-second address lock, unlisted payouts allowed."""
    assets = {
        symbol: replace(rule, unlisted=Limits(rule.max_per_transfer, (Window(DAY, 10**30),)))
        for symbol, rule in policy.assets.items()
    }
    return replace(
        policy, assets=assets, backends=(Backend("backend", backend_key),), customers=CustomerRules(address_lock=1)
    )


def asset_of(customer: int) -> str:
    return "ETH" if customer % 4 in (0, 1) else "TOK"


def test_two_hundred_customers_paid_to_their_own_addresses_hot_and_cold(tmp_path, db_url, chain):
    daemon, ops, _, cfg, _ = make_cold(tmp_path, db_url, chain, customer_payouts)
    worker = daemon.worker(chain)
    worker.step()  # registers the wallet and reads its balances, so intake can route hot
    destinations = recipients(CUSTOMERS, salt="customer")
    in_book = set(range(0, CUSTOMERS, 2))  # even customers pay to an address-book entry, odd ones unlisted
    expected: dict[str, tuple[str, int]] = {}
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, 0.1), daemon=True)
    thread.start()
    try:
        with (
            running_server(daemon.store, tmp_path) as srv,
            CustodyClient(srv.url, daemon.client_key.name, daemon.client_key.key) as client,
        ):
            for i in sorted(in_book):
                entry = client.add_address(f"cust-{i}", asset_of(i), destinations[i], f"customer {i}'s wallet")
                assert entry["state"] == "locked"
            time.sleep(2.1)  # past the one-second lock, in whole seconds of the signed timestamps too
            for i, destination in enumerate(destinations):
                cold = i % 3 == 0  # about a third above the hot limit: paid from the cold wallet
                asset = asset_of(i)
                if asset == "ETH":
                    amount, base = (
                        (f"6.{i:03d}", 6 * ETH + i * 10**15) if cold else (f"0.{i + 1:03d}", (i + 1) * 10**15)
                    )
                else:
                    amount, base = (
                        (f"{20000 + i}.25", (20000 + i) * 10**6 + 250_000)
                        if cold
                        else (f"{i + 1}.5", (i + 1) * 10**6 + 500_000)
                    )
                w = client.create_withdrawal(
                    asset, amount, destination, idempotency_key=str(uuid.uuid4()), customer=f"cust-{i}"
                )
                assert w["state"] == ("queued_cold" if cold else "queued_hot"), w
                kind = "address_book" if i in in_book else "unlisted"
                assert w["decision"]["destination_kind"] == kind, w["decision"]
                expected[destination] = (asset, base)
            hot = sum(1 for i in range(CUSTOMERS) if i % 3)
            wait_until(lambda: states_of(daemon.store).get("confirmed") == hot, timeout=300)
    finally:
        stop.set()
        thread.join(30)

    out = custody("batch", "export", "--out", tmp_path / "batches", "--max", 100, *cfg).output
    (batch_file,) = (tmp_path / "batches").glob("batch-*.json")
    doc = parse_batch_file(batch_file.read_bytes()).batch
    assert len(doc.withdrawals) == CUSTOMERS - hot, out
    assert all(w.request is not None for w in doc.withdrawals)  # each carries its backend's signed request
    sign_as(ops[0], batch_file, tmp_path / "sig0.json", daemon.passphrase_file)
    sign_as(ops[1], batch_file, tmp_path / "sig1.json", daemon.passphrase_file)
    out = custody("batch", "import", tmp_path / "sig0.json", tmp_path / "sig1.json", *cfg).output
    assert "executed" in out, out

    for destination, (asset, base) in expected.items():
        held = chain.eth_balance(destination) if asset == "ETH" else chain.token_balance(destination)
        assert held == base, (destination, asset, held, base)
    with daemon.store.read() as s:
        rows = s.execute(select(Withdrawal.state, Withdrawal.customer, Withdrawal.destination_kind)).all()
    assert {state for state, _, _ in rows} == {"confirmed"} and len(rows) == CUSTOMERS
    assert {customer for _, customer, _ in rows} == {f"cust-{i}" for i in range(CUSTOMERS)}
    assert sorted(kind for _, _, kind in rows).count("unlisted") == CUSTOMERS - len(in_book)
