"""Database outages a real deployment meets, with real `custody serve` and `custody worker` processes:

- PostgreSQL stopped and started again under load (on a cluster this test makes on its own port, never the
  shared one): every request of a client with its default retry budget succeeds, exactly once; everything
  is paid once; the audit chain verifies; each process logs the outage in a bounded number of lines;
- a worker frozen (SIGSTOP) inside its transaction, holding the audit head, on PostgreSQL with two replicas:
  intake comes back within the server's timeouts instead of stalling for the whole freeze, and once the worker
  is woken nothing is lost or paid twice;
- SQLite on a full disk (a small tmpfs): clean 503s, nothing half-written, an intact database, and recovery
  once space is freed.

Each prints what it measured. `make test` runs them with shorter outages than the issue's (the timeouts are
what is tested, so a freeze longer than them shows the same thing); `make chaos` runs the issue's figures
(PostgreSQL down 20 s, a worker frozen 30 s) by setting CUSTODY_CHAOS_LONG=1.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import select

from custody.api.client import CustodyClient
from custody.config import render_config
from custody.failpoints import STOP_ENV
from custody.hot.sender import FAILPOINT_ENV
from custody.intake.signatures import sign_request
from custody.store.db import Store
from custody.store.models import ChainBalance, HotTransaction, Withdrawal
from tests.cli_helpers import custody
from tests.conftest import OMNIBUS, add_client, free_port, seed_policy
from tests.integration.conftest import make_daemon
from tests.integration.test_webhooks import Receiver

BIN = Path(sys.executable).parent
LONG = os.environ.get("CUSTODY_CHAOS_LONG") == "1"
PG_DOWN = 20.0 if LONG else 12.0  # seconds PostgreSQL stays stopped (the old client gave up after about 3 s)
FREEZE = 30.0 if LONG else 15.0  # seconds a worker stays frozen (the idle and lock timeouts are 5 s)
FREEZE_ANSWER_WITHIN = 12.0  # a request made during a freeze is answered within this (5 s timeouts + retries)


# -- processes and their logs -------------------------------------------------------------------------------
class Proc:
    """A `custody` process whose JSON log lines (stderr) go to a file of their own."""

    def __init__(self, name: str, args: list[str], logs: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.log = name, logs / f"{name}.log"
        clean = {k: v for k, v in os.environ.items() if k not in ("CUSTODY_DATABASE_URL", FAILPOINT_ENV, STOP_ENV)}
        with open(self.log, "ab") as err, open(logs / f"{name}.out", "ab") as out:
            self.popen = subprocess.Popen(
                [str(BIN / "custody"), *args], stdout=out, stderr=err, env=clean | (env or {})
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def lines(self) -> list[dict]:
        out = []
        for raw in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append({"level": "error", "logger": "(not json)", "message": raw[:200]})
        return out

    def noisy(self) -> list[dict]:
        """What this process logged above info level: warnings, errors, tracebacks."""
        return [x for x in self.lines() if x.get("level") not in ("info", "debug")]


def serve(daemon_config: Path, logs: Path, name: str) -> tuple[Proc, str]:
    port = free_port()
    return Proc(name, ["serve", "--config", str(daemon_config), "--port", str(port)], logs), f"http://127.0.0.1:{port}"


def worker(daemon, logs: Path, name: str, env: dict[str, str] | None = None) -> Proc:
    args = ["worker", "--config", str(daemon.config), "--passphrase-file", str(daemon.passphrase_file)]
    return Proc(name, args, logs, env)


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not ready():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def answers(url: str, path: str = "/readyz") -> bool:
    try:
        return httpx.get(url + path, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def stopped(pid: int) -> bool:
    """True while the process is stopped (SIGSTOP): state T in /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")


def report_logs(procs: list[Proc]) -> dict[tuple[str, str], list[dict]]:
    """Each process's lines above info, by (process, logger); printed as a count."""
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for p in procs:
        for line in p.noisy():
            by[(p.name, line.get("logger", "?"))].append(line)
    for (proc, logger), lines in sorted(by.items()):
        tracebacks = sum(1 for x in lines if "traceback" in x)
        back = "; ".join(x["message"] for x in lines if "reachable again" in x.get("message", ""))
        print(f"  {proc:<9} {logger:<18} {len(lines):>3} lines above info, {tracebacks} with a traceback  {back}")
    return by


def said_back(proc: Proc, loop: str) -> bool:
    return any(x.get("message", "").startswith(f"{loop}: database reachable again") for x in proc.lines())


def one_each(lines: list[dict], loop: str) -> None:
    """The loop said once that the database was unreachable and once that it was back."""
    down = [x for x in lines if x["message"].startswith(f"{loop}: database unreachable since")]
    back = [x for x in lines if x["message"].startswith(f"{loop}: database reachable again after")]
    assert len(down) == 1 and len(back) == 1, [x["message"] for x in lines]


