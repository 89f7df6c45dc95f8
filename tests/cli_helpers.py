"""Run the two command-line tools in-process, as an operator would type them."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from custody.cli.main import main as custody_main
from signer.cli import main as signer_main
from tests.conftest import policy_toml


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
        signer("key", "new", "--name", f"admin{i}", "--out", ks, "--passphrase-file", pw, "--no-confirm")
        signer("key", "card", ks, "--out", card)
        keystores.append(ks)
        cards.append(card)
    return pw, keystores, cards


def policy_file(tmp: Path, cards: list[Path], active_from: int) -> Path:
    """The daemon tests' policy with these cards as its admins and no activation delay."""
    admins = [(doc["name"], doc["approval_key"]) for doc in (json.loads(c.read_text()) for c in cards)]
    path = tmp / "policy.toml"
    path.write_text(policy_toml(active_from, admins=admins, activation=active_from, activation_delay="0s"))
    return path
