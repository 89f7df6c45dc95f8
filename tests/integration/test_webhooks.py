"""Webhooks to a real receiver on 127.0.0.1: every event of a withdrawal's life, in order, signed; nothing lost
while the receiver is down or the dispatcher restarts."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from nacl.signing import VerifyKey
from sqlalchemy import or_, select

from custody.keys import load_identity
from custody.ops.webhooks import DOMAIN, Dispatcher, backlog, sync_endpoints
from custody.store.models import AuditEntry, ChainBalance, WebhookEndpoint
from tests.cli_helpers import custody
from tests.conftest import free_port
from tests.integration.conftest import PASSPHRASE, make_daemon
from tests.integration.test_freeze import submit


class Receiver:
    """A webhook receiver that records what it is sent; it can be stopped and started on the same port."""

    def __init__(self, port: int) -> None:
        self.port, self.received, self.server = port, [], None
        self.url = f"http://127.0.0.1:{port}/hooks"

    def start(self) -> Receiver:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def verified_events(receiver: Receiver, public_key: str) -> list[dict]:
    key, events = VerifyKey(bytes.fromhex(public_key)), []
    for headers, body in receiver.received:
        delivery, stamp = headers["X-Custody-Delivery"], headers["X-Custody-Timestamp"]
        message = b"\n".join([DOMAIN, delivery.encode(), stamp.encode(), hashlib.sha256(body).hexdigest().encode()])
        key.verify(message, bytes.fromhex(headers["X-Custody-Signature"]))  # raises if forged
        event = json.loads(body)
        assert event["id"] == delivery
        events.append(event)
    return events


def drain(dispatcher: Dispatcher, until: float) -> None:
    while time.time() < until and dispatcher.step() == 0 and _waiting(dispatcher):
        time.sleep(0.2)
    while dispatcher.step():
        pass


def _waiting(dispatcher: Dispatcher) -> bool:
    return backlog(dispatcher.store, dispatcher.urls)[dispatcher.urls[0]] > 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_event_arrives_in_order_signed_despite_downtime_and_restarts(tmp_path, db_url, chain):
    daemon = make_daemon(tmp_path, db_url, chain)
    receiver = Receiver(free_port())
    identity = load_identity(daemon.data_dir, PASSPHRASE)
    public = (daemon.data_dir / "identity.pub").read_text().strip()
    sync_endpoints(daemon.store, (receiver.url,), int(time.time()))  # configured before any withdrawal
    with daemon.store.read() as s:
        start = s.get_one(WebhookEndpoint, receiver.url).cursor

    worker = daemon.worker(chain)
    worker.ensure_wallet()
    worker.refresh_balances()
    hot, cold = submit(daemon, tmp_path, ["1", "20"])

    # the receiver is down: the first attempt fails and is retried later, nothing is skipped
    first = Dispatcher(daemon.store, identity, (receiver.url,), batch=2)
    assert first.step() == 0
    with daemon.store.read() as s:
        ep = s.get_one(WebhookEndpoint, receiver.url)
        assert ep.attempts == 1 and ep.cursor == start and "ConnectError" in ep.last_error
    first.close()
    # a restarted daemon (all it knows is in the database) still backs off: it does not even try yet
    restarted = Dispatcher(daemon.store, identity, (receiver.url,), batch=2)
    assert restarted.step() == 0
    with daemon.store.read() as s:
        assert s.get_one(WebhookEndpoint, receiver.url).attempts == 1
    restarted.close()
    for _ in range(10):
        worker.step()
        if submit_state(daemon, hot["id"]) == "confirmed":
            break

    # it comes back; a new dispatcher delivers it all once the backoff has passed
    receiver.start()
    try:
        second = Dispatcher(daemon.store, identity, (receiver.url,), batch=3)
        drain(second, time.time() + 10)
        second.close()
    finally:
        receiver.stop()
    events = verified_events(receiver, public)

    with daemon.store.read() as s:
        expected = list(
            s.execute(
                select(AuditEntry.seq)
                .where(
                    AuditEntry.seq > start,
                    or_(AuditEntry.kind.startswith("withdrawal."), AuditEntry.kind.startswith("batch.")),
                )
                .order_by(AuditEntry.seq)
            ).scalars()
        )
    assert [e["seq"] for e in events] == expected  # all of them, once each, in order
    life = [e["type"] for e in events if e["subject"] == hot["id"]]
    assert life == [
        "withdrawal.received",
        "withdrawal.queued_hot",
        "withdrawal.signed",
        "withdrawal.broadcast",
        "withdrawal.confirmed",
    ]
    assert [e["type"] for e in events if e["subject"] == cold["id"]] == [
        "withdrawal.received",
        "withdrawal.queued_cold",
    ]
    confirmed = next(e for e in events if e["type"] == "withdrawal.confirmed")
    assert confirmed["data"]["tx_hash"].startswith("0x")

    # the test command signs the same way
    receiver.received.clear()
    receiver.start()
    try:
        out = custody(
            "webhooks", "test", receiver.url, "--config", daemon.config, "--passphrase-file", daemon.passphrase_file
        )
    finally:
        receiver.stop()
    assert "answered HTTP 204" in out.output and verified_events(receiver, public)[0]["type"] == "test"


def submit_state(daemon, withdrawal_id: str) -> str:
    from custody.store.models import Withdrawal

    with daemon.store.read() as s:
        return s.execute(select(Withdrawal.state).where(Withdrawal.id == withdrawal_id)).scalar_one()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_worker_delivers_webhooks_and_a_killed_worker_loses_none(tmp_path, db_url, chain):
    """The real `custody worker` process, configured with a URL, killed with SIGKILL mid-way and restarted."""
    import os
    import signal
    import subprocess
    import sys

    daemon = make_daemon(tmp_path, db_url, chain)
    receiver = Receiver(free_port()).start()
    text = daemon.config.read_text().replace("urls = []", f'urls = ["{receiver.url}"]')
    text = text.replace("lease_seconds = 30", "lease_seconds = 2")  # a killed worker's lease runs out sooner
    daemon.config.write_text(text)
    sync_endpoints(daemon.store, (receiver.url,), int(time.time()))
    env = {k: v for k, v in os.environ.items() if k != "CUSTODY_DATABASE_URL"}
    args = [
        str(Path(sys.executable).parent / "custody"),
        "worker",
        "--config",
        str(daemon.config),
        "--passphrase-file",
        str(daemon.passphrase_file),
    ]

    def start() -> subprocess.Popen:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    worker = start()
    try:
        until = time.time() + 30
        while time.time() < until:  # the worker reads the hot balance before anything can be routed hot
            with daemon.store.read() as s:
                if s.execute(select(ChainBalance).limit(1)).first() is not None:
                    break
            time.sleep(0.1)
        made = submit(daemon, tmp_path, ["1", "2", "3"])
        until = time.time() + 30
        while len(receiver.received) < 3 and time.time() < until:
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        worker = start()
        until = time.time() + 60
        while time.time() < until:
            if {submit_state(daemon, w["id"]) for w in made} == {"confirmed"} and not backlog(
                daemon.store, (receiver.url,)
            )[receiver.url]:
                break
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        receiver.stop()
    events = verified_events(receiver, (daemon.data_dir / "identity.pub").read_text().strip())
    seqs = [e["seq"] for e in events]
    first_seen = list(dict.fromkeys(seqs))  # at least once: a repeat is allowed, a gap or reordering is not
    assert first_seen == sorted(first_seen) and len(seqs) - len(first_seen) <= 1
    for w in made:
        life = [e["type"] for e in events if e["subject"] == w["id"]]
        assert list(dict.fromkeys(life)) == [
            "withdrawal.received",
            "withdrawal.queued_hot",
            "withdrawal.signed",
            "withdrawal.broadcast",
            "withdrawal.confirmed",
        ], life