# -- load: withdrawals through CustodyClient with its default retry budget -------------------------------------
@dataclass
class Sent:
    key: str
    replica: int
    recipient: str
    amount: str
    started: float
    ended: float = 0.0
    answer: dict | None = None
    error: str | None = None


class Load:
    """Threads that each send one withdrawal after another, alternating replicas, through a CustodyClient
    with its default retry budget (no ``retries`` cap), as the exchange backend would."""

    def __init__(self, daemon, urls: list[str], threads: int = 4, pause: float = 0.25) -> None:
        self.daemon, self.urls, self.pause = daemon, urls, pause
        self.sent: list[Sent] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def _run(self, n: int) -> None:
        key = self.daemon.client_key
        clients = [CustodyClient(u, key.name, key.key) for u in self.urls]
        i = 0
        try:
            while not self.stop.is_set():
                replica = (n + i) % len(clients)
                recipient = self.daemon.recipients[(n * 7 + i) % len(self.daemon.recipients)]
                amount = str(Decimal("0.001") + Decimal(n * 1000 + i) / 10**9)
                s = Sent(uuid.uuid4().hex, replica, recipient, amount, time.time())
                try:
                    s.answer = clients[replica].create_withdrawal("ETH", amount, recipient, idempotency_key=s.key)
                except Exception as exc:  # recorded; the test fails on any
                    s.error = f"{type(exc).__name__}: {exc}"
                s.ended = time.time()
                with self.lock:
                    self.sent.append(s)
                i += 1
                self.stop.wait(self.pause)
        finally:
            for c in clients:
                c.close()


def check_paid_once(daemon, chain, load: Load, timeout: float = 120.0) -> None:
    """Every request succeeded; each key made one withdrawal; each is confirmed and paid once; no nonce gap;
    asked again (on the other replica), each key answers the same withdrawal."""
    failed = [s for s in load.sent if s.error]
    assert not failed, failed[:3]
    accepted = {s.answer["id"]: s for s in load.sent}
    assert len(accepted) == len(load.sent)
    for s in load.sent:
        assert s.answer["decision"]["route"] == "hot" and s.answer["state"] != "rejected", s.answer
    key = daemon.client_key
    for s in load.sent[::5]:
        with CustodyClient(load.urls[(s.replica + 1) % len(load.urls)], key.name, key.key) as c:
            again = c.create_withdrawal("ETH", s.amount, s.recipient, idempotency_key=s.key)
        assert again["id"] == s.answer["id"]

    def states() -> Counter:
        with daemon.store.read() as db:
            return Counter(db.execute(select(Withdrawal.state)).scalars())

    wait_for("every withdrawal confirmed", lambda: states() == Counter({"confirmed": len(accepted)}), timeout)
    with daemon.store.read() as db:
        assert set(db.execute(select(Withdrawal.id)).scalars()) == set(accepted)
        keys = Counter(db.execute(select(Withdrawal.idempotency_key)).scalars())
        mined = list(
            db.execute(
                select(HotTransaction.nonce).where(HotTransaction.state == "mined").order_by(HotTransaction.nonce)
            ).scalars()
        )
    assert keys == Counter(s.key for s in load.sent)
    owed: dict[str, int] = defaultdict(int)
    for s in load.sent:
        owed[s.recipient] += int(s.answer["amount_base_units"])
    for recipient, amount in owed.items():
        assert chain.eth_balance(recipient) == amount, recipient  # paid exactly once
    assert mined == list(range(len(accepted)))  # one mined transaction per nonce, no gap
    assert "intact" in custody("audit", "verify", "--config", daemon.config).output


def hot_balance_known(daemon) -> bool:
    with daemon.store.read() as s:
        return s.execute(select(ChainBalance).where(ChainBalance.wallet == daemon.hot)).first() is not None


