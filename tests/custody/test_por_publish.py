"""`custody por publish`: the static verifier page, its files, its Content-Security-Policy, nothing from another
host, and the statements it refuses to publish. The page's own checks run in a real browser in
tests/integration/test_por_publish_browser.py.

``vector_statement`` and ``vector_proofs`` make a signed format 3 statement and every account's proof out of the
worked example of docs/proof-of-reserves.md (the browser test uses them too)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from custody.errors import ConfigError, ProofInvalid
from custody.por.proofs import PieceProof, SplitProof
from custody.por.publish import FILES, embedded_json, publish
from custody.por.tree import Sibling
from signer.errors import StatementInvalid
from signer.porstatement import Signed, Statement, coverage, reserves_in_snapshot_units
from tests.cli_helpers import custody
from tests.custody.test_por_vectors import SPLIT

HOT = Account.from_key("0x" + "42" * 32)
DECIMALS = {"BTC": 8, "ETH": 9}  # the vector's balances: alice holds 1.5 BTC and 2 ETH
CHAIN_DECIMALS = {"BTC": 8, "ETH": 18}


def vector_statement(*, signed: bool = True, held: dict[str, int] | None = None) -> bytes:
    """A format 3 statement of the documented split tree, its hot wallet holding ``held`` (on-chain units),
    signed by that wallet (EIP-191) unless ``signed`` is False."""
    totals = dict(zip(SPLIT["assets"], SPLIT["root"]["sums"], strict=True))
    held = held or {"BTC": 3 * 10**15, "ETH": 20 * 10**18}
    reserves = {s: reserves_in_snapshot_units(held[s], CHAIN_DECIMALS[s], DECIMALS[s]) for s in SPLIT["assets"]}
    claims = {
        "snapshot_id": SPLIT["snapshot_id"],
        "created_at": 1_796_515_200,
        "chain_id": 31337,
        "block": {"number": 7, "hash": "0x" + "ab" * 32},
        "policy_hash": "cd" * 32,
        "assets": [
            {"symbol": s, "decimals": DECIMALS[s], "chain_decimals": CHAIN_DECIMALS[s], "contract": None}
            for s in SPLIT["assets"]
        ],
        "liabilities": {
            "root": SPLIT["root"]["hash"],
            "height": SPLIT["height"],
            "accounts": len(SPLIT["accounts"]),
            "leaves": sum(len(a["pieces"]) for a in SPLIT["accounts"]),
            "totals": totals,
        },
        "wallets": [
            {
                "address": HOT.address,
                "kind": "hot",
                "owners": [HOT.address],
                "threshold": 1,
                "balances": {s: str(held[s]) for s in SPLIT["assets"]},
            }
        ],
        "reserves": {s: str(r) for s, r in reserves.items()},
        "coverage": {s: coverage(reserves[s], int(totals[s])) for s in SPLIT["assets"]},
    }
    unsigned = Statement(claims)
    if not signed:
        return unsigned.to_bytes()
    signature = bytes(Account.sign_message(encode_defunct(primitive=unsigned.hash), HOT.key).signature)
    return Statement(claims, eip191=(Signed(HOT.address, HOT.address, signature),)).to_bytes()


def vector_proofs() -> dict[str, bytes]:
    """Every account's format 2 proof in the documented split tree, as `custody por proof` writes them."""
    v, height = SPLIT, SPLIT["height"]
    level0: dict[int, tuple[str, list[str]]] = {5: (v["padding_leaf_index_5"], ["0", "0"])}
    for a in v["accounts"]:
        for p in a["pieces"]:
            level0[p["index"]] = (p["leaf"], p["shares"])
    levels = [[level0[i] for i in range(1 << height)]]
    levels += [[(n["hash"], n["sums"]) for n in v[name]] for name in ("level1", "level2")]

    def sibling(level: int, i: int) -> Sibling:
        digest, sums = levels[level][i]
        return Sibling(bytes.fromhex(digest), tuple(int(s) for s in sums))

    return {
        a["id"]: SplitProof(
            bytes.fromhex(v["snapshot_id"]),
            a["id"],
            bytes.fromhex(a["salt"]),
            tuple(int(b) for b in a["balances"]),
            tuple(
                PieceProof(
                    p["index"],
                    tuple(int(s) for s in p["shares"]),
                    tuple(sibling(lv, (p["index"] >> lv) ^ 1) for lv in range(height)),
                )
                for p in a["pieces"]
            ),
        ).to_bytes(v["assets"])
        for a in v["accounts"]
    }


def snapshot_dir(tmp_path: Path, raw: bytes) -> Path:
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "statement.json").write_bytes(raw)
    return snap


