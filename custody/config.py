"""The daemon's configuration file, `custody.toml`, written commented by `custody init`."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custody.errors import ConfigError

DATABASE_ENV = "CUSTODY_DATABASE_URL"

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

[api]
# A signed request's timestamp must be within this many seconds of the daemon's clock.
max_clock_skew_seconds = 30
# Requests per second allowed for each API key (a token bucket of `rate_limit_burst` tokens).
rate_limit_per_second = 200
rate_limit_burst = 400
# Request bodies larger than this are refused with 413.
max_body_bytes = 65536
"""


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


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(data_dir: Path, database_url: str) -> str:
    return TEMPLATE.format(data_dir=_toml_string(str(data_dir)), database_url=_toml_string(database_url))


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'custody.db'}"


def load_settings(path: Path) -> Settings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no configuration file at {path}; run `custody init` first") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    daemon = _table(data, "daemon", {"data_dir", "database_url", "listen_host", "listen_port"})
    api = _table(data, "api", {"max_clock_skew_seconds", "rate_limit_per_second", "rate_limit_burst", "max_body_bytes"})
    if set(data) - {"daemon", "api"}:
        raise ConfigError(f"{path}: unknown section {sorted(set(data) - {'daemon', 'api'})[0]!r}")
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
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: invalid value ({exc})") from None
    return settings


def _table(data: dict[str, Any], name: str, keys: set[str]) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    unknown = sorted(set(table) - keys)
    if unknown:
        raise ConfigError(f"[{name}] has an unknown key {unknown[0]!r}")
    return table
