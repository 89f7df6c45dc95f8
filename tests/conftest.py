"""Fixtures shared by the daemon's tests: real SQLite and real PostgreSQL databases, a seeded policy,
and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from nacl.signing import SigningKey

from signer import sealed
from tests.bitcoin_node import bitcoind  # noqa: F401  (the session's bitcoind -regtest fixture)
from tests.browser import chromium  # noqa: F401  (one headless Chromium per test module)

PG_HOST = "127.0.0.1"
PRODUCT_SCRYPT_N = sealed.SCRYPT_N  # read before _test_kdf_cost lowers it
ADMINS = [SigningKey(bytes([i + 1]) * 32) for i in range(3)]
DAY = 86400
OMNIBUS = "0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"
MAKER = "0x4bF5122f344554C53BdE2EbB8CD2b7E3D1600ad6"
DENIED = "0xE52d9C508C502347344D8C07Ad91Cbd6068Afc75"


def postgres_available() -> bool:
    try:
        with psycopg.connect(host=PG_HOST, user="postgres", dbname="postgres", connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def _pg() -> None:
    if not postgres_available():
        pytest.fail("PostgreSQL is not reachable at 127.0.0.1:5432 (start it: see .ci/run)")


def make_postgres_db() -> tuple[str, str]:
    name = f"custody_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=PG_HOST, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+psycopg://postgres@{PG_HOST}:5432/{name}"


def drop_postgres_db(name: str) -> None:
    with psycopg.connect(host=PG_HOST, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'custody.db'}"
        return
    request.getfixturevalue("_pg")
    name, url = make_postgres_db()
    try:
        yield url
    finally:
        drop_postgres_db(name)


def policy_toml(
    now: int,
    *,
    admins: list[tuple[str, str]] | None = None,
    activation: int | None = None,
    activation_delay: str = "24h",
) -> str:
    """The daemon tests' policy; admins are (name, approval key hex), by default the ADMINS keys."""
    active = dt.datetime.fromtimestamp(activation or now - DAY, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if admins is None:
        admins = [(f"admin{i}", k.verify_key.encode().hex()) for i, k in enumerate(ADMINS)]
    admin_tables = "\n".join(f'[[governance.admins]]\nname = "{name}"\nkey = "{key}"\n' for name, key in admins)
    return f"""
format = 1
[governance]
quorum = 2
activation_delay = "{activation_delay}"
{admin_tables}
[assets.ETH]
decimals = 18
max_per_transfer = "100"
hot_limit = "5"
windows = [{{ period = "1h", limit = "250" }}]
delay_tiers = [{{ at_least = "10", delay = "1h" }}]
[assets.DAI]
enabled = false
contract = "0x6B175474E89094C44Da98b954EedeAC495271d0F"
decimals = 18
max_per_transfer = "1000"
hot_limit = "10"
[assets.USDC]
contract = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
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
[[deny]]
address = "{DENIED}"
note = "sanctioned"
"""


def governance_for_tests():
    from policies.loader import Reader

    return Reader(human=True).governance(
        {
            "quorum": 2,
            "activation_delay": "24h",
            "admins": [{"name": f"admin{i}", "key": k.verify_key.encode().hex()} for i, k in enumerate(ADMINS)],
        }
    )


def apply_policy(store, policy, now: int) -> None:
    """Genesis four days ago (the ADMINS, quorum 2), then ``policy`` as bundle 1 three days ago, signed by two."""
    from custody.ledger import policy as policy_service
    from policies.bundle import make_bundle, parse_genesis, sign_bundle

    with store.transaction() as s:
        genesis = parse_genesis(policy_service.install_genesis(s, governance_for_tests(), now - 4 * DAY))
    bundle = make_bundle(policy, genesis, now - 3 * DAY)
    sigs = [sign_bundle(bundle.hash, k).to_bytes() for k in ADMINS[:2]]
    policy_service.apply(store, bundle.raw, sigs, now)


def seed_policy(store, now: int) -> None:
    from policies.loader import load_policy_toml

    apply_policy(store, load_policy_toml(policy_toml(now)), now)


class MigratedTemplate:
    """One migrated SQLite database per session: a test's SQLite ``store`` starts as a copy of it instead of
    running every migration again. (PostgreSQL's CREATE DATABASE … TEMPLATE measured slower here than
    migrating, so PostgreSQL stores are migrated.)"""

    def __init__(self, folder: Path) -> None:
        self.folder, self.path = folder, None

    def fill(self, db_url: str) -> None:
        from custody.store.db import Store

        if not db_url.startswith("sqlite:///"):
            return
        if self.path is None:
            self.path = self.folder / "template.db"
            template = Store(f"sqlite:///{self.path}")
            template.migrate()
            template.dispose()
        shutil.copyfile(self.path, db_url.removeprefix("sqlite:///"))


@pytest.fixture(scope="session")
def _migrated(tmp_path_factory) -> MigratedTemplate:
    return MigratedTemplate(tmp_path_factory.mktemp("migrated"))


@pytest.fixture
def store(db_url, _migrated):
    from custody.store.db import Store

    _migrated.fill(db_url)
    s = Store(db_url)
    s.migrate()  # at head already: checks that, and costs a few milliseconds
    yield s
    s.dispose()


@pytest.fixture
def seeded(store):
    seed_policy(store, int(time.time()))
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    store: object
    settings: object


@contextmanager
def running_server(store, tmp_path, clock=None, **settings: object) -> Iterator[Server]:
    """A real uvicorn server for ``store`` on a free loopback port, in a thread, on ``clock`` (the system's by
    default); like ``custody serve``, uvicorn does not rewrite the client's address from proxy headers (the app
    does, for trusted proxies only)."""
    from custody.api.app import create_app
    from custody.clock import SystemClock
    from custody.config import Settings

    config = Settings(
        data_dir=tmp_path,
        database_url=store.url,
        **{"rate_limit_per_second": 1000, "rate_limit_burst": 1000, **settings},
    )  # type: ignore[arg-type]
    app = create_app(config, store, clock or SystemClock())
    try:
        with serving(app) as url:
            yield Server(url, store, config)
    finally:
        # what the app's lifespan does at shutdown (off here): without it every server left a group-commit
        # thread and its store behind, hundreds over a run
        app.state.services.intake.close()
        app.state.services.auth.nonces.close()


@contextmanager
def serving(app: object) -> Iterator[str]:
    """``app`` served by a real uvicorn on a free loopback port, in a thread, until the block ends; yields its
    URL. Lifespan off; uvicorn does not rewrite the client's address from proxy headers."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off", proxy_headers=False)
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not srv.started:
        if time.time() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture
def server(seeded, tmp_path) -> Iterator[Server]:
    with running_server(seeded, tmp_path) as srv:
        yield srv


@dataclass
class ClientKey:
    name: str
    key: SigningKey


@contextmanager
def seeded_server(tmp: Path) -> Iterator[tuple[Server, ClientKey]]:
    """A SQLite store in ``tmp`` with the test policy and a client key allowed everything, served."""
    from custody.store.db import Store

    store = Store(f"sqlite:///{tmp / 'custody.db'}")
    store.migrate()
    seed_policy(store, int(time.time()))
    client = add_client(store, scopes="withdraw,read,cancel")
    try:
        with running_server(store, tmp) as srv:
            yield srv, client
    finally:
        store.dispose()


def add_client(
    store, name: str = "backend", scopes: str = "withdraw,read,cancel", key: SigningKey | None = None
) -> ClientKey:
    from custody.intake import apikeys

    key = key or SigningKey.generate()
    apikeys.add_key(store, name, key.verify_key.encode().hex(), apikeys.parse_scopes(scopes), int(time.time()))
    return ClientKey(name, key)


@pytest.fixture(autouse=True)
def signer_home(tmp_path_factory, monkeypatch):
    """Every test's signer state (transcript, pins) in its own directory, never the user's home."""
    home = tmp_path_factory.mktemp("signer-home")
    monkeypatch.setenv("SIGNER_HOME", str(home))
    return home


@pytest.fixture(autouse=True, scope="session")
def _test_kdf_cost() -> Iterator[None]:
    """Secrets created in-process are sealed at scrypt's accepted minimum (N = 2^15, a quarter of a second less
    per seal and per opening) instead of the product's 2^17: hundreds of keystores are made and opened in the
    suite. Command lines run as separate processes (the quick start, the workers) keep 2^17, and
    tests/signer/test_keystore.py checks that default with the ``production_kdf`` fixture."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sealed, "SCRYPT_N", sealed.MIN_SCRYPT_N)
        yield


@pytest.fixture
def production_kdf(monkeypatch):
    """The product's scrypt cost, as the module defines it, for the test that checks it."""
    monkeypatch.setattr(sealed, "SCRYPT_N", PRODUCT_SCRYPT_N)
