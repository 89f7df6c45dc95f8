"""What every part of `make demo` (scripts/demo.py) does the same way: run the project's own commands as an
operator would type them, print the steps, and run the daemon's two processes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent / "demo-data"  # beside the Makefile, wherever it is run from
BIN = Path(sys.executable).parent
OMNIBUS = "0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"
MAKER = "0x4bF5122f344554C53BdE2EbB8CD2b7E3D1600ad6"
DENIED = "0xE52d9C508C502347344D8C07Ad91Cbd6068Afc75"
CUSTOMER_WALLET = "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"  # a customer's own address, in its address book
UNLISTED_WALLET = "0x6813Eb9362372EEF6200f3b1dbC3f819671cBA69"  # on no list at all


def operator_signs(name: str, pw: Path, out: Path, *command: object) -> None:
    """An operator signs on their own signer (the demo skips the typed confirmation an operator gives)."""
    state = ROOT / f"{name}-signer-state"
    keystore = ROOT / f"{name}.keystore"
    sh(
        "signer",
        *command,
        "--keystore",
        keystore,
        "--out",
        out,
        "--yes",
        "--passphrase-file",
        pw,
        "--state",
        state,
        show=False,
    )


def export_and_sign(what: str, pw: Path, suffix: str, *export_args: object) -> list[Path]:
    """`custody batch export`, then on their air-gapped signers alice reviews the batch and alice and carol
    sign it; returns their signature files (named ``<batch>.<name><suffix>``)."""
    out = sh("custody", "batch", "export", "--out", ROOT / "batches", *export_args)
    batch_file = Path(next(line.split()[-1] for line in out.splitlines() if line.strip().startswith("file")))

    step(f"On their air-gapped signers, alice and carol review the {what} and sign it")
    sh("signer", "review", batch_file, "--state", ROOT / "alice-signer-state")
    sigs = []
    for name in ("alice", "carol"):
        sigs.append(ROOT / "batches" / f"{batch_file.stem}.{name}{suffix}")
        operator_signs(name, pw, sigs[-1], "sign", batch_file)
        print(f"   {name} signed: {sigs[-1].name}")
    return sigs


def operator_pins(name: str, announced: str, *command: object) -> None:
    """An operator pins a file on their own signer as in the ceremony: the signer shows the file's hash, the
    operator compares it with the hash announced on the ceremony call and types its first 8 hex digits."""
    state = ROOT / f"{name}-signer-state"
    shown = sh("signer", *command, "--state", state, show=False, stdin=announced[:8] + "\n")
    if announced not in shown:
        sys.exit(f"{name}'s signer showed another hash than the announced {announced}")


def announced_hash(output: str, label: str) -> str:
    """The SHA-256 the daemon printed after ``label``: what its operator reads out on the ceremony call."""
    line = next(line for line in output.splitlines() if line.strip().startswith(label))
    return line.strip().removeprefix(label).split()[0]


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def sh(tool: str, *args: object, show: bool = True, stdin: str | None = None) -> str:
    argv = [str(BIN / tool), *map(str, args)]
    out = subprocess.run(argv, input=stdin or "", capture_output=True, text=True, env=ENV)
    if out.returncode != 0:
        sys.exit(f"{tool} {' '.join(map(str, args))} failed:\n{out.stdout}{out.stderr}")
    if show:
        print("\n".join(f"   {line}" for line in out.stdout.rstrip().splitlines()))
    return out.stdout


ENV = {k: v for k, v in os.environ.items() if k != "CUSTODY_DATABASE_URL"}


def propose(policy: Callable[[int], str], path: Path, bundle: Path, cfg: Path) -> int:
    """``custody policy propose`` of ``policy(active_from)``; returns active_from. New whitelist entries activate
    no earlier than the bundle's creation (plus the demo's delay of 0 s): a few seconds ahead, and further if
    proposing took longer than that (a loaded machine), as an operator would pick a later time."""
    for margin in (5, 15, 45):
        active_from = int(time.time()) + margin
        path.write_text(policy(active_from))
        argv = [str(BIN / "custody"), "policy", "propose", str(path), "--out", str(bundle), "--config", str(cfg)]
        out = subprocess.run(argv, capture_output=True, text=True, env=ENV)
        if out.returncode == 0:
            print("\n".join(f"   {line}" for line in out.stdout.rstrip().splitlines()))
            return active_from
        if "whitelist_activation_too_early" not in out.stderr + out.stdout:
            break
    sys.exit(f"custody policy propose {path} failed:\n{out.stdout}{out.stderr}")


def toml_time(when: int) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def daemon(cfg: Path, pw: Path) -> Iterator[str]:
    """``custody serve`` and ``custody worker`` as two processes, until the block ends; yields the API's URL."""
    port = free_port()
    step(f"custody serve on 127.0.0.1:{port}")
    with open(ROOT / "serve.log", "ab") as log:  # JSON lines, one per request; the child keeps the descriptor
        server = subprocess.Popen(
            [str(BIN / "custody"), "serve", "--config", str(cfg), "--port", str(port)], env=ENV, stderr=log
        )
    step("custody worker: pays hot withdrawals from the hot wallet")
    with open(ROOT / "worker.log", "ab") as log:
        worker = subprocess.Popen(
            [str(BIN / "custody"), "worker", "--config", str(cfg), "--passphrase-file", str(pw)], env=ENV, stderr=log
        )
    print(f"   their structured logs: {ROOT / 'serve.log'} and {ROOT / 'worker.log'}")
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            sys.exit("the daemon did not become ready")
        yield url
    finally:
        for name, proc in (("worker", worker), ("daemon", server)):
            proc.send_signal(signal.SIGTERM)
            print(f"   {name} stopped (exit {proc.wait(20)})")


def policy_toml(
    cards: list[dict[str, str]], active_from: int, backend: str, reviewers: dict[str, str], bitcoin: str = ""
) -> str:
    """The demo's policy; ``bitcoin`` (TOML) is appended by the second version, which adds the BTC asset."""
    when = toml_time(active_from)
    admins = "".join(f'\n[[governance.admins]]\nname = "{c["name"]}"\nkey = "{c["approval_key"]}"\n' for c in cards)
    operators = "".join(f'\n[[operators]]\nname = "{name}"\nkey = "{key}"\n' for name, key in reviewers.items())
    return f"""format = 1
[governance]
quorum = 2
activation_delay = "0s"   # demo only: production keeps the 24 h default
{admins}
[assets.ETH]
decimals = 18
max_per_transfer = "100"
hot_limit = "1"
windows = [{{ period = "1h", limit = "150" }}, {{ period = "24h", limit = "500" }}]
delay_tiers = [{{ at_least = "50", delay = "1h" }}]
# customers may be paid to addresses on no whitelist, within these limits
unlisted = {{ max_per_transfer = "10", windows = [{{ period = "24h", limit = "50" }}] }}

[customers]
address_lock = "2s"        # demo only: a new address-book entry is usable 2 s after it is added (24 h by default)
[customers.limits.ETH]
max_per_transfer = "20"
windows = [{{ period = "24h", limit = "100" }}]

[holds]
median_multiple = 5        # a payout of 5 times the customer's usual amount or more waits for two operators
{operators}
[[backends]]
name = "backend"
key = "{backend}"

[[whitelist]]
address = "{OMNIBUS}"
assets = ["ETH"]
label = "Customer omnibus"
active_from = {when}

[[whitelist]]
address = "{MAKER}"
assets = ["ETH"]
label = "Market maker"
active_from = {when}

[[deny]]
address = "{DENIED}"
note = "sanctioned"
{bitcoin}"""