# -- a PostgreSQL cluster of the test's own ------------------------------------------------------------------
def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Cluster:
    """A throwaway PostgreSQL cluster on a free port, its socket in its own directory; as root, its files
    belong to the postgres user (initdb refuses to run as root)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="custody-pg-"))  # not under pytest's 0700 root-only tmp
        self.data, self.log, self.port = self.root / "data", self.root / "server.log", free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/custody"

    def _run(self, *args: str, check: bool = True) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=check, capture_output=True, timeout=60)

    def create(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self.start()
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE custody")

    def start(self) -> None:
        # fsync off: the machine does not crash in this test, and two shared cores need no extra disk waits
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster():
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl) on this machine")
    c = Cluster(bindir)
    try:
        c.create()
        yield c
    finally:
        c.destroy()


# -- 1. PostgreSQL stopped and started again under load -------------------------------------------------------
def test_postgres_stopped_and_restarted_under_load(tmp_path, cluster, chain):
    daemon = make_daemon(tmp_path, cluster.url, chain, n_recipients=20)
    receiver = Receiver(free_port()).start()
    text = daemon.config.read_text()
    daemon.config.write_text(text.replace("urls = []", f'urls = ["{receiver.url}"]'))
    logs = tmp_path / "logs"
    logs.mkdir()
    (a, url_a), (b, url_b) = serve(daemon.config, logs, "serve-a"), serve(daemon.config, logs, "serve-b")
    procs = [a, b, worker(daemon, logs, "worker")]
    loops = [(a, "api"), (a, "scheduler"), (b, "api"), (b, "scheduler"), (procs[2], "webhooks")]
    ready: dict[str, list[float]] = defaultdict(list)  # url -> times /readyz answered 200
    probing = threading.Event()

    def probe() -> None:
        while not probing.wait(0.1):
            for url in (url_a, url_b):
                if answers(url):
                    ready[url].append(time.time())

    prober = threading.Thread(target=probe)
    try:
        wait_for("both replicas", lambda: answers(url_a) and answers(url_b))
        wait_for("the worker to read the hot balance", lambda: hot_balance_known(daemon))
        prober.start()
        with Load(daemon, [url_a, url_b], threads=8, pause=0.5) as load:
            time.sleep(2)
            down_at = time.time()
            cluster.stop()
            time.sleep(PG_DOWN)
            cluster.start()
            up_at, delivered_before = time.time(), len(receiver.received)
            time.sleep(4)  # load goes on after the restart
        probing.set()
        prober.join()
        check_paid_once(daemon, chain, load)
        # a loop that was waiting out its backoff (up to 10 s) when the database came back notices a bit later
        wait_for("every loop to see the database again", lambda: all(said_back(p, loop) for p, loop in loops), 30)
    finally:
        probing.set()
        for p in procs:
            p.stop()
        receiver.stop()
        daemon.store.dispose()

    during = [s for s in load.sent if s.started < up_at and s.ended > down_at]
    back = {url: min((t for t in times if t > up_at), default=float("inf")) - up_at for url, times in ready.items()}
    first_intake = min(s.ended for s in load.sent if s.ended > up_at) - up_at
    print(
        f"\nPostgreSQL down {up_at - down_at:.1f} s: {len(load.sent)} withdrawals, {len(during)} of them caught by"
        f" the outage, all succeeded; longest request {max(s.ended - s.started for s in load.sent):.1f} s;"
        f" readiness back {max(back.values()):.1f} s after the restart, first withdrawal answered"
        f" {first_intake:.1f} s after it; webhook deliveries: {delivered_before} before the restart,"
        f" {len(receiver.received)} at the end"
    )
    by = report_logs(procs)
    assert during, "no request was caught by the outage"
    assert max(back.values()) < 5, back
    assert len(receiver.received) > delivered_before  # the dispatcher took its lease back and went on
    for (proc, logger), lines in by.items():  # every loop, the hot worker's included, runs on custody.outage
        assert not [x for x in lines if "traceback" in x], (proc, logger, lines[:2])
        assert len(lines) <= 3, (proc, logger, [x["message"] for x in lines])
    for proc in ("serve-a", "serve-b"):
        one_each(by[(proc, "custody.cli")], "scheduler")
        one_each(by[(proc, "custody.api")], "api")
    one_each(by[("worker", "custody.webhooks")], "webhooks")


# -- 2. a worker frozen inside its transaction, holding the audit head ---------------------------------------
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_worker_frozen_holding_the_audit_head_stalls_intake_only_until_the_timeouts(tmp_path, db_url, chain):
    daemon = make_daemon(tmp_path, db_url, chain, n_recipients=20)
    logs = tmp_path / "logs"
    logs.mkdir()
    arm = tmp_path / "freeze-now"
    (a, url_a), (b, url_b) = serve(daemon.config, logs, "serve-a"), serve(daemon.config, logs, "serve-b")
    frozen = worker(daemon, logs, "worker-a", {STOP_ENV: f"audit.appended@{arm}"})
    procs = [a, b, frozen, worker(daemon, logs, "worker-b")]
    try:
        wait_for("both replicas", lambda: answers(url_a) and answers(url_b))
        wait_for("the workers to read the hot balance", lambda: hot_balance_known(daemon))
        with Load(daemon, [url_a, url_b], threads=4, pause=0.4) as load:
            time.sleep(2)
            arm.touch()  # worker-a stops itself at its next audit entry, inside that transaction
            wait_for("worker-a to freeze", lambda: not arm.exists() and stopped(frozen.pid), timeout=30)
            frozen_at = time.time()
            time.sleep(FREEZE)
            assert stopped(frozen.pid)
            os.kill(frozen.pid, signal.SIGCONT)
            woken_at = time.time()
            time.sleep(3)
        assert frozen.popen.poll() is None  # woken, its transaction gone, it carries on
        check_paid_once(daemon, chain, load)
    finally:
        for p in procs:
            p.stop()
        daemon.store.dispose()

    during = [s for s in load.sent if frozen_at <= s.started < woken_at]
    slowest = max(s.ended - s.started for s in during)
    first = min(s.ended for s in load.sent if s.ended > frozen_at) - frozen_at
    print(
        f"\nworker frozen {woken_at - frozen_at:.1f} s holding the audit head: {len(during)} withdrawals made"
        f" meanwhile, the slowest answered in {slowest:.1f} s, the first {first:.1f} s into the freeze;"
        f" {len(load.sent)} in all, each paid once"
    )
    report_logs(procs)
    assert len(during) >= 10, len(during)
    # Not stalled for the whole freeze: the server ended the frozen session (idle in transaction) while the
    # process was still stopped, which is the only way its lock could go.
    assert slowest < FREEZE_ANSWER_WITHIN and first < FREEZE_ANSWER_WITHIN, (slowest, first)


# -- 3. SQLite on a full disk --------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs of the test's own (mounting needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no space left."""
    path, chunk = directory / "filler", b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    with open(path, "ab", buffering=0) as f:  # the last partial pages too
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return path


