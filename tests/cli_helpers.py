"""Run the two command-line tools in-process, as an operator would type them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from click.testing import CliRunner, Result

from custody.cli import main as custody_main
from signer.cli import main as signer_main


def run(tool, *args: object, ok: bool = True, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(tool, [str(a) for a in args], input=stdin, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def custody(*args: object, ok: bool = True) -> Result:
    return run(custody_main, *args, ok=ok)


def signer(*args: object, ok: bool = True, stdin: str | None = None) -> Result:
    return run(signer_main, *args, ok=ok, stdin=stdin)


def make_admins(tmp: Path, n: int = 3) -> tuple[Path, list[Path], list[Path]]:
    """n operator keystores and their cards; all share one passphrase file."""
    pw = tmp / "pass.txt"
    pw.write_text("correct horse battery staple\n")
    keystores, cards = [], []
    for i in range(n):
        ks, card = tmp / f"admin{i}.keystore", tmp / f"admin{i}.card.json"
        signer("key", "new", "--name", f"admin{i}", "--out", ks, "--passphrase-file", pw)
        signer("key", "card", ks, "--out", card)
        keystores.append(ks)
        cards.append(card)
    return pw, keystores, cards


def policy_file(tmp: Path, cards: list[Path], active_from: int, quorum: int = 2) -> Path:
    when = dt.datetime.fromtimestamp(active_from, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    admins = ""
    for card in cards:
        doc = json.loads(card.read_text())
        admins += f'[[governance.admins]]\nname = "{doc["name"]}"\nkey = "{doc["approval_key"]}"\n'
    path = tmp / "policy.toml"
    path.write_text(f"""format = 1
[governance]
quorum = {quorum}
activation_delay = "0s"
{admins}
[assets.ETH]
decimals = 18
max_per_transfer = "100"
hot_limit = "1"
windows = [{{ period = "24h", limit = "1000" }}]
delay_tiers = [{{ at_least = "50", delay = "1h" }}]

[[whitelist]]
address = "0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"
assets = ["ETH"]
label = "omnibus"
active_from = {when}
""")
    return path