def test_publish_writes_exactly_the_page_its_script_style_and_statement(tmp_path):
    raw = vector_statement()
    done = publish(snapshot_dir(tmp_path, raw), tmp_path / "site")
    site = tmp_path / "site"
    assert sorted(p.name for p in site.iterdir()) == sorted(FILES) == sorted(done.files)
    assert sorted(FILES) == ["index.html", "statement.json", "verifier.css", "verifier.js"]
    assert (site / "statement.json").read_bytes() == raw
    page = (site / "index.html").read_text()

    # nothing from another host, in any file: no URL with a scheme, no protocol-relative reference
    for name in FILES:
        text = (site / name).read_text()
        assert not re.search(r"https?:", text, re.I), name
        assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?//""", text, re.I), name
    assert re.findall(r"""(?:src|href)="([^"]*)\"""", page) == ["verifier.css", "statement.json", "verifier.js"]

    # a strict CSP: only this folder's script and style sheet; no inline script or style, no base, no forms
    (csp,) = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page)
    directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ")}
    assert directives == {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "require-trusted-types-for": ["'script'"],
    }
    assert not re.search(r"\son\w+=|\sstyle=|javascript:", page, re.I)  # what the CSP would block anyway
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert [attrs for attrs, _ in scripts] == [' type="application/json" id="statement"', ' src="verifier.js"']
    assert json.loads(scripts[0][1]) == json.loads(raw) and scripts[1][1] == ""

    # the figures are in the page itself, readable without JavaScript
    claims = json.loads(raw)["claims"]
    assert f'<code id="statement-hash">{done.statement.hash.hex()}</code>' in page
    assert f'<code id="root">{claims["liabilities"]["root"]}</code>' in page
    assert "<tr><td>BTC</td><td>21000001.5</td><td>30000000</td><td>1.4285</td></tr>" in page
    assert "<tr><td>ETH</td><td>14.500000001</td><td>20</td><td>1.3793</td></tr>" in page
    assert "made 2026-12-06 00:00 UTC" in page and "${" not in page


def test_publish_marks_assets_the_reserves_do_not_cover(tmp_path):
    raw = vector_statement(held={"BTC": 3 * 10**15, "ETH": 14 * 10**18})
    publish(snapshot_dir(tmp_path, raw), tmp_path / "site")
    assert "<td>0.9655 (NOT covered)</td>" in (tmp_path / "site" / "index.html").read_text()


def test_the_embedded_statement_cannot_end_its_element():
    text = embedded_json(b'{"a":"</script><!-- & >"}')
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- & >"}


@pytest.mark.parametrize(
    ("raw", "error", "reason"),
    [
        (vector_statement(signed=False), ProofInvalid, "missing signature: the hot wallet"),
        (vector_statement().replace(b'"height":3', b'"height":4'), StatementInvalid, "statement_hash is not the hash"),
        (vector_statement() + b"\n", StatementInvalid, "not in canonical form"),
    ],
    ids=["unsigned", "tampered", "not-canonical"],
)
def test_publish_refuses_a_statement_that_does_not_verify_and_writes_nothing(tmp_path, raw, error, reason):
    with pytest.raises(error, match=reason):
        publish(snapshot_dir(tmp_path, raw), tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_publish_goes_into_a_new_or_empty_directory_only(tmp_path):
    snap = snapshot_dir(tmp_path, vector_statement())
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "old.html").write_text("keep me")
    with pytest.raises(ConfigError, match="not an empty directory"):
        publish(snap, tmp_path / "site")
    assert [p.name for p in (tmp_path / "site").iterdir()] == ["old.html"]
    with pytest.raises(ConfigError, match=r"has no statement\.json"):
        publish(tmp_path / "site", tmp_path / "other")
    (tmp_path / "empty").mkdir()
    publish(snap, tmp_path / "empty")
    assert len(list((tmp_path / "empty").iterdir())) == len(FILES)


def test_the_command_writes_the_page_and_reports_errors_as_one_line(tmp_path):
    snap = snapshot_dir(tmp_path, vector_statement())
    result = custody("por", "publish", "--snapshot", snap, "--out", tmp_path / "site")
    assert "wrote index.html, verifier.js, verifier.css, statement.json to" in result.output
    assert f"liability root {SPLIT['root']['hash']}" in result.output
    again = custody("por", "publish", "--snapshot", snap, "--out", tmp_path / "site", ok=False)
    assert (
        again.exit_code == 1 and "error [config_invalid]:" in again.output and "not an empty directory" in again.output
    )
