"""The daemon's configuration file, `custody.toml`, written commented by `custody init`."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custody.errors import ConfigError
from custody.store.db import Timeouts
from policies.errors import AmountError, PolicyFileError
from policies.reading import BaseReader
from policies.units import parse_amount

DATABASE_ENV = "CUSTODY_DATABASE_URL"
SECTIONS = {"daemon", "database", "api", "chain", "bitcoin", "webhooks"}
TIMEOUT_KEYS = {  # [database] key -> Timeouts field
    "idle_in_transaction_timeout_seconds": "idle_in_transaction",
    "lock_timeout_seconds": "lock",
    "statement_timeout_seconds": "statement",
    "connect_timeout_seconds": "connect",
}

TEMPLATE = """\
# Configuration of the custody daemon, written by `custody init`. Edit freely; unknown keys are refused.

[daemon]
# Where the daemon keeps its sealed keys and, by default, its SQLite database.
data_dir = {data_dir}
# SQLAlchemy URL of the database. For PostgreSQL (several replicas share one database):
#   database_url = "postgresql+psycopg://custody@127.0.0.1:5432/custody"
# The environment variable CUSTODY_DATABASE_URL, when set, overrides this.
database_url = {database_url}
# The HTTP API listens here. Keep it on loopback or behind a TLS-terminating proxy.
listen_host = "127.0.0.1"
listen_port = 8700

[database]
# PostgreSQL only: limits the server enforces on each of the daemon's sessions, in seconds (0 turns one off).
# A session idle inside a transaction this long is ended and its transaction rolled back, so a stalled
# process (paused, swapping) cannot hold the row locks every replica's intake needs for longer than this.
idle_in_transaction_timeout_seconds = 5
# A statement waiting this long for a lock fails; the API answers 503 database_unavailable and the client
# retries.
lock_timeout_seconds = 5
# Any one statement running this long is cancelled (migrations are exempt).
statement_timeout_seconds = 30
# Giving up on connecting to an unreachable database.
connect_timeout_seconds = 5

[api]
# A signed request's timestamp must be within this many seconds of the daemon's clock.
max_clock_skew_seconds = 30
# Requests per second allowed for each API key (a token bucket of `rate_limit_burst` tokens).
rate_limit_per_second = 200
rate_limit_burst = 400
# Request bodies larger than this are refused with 413.
max_body_bytes = 65536
# Reverse proxies in front of the API (CIDR networks, e.g. ["127.0.0.1/32"]). Only when the direct peer is in
# one of them is the client's address read from X-Forwarded-For: the rightmost entry that is not itself a
# trusted proxy. The client's address is what the policy's per-key `sources` are checked against; empty: the
# direct peer is the client, and X-Forwarded-For is ignored.
trusted_proxies = []

[chain]
# The Ethereum node's JSON-RPC URL; the daemon refuses to work if its chain id differs from chain_id.
# Leave rpc_url empty to run without a chain (intake only; nothing is paid).
rpc_url = {rpc_url}
chain_id = {chain_id}
# Blocks, the one including a payment counted, before it counts as confirmed (1 = once it is in a block). A
# rollback of fewer blocks cannot undo a confirmed payment; one that does freezes payments (see the README).
confirmations = {confirmations}
# Fee cap per gas, in gwei: the hot wallet never bids more, not even to replace a stuck transaction.
max_fee_per_gas_gwei = "200"
# A payment not mined after this many seconds is replaced at the same nonce with fees at least 12.5 % higher.
stuck_after_seconds = 120
# After confirmation, blocks during which the worker keeps checking that a payment's block is still canonical
# (64 is two epochs, when Ethereum finalises). The wallet's nonce on chain is checked against every payment.
settled_watch_blocks = 64

[bitcoin]
# The bitcoind JSON-RPC URL that holds the Bitcoin cold wallet's watch-only descriptor wallet; empty: no Bitcoin.
# Log in with rpc_user and rpc_password, or leave both empty and give rpc_cookie_file (the node's .cookie).
rpc_url = {bitcoin_rpc_url}
rpc_user = {bitcoin_rpc_user}
rpc_password = {bitcoin_rpc_password}
rpc_cookie_file = ""
# Blocks, the one including a batch's transaction counted, before its withdrawals count as confirmed.
confirmations = {bitcoin_confirmations}
# The fee rate (sat/vB) a batch offers when the node has no estimate (regtest, a young node); always capped by
# the asset's max_fee_rate in the policy.
fallback_fee_rate = 10
# A broadcast batch transaction not confirmed this long after it was sent is reported stuck (a log line, an
# audit entry, `custody status`); `custody batch bump BATCH_ID` then exports a fee-bump replacement to sign.
stuck_after = "{bitcoin_stuck_after}"
# A hot payment (from the hot wallet's Bitcoin account) sent and not mined this long is replaced by a version
# paying a higher fee (BIP-125: same coins, same payouts), within the asset's max_fee_rate and max_fee.
hot_stuck_after = "30m"

