"""Proof of reserves on anvil: hot wallet and a 2-of-3 Safe funded, a snapshot, two owners sign in a ceremony,
and the statement verifies against the chain at its own block, even after the Safe's funds have moved."""

from __future__ import annotations

import copy
import json

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from selenium.webdriver.common.by import By

from custody.chain.ethereum import EthereumNode
from custody.keys import load_hot_account
from policies.bundle import make_bundle, parse_bundle
from signer.porstatement import Signed, Statement, coverage, parse_statement, reserves_in_snapshot_units
from tests.browser import chromium  # noqa: F401  (the module's browser)
from tests.cli_helpers import custody, signer
from tests.integration.conftest import ETH, PASSPHRASE, queue_cold, sign_as
from tests.integration.console_helpers import console_signed_in

LIABILITIES = "account_id,ETH,TOK\nalice,100.5,2500\nbob,250,0.000001\ncarol,0,70000000\ndave,12.123456789,1\n"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_snapshot_sign_attach_and_verify_at_the_snapshot_block(tmp_path, chain, cold_setup, chromium):  # noqa: F811
    daemon, ops, safe, cfg, _ = cold_setup
    csv = tmp_path / "balances.csv"
    csv.write_text(LIABILITIES)
    snap = tmp_path / "snap"
    out = custody("por", "snapshot", "--liabilities", csv, "--out", snap, "--decimals", "ETH=9", *cfg).output
    statement_file = snap / "statement.json"
    st = parse_statement(statement_file.read_bytes())
    claims = st.claims
    assert claims["liabilities"]["totals"] == {"ETH": str(362_623_456_789), "TOK": str(70_002_501_000_001)}
    assert st.format == 3 and 8 <= claims["liabilities"]["leaves"] <= 16  # 4 accounts in 2 to 4 pieces each
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
    policy = ("--policy", snap / "policy.json")
    assert parse_bundle((snap / "policy.json").read_bytes()).hash == claims["policy_hash"]
    rpc = ("--rpc", chain.anvil.url)
    verified = custody("por", "verify", statement_file, "--proof", tmp_path / "dave.json", *rpc, *policy)
    block = claims["block"]["number"]
    assert f"TOK: {chain.token.address} has 6 decimals at block {block}, as the statement says" in verified.output
    assert "ETH: the native coin has 18 decimals" in verified.output
    # the policy.json beside the statement is the default; without a policy the contracts cannot be
    # checked, and --rpc fails closed
    assert "ok  policy bundle version 1" in custody("por", "verify", statement_file, *rpc).output
    alone = tmp_path / "alone" / "statement.json"
    alone.parent.mkdir()
    alone.write_bytes(statement_file.read_bytes())
    result = custody("por", "verify", alone, *rpc, ok=False)
    assert result.exit_code == 1 and "[proof_invalid]" in result.output and "give it with --policy" in result.output
    assert f"isValidSignature accepts the owners' signatures at block {block}" in verified.output
    assert "account dave: included with ETH 12.123456789, TOK 1" in verified.output

    # every proof, exported in shards: dave takes his own out of them with his proof key and verifies it
    out = custody("por", "export-proofs", "--snapshot", snap, "--out", tmp_path / "shards").output
    assert "wrote the proofs of 4 accounts in 16 entry shards and 2 tree files" in out
    key = json.loads((tmp_path / "dave.json").read_text())["salt"]
    shard_args = ("--shards", tmp_path / "shards", "--account", "dave")
    custody("por", "shard-proof", statement_file, *shard_args, "--key", key, "--out", tmp_path / "dave-shard.json")
    assert (tmp_path / "dave-shard.json").read_bytes() == (tmp_path / "dave.json").read_bytes()
    from_shard = custody("por", "verify", statement_file, "--proof", tmp_path / "dave-shard.json", *rpc, *policy)
    assert "account dave: included with ETH 12.123456789, TOK 1" in from_shard.output
    assert b"dave" not in b"".join(p.read_bytes() for p in (tmp_path / "shards").rglob("*") if p.is_file())
    wrong = custody(
        "por", "shard-proof", statement_file, *shard_args, "--key", "00" * 32, "--out", tmp_path / "x", ok=False
    )
    assert wrong.exit_code == 1 and "[proof_invalid]" in wrong.output and "no entry for 'dave'" in wrong.output

    # funds leave the Safe; the old statement still verifies, as the figures of its own block
    queue_cold(daemon, tmp_path, [("ETH", "50", daemon.recipients[0])])
    custody("batch", "export", "--out", tmp_path / "batches", *cfg)
    (batch_file,) = (tmp_path / "batches").glob("*.json")
    sign_as(ops[0], batch_file, tmp_path / "b0.sig", daemon.passphrase_file)
    sign_as(ops[1], batch_file, tmp_path / "b1.sig", daemon.passphrase_file)
    assert "executed" in custody("batch", "import", tmp_path / "b0.sig", tmp_path / "b1.sig", *cfg).output
    assert node.balance(safe, None) == 950 * ETH and node.block_number() > block
    again = custody("por", "verify", statement_file, *rpc, *policy).output
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

    # the operators' console lists both statements, newest first: hash, block and coverage per asset
    with console_signed_in(daemon.store, chromium) as url:
        chromium.get(f"{url}/reserves")
        rows = [r.text for r in chromium.find_elements(By.CSS_SELECTOR, "#snapshots tbody tr")]
        assert len(rows) == 2 and second.hash.hex() in rows[0] and first.hash.hex() in rows[1]
        later = second.claims["block"]["number"]
        assert f" {block} " in f" {rows[1]} " and f" {later} " in f" {rows[0]} " and later > block
        assert f"ETH {claims['coverage']['ETH']}x" in rows[1] and f"TOK {claims['coverage']['TOK']}x" in rows[1]
        assert claims["coverage"]["ETH"] == "4.1365" and claims["liabilities"]["root"] in rows[1]
        assert second.claims["coverage"]["ETH"] != claims["coverage"]["ETH"]  # 50 ETH left the Safe since
        assert f"ETH {second.claims['coverage']['ETH']}x" in rows[0]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_verify_rpc_refuses_decimals_the_chain_does_not_have(tmp_path, chain, cold_setup):
    """The host holds the hot key, so it can sign a statement of the hot wallet alone (no owner signs): with
    the real balances and the policy's contracts, but decimals of its choosing, every figure adds up and
    only the chain can say the decimals are wrong."""
    daemon, _, _, cfg, _ = cold_setup
    csv = tmp_path / "balances.csv"
    csv.write_text(LIABILITIES)
    snap = tmp_path / "snap"
    custody("por", "snapshot", "--liabilities", csv, "--out", snap, "--decimals", "ETH=9", *cfg)
    claims = parse_statement((snap / "statement.json").read_bytes()).claims
    hot = load_hot_account(daemon.data_dir, PASSPHRASE)
    check = ("--rpc", chain.anvil.url, "--policy", snap / "policy.json")

    def verify_forged(name: str, **change: object):
        path = tmp_path / f"{name}.json"
        path.write_bytes(hot_only(claims, hot, **change))
        return custody("por", "verify", path, *check, ok=False)

    assert verify_forged("honest").exit_code == 0  # the hot wallet's own statement, as it is, verifies
    # 17 decimals for ETH: the hot wallet's ETH counted ten times over
    result = verify_forged("eth17", chain_decimals={"ETH": 17})
    assert result.exit_code == 1 and "[proof_invalid]" in result.output
    assert "the statement gives ETH 17 decimals on chain; the native coin has 18" in result.output
    result = verify_forged("tok7", chain_decimals={"TOK": 7})
    assert f"the statement gives TOK 7 decimals on chain; {chain.token.address} has 6" in result.output
    # the policy's contracts: another token under the name TOK, or a bundle that is not the one cited
    result = verify_forged("faketok", contract={"TOK": daemon.hot})
    assert "[statement_asset_contract]" in result.output and "the policy's TOK is the token at" in result.output
    bundle = parse_bundle((snap / "policy.json").read_bytes())
    (tmp_path / "other.json").write_bytes(make_bundle(bundle.policy, bundle.head(), bundle.created_at).raw)
    honest = tmp_path / "honest.json"
    result = custody("por", "verify", honest, "--rpc", chain.anvil.url, "--policy", tmp_path / "other.json", ok=False)
    assert "[proof_invalid]" in result.output and f"the statement cites {claims['policy_hash']}" in result.output


def hot_only(claims: dict, hot, chain_decimals: dict | None = None, contract: dict | None = None) -> bytes:
    """What the host can sign alone: the statement of its hot wallet, with the given decimals or contracts
    claimed, reserves and coverage recomputed so they add up."""
    c = copy.deepcopy(claims)
    c["wallets"] = [w for w in c["wallets"] if w["kind"] == "hot"]
    for a in c["assets"]:
        s = a["symbol"]
        a["chain_decimals"] = (chain_decimals or {}).get(s, a["chain_decimals"])
        a["contract"] = (contract or {}).get(s, a["contract"])
        reserves = reserves_in_snapshot_units(int(c["wallets"][0]["balances"][s]), a["chain_decimals"], a["decimals"])
        c["reserves"][s] = str(reserves)
        c["coverage"][s] = coverage(reserves, int(c["liabilities"]["totals"][s]))
    unsigned = Statement(c)
    signature = bytes(Account.sign_message(encode_defunct(primitive=unsigned.hash), hot.key).signature)
    return Statement(c, eip191=(Signed(hot.address, hot.address, signature),)).to_bytes()


def json_sig(path) -> bytes:
    return bytes.fromhex(json.loads(path.read_text())["signature"][2:])
