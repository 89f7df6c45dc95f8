"""`custody apikey …`: the exchange backend's API keys (Ed25519; the daemon keeps only public keys)."""

from __future__ import annotations

import os
from pathlib import Path

import click
from nacl.signing import SigningKey

from custody.cli.common import config_option, echo_json, json_option, open_store
from custody.clock import SystemClock
from custody.errors import InvalidPublicKey, NoActivePolicy
from custody.intake import apikeys
from custody.ledger.policy import current
from custody.store.db import Store
from policies.bundle import Bundle


@click.group()
def apikey() -> None:
    """Manage the exchange backend's API keys."""


@apikey.command("keygen")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
def apikey_keygen(out: Path) -> None:
    """Make a key pair for a client: the private key goes to OUT, the public key is printed."""
    key = SigningKey.generate()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(bytes(key).hex() + "\n")
    click.echo(key.verify_key.encode().hex())


@apikey.command("add")
@click.argument("name")
@click.option("--public-key", required=True)
@click.option("--scopes", default="withdraw,read,cancel", show_default=True)
@config_option
def apikey_add(name: str, public_key: str, scopes: str, config_path: Path) -> None:
    """Register the public key of API key NAME. If the active policy names NAME among its [[backends]], the
    key must be exactly that backend's: offline signers verify its requests with the policy's key."""
    _, store = open_store(config_path)
    check_backend(_applied(store), name, public_key)
    apikeys.add_key(store, name, public_key, apikeys.parse_scopes(scopes), SystemClock().now())
    click.echo(f"added API key {name!r}")


def _applied(store: Store) -> Bundle | None:
    """The newest applied policy bundle; None before the first (or on a database without a genesis)."""
    try:
        return current(store)[1]
    except NoActivePolicy:
        return None


def check_backend(bundle: Bundle | None, name: str, public_key: str) -> None:
    """Refuse a key named as one of ``bundle``'s backends whose public key is not that backend's. Any other
    name (a read-only or whitelist-only key), or no bundle applied yet, is not checked."""
    backend = next((b for b in bundle.policy.backends if b.name == name), None) if bundle else None
    if bundle is not None and backend is not None and public_key.lower() != backend.key.lower():
        raise InvalidPublicKey(
            f"{name!r} is a backend of the active policy (version {bundle.version}) with the public key "
            f"{backend.key}: the API key of that name must be exactly that key (a different key needs a new "
            "policy bundle, signed by a quorum)"
        )


@apikey.command("list")
@json_option
@config_option
def apikey_list(as_json: bool, config_path: Path) -> None:
    """Each API key: name, active or revoked, scopes, public key."""
    _, store = open_store(config_path)
    keys = apikeys.list_keys(store)
    if as_json:
        echo_json(
            [
                {
                    "name": k.name,
                    "status": "revoked" if k.revoked_at else "active",
                    "scopes": [x for x in k.scopes.split(",") if x],
                    "public_key": k.public_key,
                    "created_at": k.created_at,
                    "revoked_at": k.revoked_at,
                }
                for k in keys
            ]
        )
        return
    for k in keys:
        status = "revoked" if k.revoked_at else "active"
        click.echo(f"{k.name:<24} {status:<8} {k.scopes:<24} {k.public_key}")


@apikey.command("revoke")
@click.argument("name")
@config_option
def apikey_revoke(name: str, config_path: Path) -> None:
    _, store = open_store(config_path)
    apikeys.revoke_key(store, name, SystemClock().now())
    click.echo(f"revoked API key {name!r}")