[webhooks]
# Every state change of a withdrawal or batch is POSTed to each URL, in order, signed with the daemon's
# Ed25519 key (see the README), from a persistent outbox: retried with backoff until the receiver answers 2xx.
# A URL added later receives the events from then on.
urls = []
# Each URL is leased to one worker at a time; a worker that dies holding it delays that URL's events this long.
lease_seconds = 30
"""


@dataclass(frozen=True)
class BitcoinSettings:
    """The ``[bitcoin]`` section. The password is kept out of ``repr`` so that no log line or traceback shows it."""

    rpc_url: str = ""
    rpc_user: str = ""
    rpc_password: str = field(default="", repr=False)
    rpc_cookie_file: str = ""
    confirmations: int = 3
    fallback_fee_rate: int = 10  # sat/vB
    # seconds: a hot payment sent and not mined this long is replaced with a higher fee (BIP-125)
    hot_stuck_after: int = 1800
    stuck_after: int = 3600  # seconds: a broadcast batch unconfirmed this long is reported stuck

    def login(self) -> tuple[str, str]:
        """(user, password): the configured pair, else the node's cookie file (``__cookie__:<password>``)."""
        if self.rpc_user or self.rpc_password or not self.rpc_cookie_file:
            return self.rpc_user, self.rpc_password
        try:
            user, _, password = Path(self.rpc_cookie_file).read_text(encoding="utf-8").strip().partition(":")
        except OSError as exc:
            raise ConfigError(f"[bitcoin] rpc_cookie_file {self.rpc_cookie_file}: {exc.strerror}") from None
        if not user or not password:
            raise ConfigError(f"[bitcoin] rpc_cookie_file {self.rpc_cookie_file} is not a bitcoind cookie file")
        return user, password


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 8700
    max_clock_skew_seconds: int = 30
    rate_limit_per_second: float = 200.0
    rate_limit_burst: int = 400
    max_body_bytes: int = 65536
    trusted_proxies: tuple[str, ...] = ()  # CIDR networks, normalised (ipaddress's spelling)
    rpc_url: str = ""
    chain_id: int = 31337
    confirmations: int = 3
    max_fee_per_gas: int = 200 * 10**9
    stuck_after_seconds: int = 120
    settled_watch_blocks: int = 64
    webhook_urls: tuple[str, ...] = ()
    webhook_lease_seconds: float = 30.0
    bitcoin: BitcoinSettings = field(default_factory=BitcoinSettings)
    database_timeouts: Timeouts = field(default_factory=Timeouts)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(
    data_dir: Path,
    database_url: str,
    *,
    rpc_url: str = "",
    chain_id: int = 31337,
    confirmations: int = 3,
    bitcoin: BitcoinSettings | None = None,
) -> str:
    btc = bitcoin or BitcoinSettings()
    return TEMPLATE.format(
        data_dir=_toml_string(str(data_dir)),
        database_url=_toml_string(database_url),
        rpc_url=_toml_string(rpc_url),
        chain_id=chain_id,
        confirmations=confirmations,
        bitcoin_rpc_url=_toml_string(btc.rpc_url),
        bitcoin_rpc_user=_toml_string(btc.rpc_user),
        bitcoin_rpc_password=_toml_string(btc.rpc_password),
        bitcoin_confirmations=btc.confirmations,
        bitcoin_stuck_after=f"{btc.stuck_after}s",
    )


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'custody.db'}"