def test_sqlite_on_a_full_disk_answers_503_and_recovers(tmp_path, small_disk):
    data = small_disk / "data"
    data.mkdir()
    db = data / "custody.db"
    config = data / "custody.toml"
    config.write_text(render_config(data, f"sqlite:///{db}"))
    store = Store(f"sqlite:///{db}")
    store.migrate()
    seed_policy(store, int(time.time()))
    ck = add_client(store)
    store.dispose()
    logs = tmp_path / "logs"
    logs.mkdir()
    proc, url = serve(config, logs, "serve")
    body = b'{"asset":"ETH","amount":"1","destination":"%s"}' % OMNIBUS.encode()

    def once(key: str) -> httpx.Response:
        headers = sign_request(ck.key, ck.name, int(time.time()), "POST", "/v1/withdrawals", body, key)
        return httpx.post(url + "/v1/withdrawals", content=body, headers=headers, timeout=30)

    statuses: dict[str, int] = {}
    try:
        wait_for("the server", lambda: answers(url))
        for _ in range(5):
            key = uuid.uuid4().hex
            statuses[key] = once(key).status_code
        with sqlite3.connect(db) as conn:  # an empty WAL, so the next write needs new space
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = fill(small_disk)
        full = []
        for _ in range(50):
            key = uuid.uuid4().hex
            answer = once(key)
            statuses[key] = answer.status_code
            if answer.status_code == 503:
                assert answer.json()["code"] == "database_unavailable" and answer.headers["Retry-After"] == "1"
                full.append(key)
                if len(full) == 10:
                    break
        assert len(full) == 10, Counter(statuses.values())

        result: dict = {}

        def patient() -> None:  # a client with the default budget, sent while the disk is still full
            with CustodyClient(url, ck.name, ck.key) as c:
                result["w"] = c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key="patient")
            result["at"] = time.time()

        waiting = threading.Thread(target=patient)
        waiting.start()
        time.sleep(2.5)
        filler.unlink()
        freed_at = time.time()
        waiting.join(60)
        for _ in range(5):
            key = uuid.uuid4().hex
            statuses[key] = once(key).status_code
    finally:
        proc.stop()

    print(
        f"\nSQLite on a full disk: {len(full)} requests answered 503 database_unavailable, none 500; a client"
        f" waiting with its default budget got through {result['at'] - freed_at:.1f} s after space was freed"
    )
    by = report_logs([proc])
    assert set(statuses.values()) <= {201, 503}, Counter(statuses.values())
    assert [k for k, s in statuses.items() if s != 201] == full  # only while full, every one after it freed
    assert result["w"]["state"] == "queued_cold" and result["at"] > freed_at  # it waited for the space
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        made = Counter(k for (k,) in conn.execute("SELECT idempotency_key FROM withdrawals"))
    assert made == Counter([k for k, s in statuses.items() if s == 201] + ["patient"])  # 503: nothing written
    assert "intact" in custody("audit", "verify", "--config", config).output
    assert not [x for lines in by.values() for x in lines if "traceback" in x]
    one_each(by[("serve", "custody.api")], "api")
