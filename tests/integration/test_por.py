"""Proof of reserves on anvil: hot wallet and a 2-of-3 Safe funded, a snapshot, two owners sign in a ceremony,
and the statement verifies against the chain at its own block, even after the Safe's funds have moved."""

from __future__ import annotations

import json

import pytest

from custody.chain.ethereum import EthereumNode
from signer.porstatement import Signed, Statement, parse_statement
from tests.cli_helpers import custody, signer
from tests.integration.conftest import ETH, queue_cold, sign_as

LIABILITIES = "account_id,ETH,TOK\nalice,100.5,2500\nbob,250,0.000001\ncarol,0,70000000\ndave,12.123456789,1\n"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_snapshot_sign_attach_and_verify_at_the_snapshot_block(tmp_path, chain, cold_setup):
    daemon, ops, safe, cfg, _ = cold_setup
    csv = tmp_path / "balances.csv"
    csv.write_text(LIABILITIES)
    snap = tmp_path / "snap"
    out = custody("por", "snapshot", "--liabilities", csv, "--out", snap, "--decimals", "ETH=9", *cfg).output
    statement_file = snap / "statement.json"
    st = parse_statement(statement_file.read_bytes())
    claims = st.claims
    assert claims["liabilities"]["totals"] == {"ETH": str(362_623_456_789), "TOK": str(70_002_501_000_001)}
    node = EthereumNode(chain.anvil.url, 31337)
    held = node.balance(daemon.hot, None) + node.balance(safe, None)  # the hot wallet paid for creating the Safe
    assert held > 1499 * ETH and claims["reserves"]["ETH"] == str(held // 10**9)
    assert claims["reserves"]["TOK"] == str(10**13 + 10**14) and claims["coverage"]["ETH"] == "4.1365"
    assert [w["kind"] for w in claims["wallets"]] == ["hot", "safe"] and claims["wallets"][1]["address"] == safe
    assert "statement hash " + st.hash.hex() in out
    report = (snap / "report.html").read_text()
    assert "<svg" in report and st.hash.hex() in report and "<script" not in report

    # before the owners sign, the verifier fails closed
    result = custody("por", "verify", statement_file, ok=False)
    assert result.exit_code == 1 and "missing signature" in result.output

    sigs = []
    for op in (ops[0], ops[2]):
        sigs.append(tmp_path / f"{op.address}.porsig")
        signer(
            "por",
            "sign",
            statement_file,
            "--keystore",
            op.keystore,
            "--out",
            sigs[-1],
            "--yes",
            "--passphrase-file",
            daemon.passphrase_file,
            "--state",
            op.state,
        )
    out = custody("por", "attach", statement_file, *sigs).output
    assert "2 of the 2 signatures" in out
    custody("por", "proof", "dave", "--snapshot", snap, "--out", tmp_path / "dave.json")
    verified = custody("por", "verify", statement_file, "--proof", tmp_path / "dave.json", "--rpc", chain.anvil.url)
    block = claims["block"]["number"]
    assert f"isValidSignature accepts the owners' signatures at block {block}" in verified.output
    assert "account dave: included with ETH 12.123456789, TOK 1" in verified.output

    # funds leave the Safe; the old statement still verifies, as the figures of its own block
    queue_cold(daemon, tmp_path, [("ETH", "50", daemon.recipients[0])])
    custody("batch", "export", "--out", tmp_path / "batches", *cfg)
    (batch_file,) = (tmp_path / "batches").glob("*.json")
    sign_as(ops[0], batch_file, tmp_path / "b0.sig", daemon.passphrase_file)
    sign_as(ops[1], batch_file, tmp_path / "b1.sig", daemon.passphrase_file)
    assert "executed" in custody("batch", "import", tmp_path / "b0.sig", tmp_path / "b1.sig", *cfg).output
    assert node.balance(safe, None) == 950 * ETH and node.block_number() > block
    again = custody("por", "verify", statement_file, "--rpc", chain.anvil.url).output
    assert f"safe wallet {safe}: balances at block {block} match" in again

    # a signature from another snapshot is refused; so is a proof for another snapshot
    other = tmp_path / "snap2"
    custody("por", "snapshot", "--liabilities", csv, "--out", other, "--decimals", "ETH=9", *cfg)
    second = parse_statement((other / "statement.json").read_bytes())
    first = parse_statement(statement_file.read_bytes())
    swapped = Statement(first.claims, eip191=second.eip191, eip1271=first.eip1271)
    (tmp_path / "swapped.json").write_bytes(swapped.to_bytes())
    result = custody("por", "verify", tmp_path / "swapped.json", ok=False)
    assert "[proof_invalid]" in result.output and "not for this statement" in result.output
    custody("por", "proof", "dave", "--snapshot", other, "--out", tmp_path / "dave2.json")
    result = custody("por", "verify", statement_file, "--proof", tmp_path / "dave2.json", ok=False)
    assert "the proof is for snapshot" in result.output
    # an owner's signature for the other snapshot cannot be attached to this one
    signer(
        "por",
        "sign",
        other / "statement.json",
        "--keystore",
        ops[1].keystore,
        "--out",
        tmp_path / "x.porsig",
        "--yes",
        "--passphrase-file",
        daemon.passphrase_file,
        "--state",
        ops[1].state,
    )
    result = custody("por", "attach", statement_file, tmp_path / "x.porsig", ok=False)
    assert "is for statement" in result.output
    forged = first.with_safe_signatures([Signed(safe, ops[1].address, json_sig(tmp_path / "x.porsig"))])
    (tmp_path / "forged.json").write_bytes(forged.to_bytes())
    result = custody("por", "verify", tmp_path / "forged.json", ok=False)
    assert "[statement_invalid]" in result.output and "another statement" in result.output


def json_sig(path) -> bytes:
    return bytes.fromhex(json.loads(path.read_text())["signature"][2:])
