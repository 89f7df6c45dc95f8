"""Withdrawal intake against a running `custody serve`, on SQLite and on PostgreSQL.

For SQLite (one replica) and PostgreSQL (one and two replicas): a fresh database with a quorum-signed
policy, the `custody serve` processes, and a separate load process sending signed requests over
keep-alive connections spread over the replicas: first the signed no-op GET /v1/ping (the baseline: auth,
nonce, routing), then POST /v1/withdrawals. Prints requests/s, p50 and p99 for both and the ratio.
Everything shares this machine's cores: the servers, PostgreSQL and the load process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from nacl.signing import SigningKey

from custody.config import render_config
from custody.intake import apikeys
from custody.store.db import Store
from tests.conftest import drop_postgres_db, free_port, make_postgres_db, postgres_available, seed_policy

HERE = Path(__file__).parent
TOTAL = int(os.environ.get("BENCH_INTAKE_REQUESTS", "8000"))
CONNECTIONS = int(os.environ.get("BENCH_INTAKE_CONNECTIONS", "128"))


def prepare(url: str, data_dir: Path) -> tuple[Path, SigningKey]:
    store = Store(url)
    store.migrate()
    seed_policy(store, int(time.time()))
    key = SigningKey.generate()
    apikeys.add_key(store, "bench", key.verify_key.encode().hex(), frozenset({"withdraw", "read"}), int(time.time()))
    store.dispose()
    config = data_dir / "custody.toml"
    text = render_config(data_dir, url).replace("rate_limit_per_second = 200", "rate_limit_per_second = 1000000")
    config.write_text(text.replace("rate_limit_burst = 400", "rate_limit_burst = 1000000"))
    return config, key


def load(url: str, key: SigningKey, kind: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(HERE / "load.py"), url, "bench", bytes(key).hex(), kind, str(TOTAL), str(CONNECTIONS)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": "."},
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def measure(label: str, db_url: str, replicas: int = 1) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        config, key = prepare(db_url, Path(tmp))
        ports = [free_port() for _ in range(replicas)]
        env = {k: v for k, v in os.environ.items() if k != "CUSTODY_DATABASE_URL"}
        servers = [
            subprocess.Popen(
                [str(Path(sys.executable).parent / "custody"), "serve", "--config", str(config), "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for port in ports
        ]
        try:
            bases = [f"http://127.0.0.1:{port}" for port in ports]
            for base in bases:
                for _ in range(200):
                    try:
                        httpx.get(base + "/readyz", timeout=1)
                        break
                    except httpx.TransportError:
                        time.sleep(0.05)
            ping = load(",".join(bases), key, "ping")
            intake = load(",".join(bases), key, "intake")
        finally:
            for server in servers:
                server.terminate()
                server.wait(20)
    for name, r in (("signed no-op", ping), ("intake", intake)):
        print(
            f"{label:<10} {name:<13} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
            f"statuses {r['statuses']}"
        )
    print(f"{label:<10} intake / no-op ratio {intake['rps'] / ping['rps']:.2f}")
    return {"ping": ping, "intake": intake}


def run() -> None:
    print(f"intake benchmark: {TOTAL} requests per measurement over {CONNECTIONS} connections from a separate process")
    with tempfile.TemporaryDirectory() as tmp:
        measure("sqlite", f"sqlite:///{tmp}/bench.db")
    if not postgres_available():
        print("postgres   skipped: no server at 127.0.0.1:5432")
        return
    for replicas in (1, 2):
        name, url = make_postgres_db()
        try:
            figures = measure(f"pg x{replicas}", url, replicas)
        finally:
            drop_postgres_db(name)
    rate, ratio = figures["intake"]["rps"], figures["intake"]["rps"] / figures["ping"]["rps"]
    print(
        f"targets (pg x2): >= 1000 withdrawals/s: {rate:.0f} {'met' if rate >= 1000 else 'NOT met'}; "
        f"intake >= 0.40 of the no-op: {ratio:.2f} {'met' if ratio >= 0.40 else 'NOT met'}"
    )


if __name__ == "__main__":
    run()
