"""What an operator sees when something is off (issue 17): one clear line and an exit code, never a traceback;
and what operators expect of a command-line tool: --version, --json on listings, where the API listens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from custody.chain.devnode import deploy_safe_contracts
from custody.chain.ethereum import EthereumNode
from custody.cli.main import main as custody_main
from custody.cli.por import signatures_count
from custody.por.liabilities import read_liabilities
from signer.cli import main as signer_main
from signer.cliutil import BROKEN_PIPE_EXIT, Group
from tests.cli_helpers import custody, signer
from tests.cli_helpers import run as run_tool
from tests.conftest import free_port
from tests.custody.test_cli import installation  # noqa: F401 (a fixture)
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    ETH,
    _dispose_stores,
    chain,
    make_daemon,
    operators,
    token_artifact,
)

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def no_traceback(result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_version_of_both_tools():
    for run, name in ((custody, "custody"), (signer, "signer")):
        out = run("--version").output
        assert out.startswith(f"{name} ") and out.split()[1][0].isdigit()


def test_a_closed_pipe_ends_the_command_quietly():
    """`custody … | head`: the reader goes away; the shared Group exits as SIGPIPE would, and prints nothing."""
    assert isinstance(custody_main, Group) and isinstance(signer_main, Group)
    program = (
        "import click\n"
        "from signer.cliutil import Group\n"
        "@click.group(cls=Group)\n"
        "def main(): pass\n"
        "@main.command()\n"
        "def many():\n"
        "    for i in range(200000): click.echo(f'line {i}')\n"
        "main()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", program, "many"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"line 0\n"
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(30) == BROKEN_PIPE_EXIT
    assert err == "", err


def test_attach_counts_signatures_in_words_that_stay_true():
    assert signatures_count(3, 2) == "3 signatures; it needs 2"
    assert signatures_count(2, 2) == "2 of the 2 signatures it needs"
    assert signatures_count(1, 2) == "1 of the 2 signatures it needs; 1 more to attach"


def test_a_byte_order_mark_in_the_liabilities_is_accepted(tmp_path):
    path = tmp_path / "balances.csv"
    path.write_bytes("\ufeffaccount_id,ETH\nalice,1.5\n".encode())
    assets, accounts = read_liabilities(path, {"ETH": 9}, b"\0" * 32)
    assert assets == ["ETH"] and accounts.count == 1


@SQLITE
def test_webhooks_test_to_an_unreachable_url_is_one_line(installation):  # noqa: F811
    url = f"http://127.0.0.1:{free_port()}/hook"
    result = custody(
        "webhooks", "test", url, "--config", installation["config"], "--passphrase-file", installation["pw"], ok=False
    )
    no_traceback(result)
    assert result.exit_code == 1
    assert f"{url} could not be reached: ConnectError" in result.stderr
    result = custody(
        "webhooks",
        "test",
        "not a url",
        "--config",
        installation["config"],
        "--passphrase-file",
        installation["pw"],
        ok=False,
    )
    assert result.exit_code == 1 and "could not be reached" in result.stderr and "Traceback" not in result.output


def test_the_daemon_passphrase_prompt_says_why_it_asks_again(installation, monkeypatch):  # noqa: F811
    """The daemon's prompt is the signer's: an empty answer is refused with the reason, not silently re-asked."""
    monkeypatch.delenv("CUSTODY_PASSPHRASE", raising=False)
    secret = installation["pw"].read_text().splitlines()[0]
    url = f"http://127.0.0.1:{free_port()}/hook"
    answers = f"\n{secret}\n"  # an empty passphrase, then the right one
    cfg = ("--config", installation["config"])
    result = run_tool(custody_main, "webhooks", "test", url, *cfg, ok=False, stdin=answers)
    no_traceback(result)
    assert result.output.count("The passphrase may not be empty; type it again.") == 1
    assert f"{url} could not be reached" in result.output  # the second answer was taken and unlocked the key


@SQLITE
def test_listings_have_json_and_status_names_the_hot_wallet(installation):  # noqa: F811
    cfg = ("--config", installation["config"])
    custody("apikey", "add", "backend", "--public-key", "ab" * 32, "--scopes", "read", *cfg)
    keys = [k for k in json.loads(custody("apikey", "list", "--json", *cfg).output) if k["name"] == "backend"]
    assert keys == [
        {
            "name": "backend",
            "status": "active",
            "scopes": ["read"],
            "public_key": "ab" * 32,
            "created_at": keys[0]["created_at"],
            "revoked_at": None,
        }
    ]
    shown = json.loads(custody("policy", "show", "--json", *cfg).output)
    assert shown["version"] == 0 and shown["policy"] is None and shown["quorum"] == 2
    assert json.loads(custody("batch", "list", "--json", *cfg).output) == []
    assert json.loads(custody("webhooks", "status", "--json", *cfg).output) == []
    status = custody("status", *cfg).output
    assert "hot wallet not registered yet" in status
    assert json.loads(custody("status", "--json", *cfg).output)["hot_wallets"] == []


@SQLITE
def test_serve_says_where_it_listens(installation):  # noqa: F811
    port = free_port()
    program = "from custody.cli import main; main()"
    with subprocess.Popen(
        [sys.executable, "-c", program, "serve", "--config", str(installation["config"]), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CUSTODY_DATABASE_URL": installation["db_url"]},
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            assert line.startswith("listening on http://") and line.rstrip().endswith(f":{port}")
        finally:
            proc.terminate()
            proc.wait(30)


@SQLITE
def test_por_and_cold_wallet_mistakes_are_one_clear_line(tmp_path, db_url, chain):  # noqa: F811
    daemon = make_daemon(tmp_path, db_url, chain, fund_eth=0)
    cfg = ("--config", daemon.config, "--passphrase-file", daemon.passphrase_file)
    node = EthereumNode(chain.anvil.url, 31337)
    before_safe = node.block_number()

    # liabilities: a BOM is fine; a policy asset without a column is refused unless --assets leaves it out
    csv = tmp_path / "balances.csv"
    csv.write_bytes(b"\xef\xbb\xbfaccount_id,ETH,TOK\nalice,1,2\n")
    custody("por", "snapshot", "--liabilities", csv, "--out", tmp_path / "snap", "--decimals", "ETH=9", *cfg)
    only_eth = tmp_path / "eth.csv"
    only_eth.write_text("account_id,ETH\nalice,1\n")
    result = custody("por", "snapshot", "--liabilities", only_eth, "--out", tmp_path / "s2", *cfg, ok=False)
    no_traceback(result)
    assert result.exit_code == 1 and "no column for TOK" in result.output and "--assets ETH" in result.output
    custody("por", "snapshot", "--liabilities", only_eth, "--out", tmp_path / "s3", "--assets", "ETH", *cfg)

    # verify without a node: not "everything holds", unless --no-rpc says an offline check is wanted
    statement = tmp_path / "snap" / "statement.json"
    result = custody("por", "verify", statement, ok=False)
    assert result.exit_code == 1 and "NOT CHECKED" in result.output
    assert "balances" in result.output and "--no-rpc" in result.stderr
    offline = custody("por", "verify", statement, "--no-rpc")
    assert "NOT CHECKED" in offline.output and "balances" in offline.output
    assert custody("por", "verify", statement, "--no-rpc", "--rpc", chain.anvil.url, ok=False).exit_code == 2

    # cold create with an unfunded hot wallet: at once, naming the address to fund and the amount
    deploy_safe_contracts(chain.anvil)
    ops = operators(tmp_path, daemon.passphrase_file, 2)
    cards = [x for op in ops for x in ("--owner", op.card)]
    started = time.monotonic()
    result = custody("cold", "create", *cards, "--threshold", 2, *cfg, ok=False)
    no_traceback(result)
    assert time.monotonic() - started < 30
    assert result.exit_code == 1 and "[hot_wallet_unfunded]" in result.output
    assert f"the hot wallet {daemon.hot} holds 0 ETH" in result.output and "fund the hot wallet" in result.output
    assert "Insufficient funds" not in result.output

    chain.send({"to": daemon.hot, "value": 10 * ETH})
    custody("cold", "create", *cards, "--threshold", 2, *cfg)
    safe = json.loads((daemon.data_dir / "cold-wallet.json").read_text())["safe"]
    assert f"hot wallet {daemon.hot}" in custody("status", "--config", daemon.config).output

    # a snapshot at a block before the Safe existed
    result = custody(
        "por", "snapshot", "--liabilities", csv, "--out", tmp_path / "old", "--block", before_safe, *cfg, ok=False
    )
    no_traceback(result)
    assert result.exit_code == 1 and f"the Safe {safe} has no code at block {before_safe}" in result.output
    assert "InsufficientDataBytes" not in result.output and not (tmp_path / "old").exists()

    # a second daemon for the same owners, threshold and salt
    second = tmp_path / "second"
    second.mkdir()
    other = make_daemon(second, f"sqlite:///{second / 'custody.db'}", chain)
    result = custody(
        "cold", "create", *cards, "--threshold", 2, "--config", other.config,
        "--passphrase-file", other.passphrase_file, ok=False,
    )  # fmt: skip
    no_traceback(result)
    assert result.exit_code == 1 and "[cold_wallet_exists]" in result.output
    assert f"already exists at {safe}" in result.output and "--salt-nonce" in result.output
    assert "Create2" not in result.output


def test_a_missing_configuration_says_how_to_point_at_one(tmp_path):
    result = custody("status", "--config", tmp_path / "custody.toml", ok=False)
    no_traceback(result)
    assert result.exit_code == 1
    assert "--config" in result.output and "CUSTODY_CONFIG" in result.output and "custody init" in result.output


def test_shell_completion_scripts_are_generated_for_both_tools():
    """README's completion lines: click writes the script for the shell named in _<TOOL>_COMPLETE."""
    for tool in ("custody", "signer"):
        env = {**os.environ, f"_{tool.upper()}_COMPLETE": "bash_source"}
        out = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), tool)], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0 and f"_{tool}_completion" in out.stdout, out.stderr


def test_dev_safe_contracts_refuses_anything_but_a_local_anvil():
    result = custody("dev", "safe-contracts", "--rpc", "http://10.0.0.1:8545", ok=False)
    no_traceback(result)
    assert result.exit_code == 1 and "[config_invalid]" in result.output and "on this machine" in result.output
    port = free_port()
    result = custody("dev", "safe-contracts", "--rpc", f"http://127.0.0.1:{port}", ok=False)
    no_traceback(result)
    assert result.exit_code == 1 and "[node_unavailable]" in result.output and "start anvil first" in result.output