def load_settings(path: Path) -> Settings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"no configuration file at {path}: pass --config with the custody.toml that `custody init` wrote in its "
            "data directory, or set CUSTODY_CONFIG to it (run `custody init` first if there is none)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    daemon = _table(data, "daemon", {"data_dir", "database_url", "listen_host", "listen_port"})
    api = _table(
        data,
        "api",
        {"max_clock_skew_seconds", "rate_limit_per_second", "rate_limit_burst", "max_body_bytes", "trusted_proxies"},
    )
    chain = _table(
        data,
        "chain",
        {
            "rpc_url",
            "chain_id",
            "confirmations",
            "max_fee_per_gas_gwei",
            "stuck_after_seconds",
            "settled_watch_blocks",
        },
    )
    hooks = _table(data, "webhooks", {"urls", "lease_seconds"})
    btc = _table(
        data,
        "bitcoin",
        {
            "rpc_url",
            "rpc_user",
            "rpc_password",
            "rpc_cookie_file",
            "confirmations",
            "fallback_fee_rate",
            "stuck_after",
            "hot_stuck_after",
        },
    )
    database = _table(data, "database", set(TIMEOUT_KEYS))
    if set(data) - SECTIONS:
        raise ConfigError(f"{path}: unknown section {sorted(set(data) - SECTIONS)[0]!r}")
    urls = hooks.get("urls", [])
    web = ("http://", "https://")
    if not isinstance(urls, list) or not all(isinstance(u, str) and u.startswith(web) for u in urls):
        raise ConfigError(f"{path}: [webhooks] urls must be a list of http:// or https:// URLs")
    lease = hooks.get("lease_seconds", 30)
    if isinstance(lease, bool) or not isinstance(lease, int | float) or not 1 <= lease <= 3600:
        raise ConfigError(f"{path}: [webhooks] lease_seconds must be a number of seconds from 1 to 3600")
    try:
        data_dir = Path(daemon["data_dir"])
        settings = Settings(
            data_dir=data_dir,
            database_url=os.environ.get(DATABASE_ENV) or daemon.get("database_url") or default_database_url(data_dir),
            listen_host=str(daemon.get("listen_host", "127.0.0.1")),
            listen_port=int(daemon.get("listen_port", 8700)),
            max_clock_skew_seconds=int(api.get("max_clock_skew_seconds", 30)),
            rate_limit_per_second=float(api.get("rate_limit_per_second", 200)),
            rate_limit_burst=int(api.get("rate_limit_burst", 400)),
            max_body_bytes=int(api.get("max_body_bytes", 65536)),
            trusted_proxies=_networks(api.get("trusted_proxies", []), "[api] trusted_proxies"),
            rpc_url=str(chain.get("rpc_url", "")),
            chain_id=int(chain.get("chain_id", 31337)),
            confirmations=int(chain.get("confirmations", 3)),
            max_fee_per_gas=parse_amount(str(chain.get("max_fee_per_gas_gwei", "200")), 9),
            stuck_after_seconds=int(chain.get("stuck_after_seconds", 120)),
            settled_watch_blocks=int(chain.get("settled_watch_blocks", 64)),
            webhook_urls=tuple(urls),
            webhook_lease_seconds=float(lease),
            bitcoin=_bitcoin(btc),
            database_timeouts=Timeouts(
                **{name: _seconds(database, key, getattr(Timeouts(), name)) for key, name in TIMEOUT_KEYS.items()}
            ),
        )
    except (KeyError, TypeError, ValueError, AmountError) as exc:
        raise ConfigError(f"{path}: invalid value ({exc})") from None
    return settings


def _bitcoin(table: dict[str, Any]) -> BitcoinSettings:
    text = {k: table.get(k, "") for k in ("rpc_url", "rpc_user", "rpc_password", "rpc_cookie_file")}
    if not all(isinstance(v, str) for v in text.values()):
        raise ValueError("[bitcoin] rpc_url, rpc_user, rpc_password and rpc_cookie_file are strings")
    numbers = {"confirmations": table.get("confirmations", 3), "fallback_fee_rate": table.get("fallback_fee_rate", 10)}
    for key, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
            raise ValueError(f"[bitcoin] {key} must be an integer from 1 to 10000")
    stuck = table.get("stuck_after", 3600)
    stuck_after = stuck if isinstance(stuck, int) and not isinstance(stuck, bool) else None
    if isinstance(stuck, str):
        try:
            stuck_after = BaseReader(human=True).period(stuck, "[bitcoin] stuck_after")
        except PolicyFileError:
            stuck_after = None
    if stuck_after is None or not 60 <= stuck_after <= 30 * 86_400:
        raise ValueError('[bitcoin] stuck_after must be a period from 1m to 30d, e.g. "1h"')
    return BitcoinSettings(**text, **numbers, stuck_after=stuck_after, hot_stuck_after=_hot_stuck_after(table))


def _hot_stuck_after(table: dict[str, Any]) -> int:
    """``[bitcoin] hot_stuck_after``: a period ("30m") or seconds; when a hot payment is fee-bumped."""
    value = table.get("hot_stuck_after", 1800)
    seconds = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str):
        try:
            seconds = BaseReader(human=True).period(value, "[bitcoin] hot_stuck_after")
        except PolicyFileError:
            seconds = None
    if seconds is None or not 1 <= seconds <= 7 * 86_400:
        raise ValueError('[bitcoin] hot_stuck_after must be a period from 1s to 7d, e.g. "30m"')
    return seconds


def _networks(value: Any, where: str) -> tuple[str, ...]:
    """CIDR networks, IPv4 or IPv6, in ipaddress's normal spelling; a bare address is its own /32 or /128.
    Host bits set (``10.0.0.1/8``) are refused: that is a typo more often than a network."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of CIDR networks")
    try:
        return tuple(str(ipaddress.ip_network(v.strip(), strict=True)) for v in value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _seconds(table: dict[str, Any], key: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400:
        raise ValueError(f"[database] {key} must be a number of seconds from 0 to 86400")
    return float(value)


def _table(data: dict[str, Any], name: str, keys: set[str]) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    unknown = sorted(set(table) - keys)
    if unknown:
        raise ConfigError(f"[{name}] has an unknown key {unknown[0]!r}")
    return table
