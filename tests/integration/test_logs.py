"""Structured logs: a whole flow through the real `custody serve` and `custody worker` processes; every line
is JSON with a request id, and no line holds a secret the flow used."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from nacl.signing import SigningKey

from custody.api.client import CustodyAPIError, CustodyClient
from custody.intake.signatures import sign_request
from custody.keys import load_hot_account, load_identity
from signer.sealed import open_sealed
from tests.conftest import free_port
from tests.integration.conftest import PASSPHRASE, make_daemon

BIN = Path(sys.executable).parent


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "CUSTODY_DATABASE_URL"}
    with open(log, "wb") as stderr:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([str(BIN / "custody"), *args], stdout=subprocess.DEVNULL, stderr=stderr, env=env)


def secret_forms(secret: bytes | str) -> set[str]:
    if isinstance(secret, str):
        return {secret, secret.lower(), secret.upper()}
    h = secret.hex()
    return {h, h.upper(), "0x" + h, secret.hex(" ")[:47]}  # also a prefix written with spaces


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_whole_flow_logs_json_with_request_ids_and_never_a_secret(tmp_path, db_url, chain):
    daemon = make_daemon(tmp_path, db_url, chain)
    port = free_port()
    serve_log, worker_log = tmp_path / "serve.log", tmp_path / "worker.log"
    server = spawn(["serve", "--config", str(daemon.config), "--port", str(port)], serve_log)
    worker = spawn(
        ["worker", "--config", str(daemon.config), "--passphrase-file", str(daemon.passphrase_file)], worker_log
    )
    url = f"http://127.0.0.1:{port}"
    client_key = bytes(daemon.client_key.key).hex()
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        answer = httpx.get(url + "/healthz", headers={"X-Request-Id": "backend-trace-7"})
        assert answer.headers["X-Request-Id"] == "backend-trace-7"
        with CustodyClient(url, daemon.client_key.name, client_key) as c:
            for _ in range(100):  # the worker reads the hot balance first
                if {b["asset"]: b for b in c.balances()["assets"]}["ETH"]["hot"] != "0":
                    break
                time.sleep(0.1)
            hot = c.create_withdrawal("ETH", "1", daemon.recipients[0], idempotency_key=str(uuid.uuid4()))
            c.create_withdrawal("ETH", "20", daemon.recipients[1], idempotency_key=str(uuid.uuid4()))
            with pytest.raises(CustodyAPIError):
                c.create_withdrawal("ETH", "1", daemon.recipients[2].lower(), idempotency_key=str(uuid.uuid4()))
            for _ in range(150):
                if c.get_withdrawal(hot["id"])["state"] == "confirmed":
                    break
                time.sleep(0.1)
            assert c.get_withdrawal(hot["id"])["state"] == "confirmed"
        forged = sign_request(SigningKey(bytes(32)), "backend", int(time.time()), "GET", "/v1/ping", b"")
        assert httpx.get(url + "/v1/ping", headers=forged).status_code == 401
        page = httpx.get(url + "/metrics").text  # the same process's figures, with the node and balances
        assert "custody_node_up 1.0" in page and 'custody_withdrawals{asset="ETH",state="confirmed"} 1.0' in page
        assert 'custody_hot_balance{asset="ETH"} 49' in page  # 500 ETH funded, 1 paid, less gas
    finally:
        for proc in (worker, server):
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

    secrets = {
        "passphrase": secret_forms(PASSPHRASE),
        "API client key": secret_forms(bytes(daemon.client_key.key)),
        "daemon identity key": secret_forms(bytes(load_identity(daemon.data_dir, PASSPHRASE))),
        "hot private key": secret_forms(bytes(load_hot_account(daemon.data_dir, PASSPHRASE).key)),
        "hot seed": secret_forms(
            open_sealed((daemon.data_dir / "hot-seed.sealed").read_bytes(), PASSPHRASE, "hot-seed")
        ),
    }
    lines = serve_log.read_text().splitlines() + worker_log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(r["request_id"] for r in records) and len(records) > 5
    access = [r for r in records if r["logger"] == "custody.api"]
    assert {"backend-trace-7"} <= {r["request_id"] for r in access} and all(r["request_id"] != "-" for r in access)
    assert any(r["status"] == 401 for r in access) and any(r["status"] == 422 for r in access)
    moves = [r for r in records if r.get("withdrawal") == hot["id"]]
    assert [(r["message"], r["to"]) for r in moves if r["logger"] == "custody.api"] == [
        ("POST /v1/withdrawals 201", "queued_hot")  # intake's access line names what it made
    ]
    assert any("-> confirmed" in r["message"] for r in moves) and any("-> signed" in r["message"] for r in moves)
    for name, forms in secrets.items():
        for form in forms:
            leaked = [line for line in lines if form in line]
            assert not leaked, f"the {name} appears in the logs: {leaked[0][:200]}"
