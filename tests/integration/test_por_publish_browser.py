"""The public verifier page (`custody por publish`) opened from the filesystem in a real headless Chromium: its
script recomputes docs/proof-of-reserves.md's worked examples, accepts the proofs of a real snapshot on anvil
with the balances of the liabilities file, and refuses a changed balance, a swapped sibling and a proof of
another snapshot, each with its reason, as the Python verifier (the reference) refuses them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from custody.errors import ProofInvalid
from custody.por.publish import publish
from custody.por.verify import check_proof
from signer.porstatement import parse_statement
from tests.browser import browser_log
from tests.cli_helpers import custody
from tests.custody.test_por_publish import snapshot_dir, vector_proofs, vector_statement
from tests.custody.test_por_vectors import SPLIT, VECTOR
from tests.integration.conftest import make_daemon

LIABILITIES = "account_id,ETH,TOK\nalice,100.5,2500\nbob,250,0.000001\ncarol,0,70000000\ndave,12.123456789,1\n"


def open_page(driver, site: Path) -> None:
    driver.get((site / "index.html").as_uri())
    wait(driver, "return document.body.dataset.ready === 'yes'")


def wait(driver, script: str) -> None:
    """Until ``script`` returns true, polled every 20 ms (the page answers in milliseconds)."""
    WebDriverWait(driver, 5, poll_frequency=0.02).until(lambda d: d.execute_script(script))


def outcome(driver) -> dict[str, Any]:
    """What the page shows once it has decided: state, refusal code, verdict, reason and balance rows."""
    wait(driver, "return ['accepted', 'refused'].includes(document.getElementById('result').dataset.state)")
    return driver.execute_script(
        """const text = (id) => document.getElementById(id).innerText;
        const result = document.getElementById("result");
        const rows = Array.from(document.querySelectorAll("#balances-body tr"));
        return {state: result.dataset.state, code: result.dataset.code || null, verdict: text("verdict"),
                detail: text("detail"),
                balances: Object.fromEntries(rows.map((tr) => Array.from(tr.cells, (td) => td.innerText)))};"""
    )


def check_file(driver, site: Path, proof: Path) -> dict[str, Any]:
    """A customer opens the page and picks their proof file."""
    open_page(driver, site)
    driver.find_element(By.ID, "proof-file").send_keys(str(proof))
    return outcome(driver)


def no_errors(driver) -> None:
    severe = [e for e in browser_log(driver) if e["level"] == "SEVERE"]
    assert severe == []  # no script error, no Content-Security-Policy violation, nothing blocked


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# the page's own functions on the documented inputs: every value is recomputed in the browser from the rules,
# never copied from the page's numbers, then compared with them in Python
RECOMPUTE = """
const [split, single, done] = arguments;
const v = custodyVerifier, h = v.fromHex, hex = v.toHex, big = (xs) => xs.map(BigInt);
(async () => {
  const up = async (nodes) => {
    const out = [];
    for (let i = 0; i < nodes.length; i += 2) {
      const [a, b] = [nodes[i], nodes[i + 1]];
      out.push({hash: await v.nodeHash(a.hash, b.hash, a.sums, b.sums), sums: a.sums.map((s, j) => s + b.sums[j])});
    }
    return out;
  };
  const show = (nodes) => nodes.map((n) => ({hash: hex(n.hash), sums: n.sums.map(String)}));
  const out = {split: {accounts: []}, single: {accounts: []}};
  // tree format 2: each account's pieces at their places, padding elsewhere
  let sid = h(split.snapshot_id), leaves = [];
  for (const a of split.accounts) {
    const acct = await v.accountHash(a.id, h(a.salt)), pieces = [];
    for (const [j, p] of a.pieces.entries()) {
      const leaf = await v.pieceHash(sid, acct, j, a.pieces.length, big(p.shares));
      leaves[p.index] = {hash: leaf, sums: big(p.shares)};
      pieces.push(hex(leaf));
    }
    out.split.accounts.push({account_hash: hex(acct), pieces});
  }
  for (let i = 0; i < 2 ** split.height; i++) {
    if (!leaves[i]) {
      leaves[i] = {hash: await v.paddingHash(sid, i), sums: [0n, 0n]};
      out.split["padding_leaf_index_" + i] = hex(leaves[i].hash);
    }
  }
  out.split.level1 = await up(leaves);
  out.split.level2 = await up(out.split.level1);
  out.split.root = show(await up(out.split.level2))[0];
  out.split.level1 = show(out.split.level1);
  out.split.level2 = show(out.split.level2);
  // tree format 1: one leaf per account, in order
  sid = h(single.snapshot_id);
  leaves = [];
  for (const a of single.accounts) {
    const acct = await v.accountHash(a.id, h(a.salt));
    const leaf = await v.leafHash(sid, acct, big(a.balances));
    leaves.push({hash: leaf, sums: big(a.balances)});
    out.single.accounts.push({account_hash: hex(acct), leaf: hex(leaf)});
  }
  const level1 = await up(leaves);
  out.single.level1 = show(level1);
  out.single.root = show(await up(level1))[0];
  out.single.padding_leaf_index_4 = hex(await v.paddingHash(sid, 4));
  // dave's proof, as the page describes it (format 1 against a format 2 statement): carol's leaf, then the
  // left node of level 1, both on the left
  const carol = single.accounts[2], dave = single.accounts[3];
  const sums = (xs) => ({BTC: xs[0], ETH: xs[1]});
  const proof = {kind: "custody-por-proof", format: 1, snapshot_id: single.snapshot_id, account_id: dave.id,
                 index: 3, salt: dave.salt, balances: sums(dave.balances),
                 path: [{hash: carol.leaf, sums: sums(carol.balances)},
                        {hash: single.level1[0].hash, sums: sums(single.level1[0].sums)}]};
  const canon = (x) => x === null || typeof x !== "object" ? JSON.stringify(x) : Array.isArray(x)
    ? `[${x.map(canon).join(",")}]`
    : `{${Object.keys(x).sort().map((k) => JSON.stringify(k) + ":" + canon(x[k])).join(",")}}`;
  const statement = {format: 2, split: false, snapshotId: single.snapshot_id, assets: ["BTC", "ETH"],
                     decimals: [8, 9], height: 2, root: single.root.hash, totals: big(single.root.sums)};
  const found = await v.checkProof(statement, canon(proof));
  out.single.dave = {account: found.accountId, balances: found.balances.map(String)};
  return out;
})().then(done, (err) => done({error: String(err), code: err.code}));
"""


def test_the_page_recomputes_the_documented_vectors_and_accepts_their_proofs(chromium, tmp_path):
    site = tmp_path / "site"
    publish(snapshot_dir(tmp_path, vector_statement()), site)
    open_page(chromium, site)
    assert chromium.execute_script("return [window.isSecureContext, !!crypto.subtle]") == [True, True]
    got = chromium.execute_async_script(RECOMPUTE, SPLIT, VECTOR)
    assert "error" not in got, got

    split = got["split"]
    assert split["accounts"] == [
        {"account_hash": a["account_hash"], "pieces": [p["leaf"] for p in a["pieces"]]} for a in SPLIT["accounts"]
    ]
    assert [k for k in split if k.startswith("padding")] == ["padding_leaf_index_5"]  # the one padding leaf
    assert split["padding_leaf_index_5"] == SPLIT["padding_leaf_index_5"]
    assert split["level1"] == SPLIT["level1"] and split["level2"] == SPLIT["level2"]
    assert split["root"] == SPLIT["root"]
    single = got["single"]
    assert single["accounts"] == [{"account_hash": a["account_hash"], "leaf": a["leaf"]} for a in VECTOR["accounts"]]
    assert single["level1"] == VECTOR["level1"] and single["root"] == VECTOR["root"]
    assert single["padding_leaf_index_4"] == VECTOR["padding_leaf_index_4"]
    assert single["dave"] == {"account": "dave", "balances": VECTOR["accounts"][3]["balances"]}

    # each account's proof of the documented split tree, through the page as a customer uses it: bob picks his
    # file, carol pastes hers
    proofs = vector_proofs()
    (tmp_path / "bob.json").write_bytes(proofs["bob"])
    bob = check_file(chromium, site, tmp_path / "bob.json")
    assert bob["state"] == "accepted" and bob["balances"] == {"BTC": "0", "ETH": "12.5"}
    assert bob["verdict"] == "Your account bob is included in this proof of reserves, with the balances below."
    assert f"its 3 pieces each lead to the published root {SPLIT['root']['hash']}" in bob["detail"]
    open_page(chromium, site)
    # pasted: what the clipboard puts in the box, its line break after the text included
    chromium.execute_script(
        "document.getElementById('proof-text').value = arguments[0]", proofs["carol"].decode() + "\n"
    )
    chromium.find_element(By.ID, "check-pasted").click()
    carol = outcome(chromium)
    assert carol["state"] == "accepted" and carol["balances"] == {"BTC": "21000000", "ETH": "0.000000001"}
    # the file's bytes as they are: bad UTF-8 and a byte order mark are refused, as the reference refuses them
    for name, raw, code in (
        ("bad.json", b"\xff" + proofs["bob"], "not_utf8"),
        ("bom.json", b"\xef\xbb\xbf" + proofs["bob"], "not_json"),
    ):
        (tmp_path / name).write_bytes(raw)
        assert check_file(chromium, site, tmp_path / name)["code"] == code
    no_errors(chromium)


def publish_with_command(snap: Path, site: Path) -> str:
    return custody("por", "publish", "--snapshot", snap, "--out", site).output


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_real_snapshot_is_checked_in_the_browser(chromium, tmp_path, db_url, chain):
    daemon = make_daemon(tmp_path, db_url, chain, n_recipients=1)
    cfg = ("--config", daemon.config, "--passphrase-file", daemon.passphrase_file)
    csv = tmp_path / "balances.csv"
    csv.write_text(LIABILITIES)
    snap, other, site = tmp_path / "snap", tmp_path / "other", tmp_path / "site"
    for where in (snap, other):
        custody("por", "snapshot", "--liabilities", csv, "--out", where, "--decimals", "ETH=9", *cfg)
    assert "wrote index.html, verifier.js, verifier.css, statement.json" in publish_with_command(snap, site)
    statement = parse_statement((site / "statement.json").read_bytes())

    # every customer's proof is accepted, with the balances of the liabilities file
    rows = [line.split(",") for line in LIABILITIES.splitlines()[1:]]
    for account, eth, tok in rows:
        custody("por", "proof", account, "--snapshot", snap, "--out", tmp_path / f"{account}.json")
        shown = check_file(chromium, site, tmp_path / f"{account}.json")
        assert shown["state"] == "accepted", shown
        assert shown["balances"] == {"ETH": eth, "TOK": tok}
        assert f"Your account {account} is included" in shown["verdict"]
    dave = json.loads((tmp_path / "dave.json").read_bytes())

    def refused(name: str, doc: dict) -> dict[str, Any]:
        """The page's verdict on a changed proof, which the reference verifier refuses too."""
        (tmp_path / name).write_bytes(canonical(doc))
        with pytest.raises(ProofInvalid):
            check_proof(statement, canonical(doc))
        shown = check_file(chromium, site, tmp_path / name)
        assert shown["state"] == "refused" and shown["verdict"] == "This proof does NOT check out."
        assert shown["balances"] == {}
        return shown

    # one balance changed: the shares no longer add up to it
    changed = json.loads(json.dumps(dave))
    changed["balances"]["ETH"] = str(int(dave["balances"]["ETH"]) + 1)
    shown = refused("more.json", changed)
    assert shown["code"] == "shares" and shown["detail"].startswith("A balance was changed: the sums do not add up.")
    assert (
        "shares of ETH add up to 12123456789 base units, but the proof shows a balance of 12123456790"
        in shown["detail"]
    )
    # a share changed with its balance: the shares add up, but the leaf is not the tree's
    changed["pieces"][0]["shares"]["ETH"] = str(int(dave["pieces"][0]["shares"]["ETH"]) + 1)
    assert refused("share.json", changed)["code"] == "root"
    # two siblings swapped: the sums still add up to the totals, the hashes do not reach the root
    swapped = json.loads(json.dumps(dave))
    path = swapped["pieces"][1]["path"]
    path[0], path[1] = path[1], path[0]
    shown = refused("swapped.json", swapped)
    assert shown["code"] == "root" and shown["detail"].startswith("A sibling does not hash to the published root")
    # a proof of another snapshot
    custody("por", "proof", "dave", "--snapshot", other, "--out", tmp_path / "dave-other.json")
    shown = check_file(chromium, site, tmp_path / "dave-other.json")
    assert shown["state"] == "refused" and shown["code"] == "other_snapshot"
    assert shown["detail"].startswith("This proof is for another snapshot")
    # not a proof at all: the statement itself
    shown = check_file(chromium, site, site / "statement.json")
    assert shown["code"] == "not_a_proof" and "custody-por-statement file, not a proof" in shown["detail"]
    no_errors(chromium)


def mutations(raw: bytes) -> dict[str, bytes]:
    """Bob's documented proof, and changed copies of it: each the page must treat as the reference does."""
    doc = json.loads(raw)

    def changed(edit) -> bytes:
        copy = json.loads(raw)
        edit(copy)
        return canonical(copy)

    def big_share(d: dict) -> None:  # a share past u64, its balance raised to match: the shares still add up
        d["pieces"][1]["shares"]["ETH"] = str(2**64)
        d["balances"]["ETH"] = str(sum(int(p["shares"]["ETH"]) for p in d["pieces"]))

    return {
        "as published": raw,
        "a line break after it": raw + b"\n",
        "spaces": json.dumps(doc, sort_keys=True).encode(),
        "an unknown field": changed(lambda d: d.update(note="x")),
        "a field missing": changed(lambda d: d.pop("salt")),
        "another kind": changed(lambda d: d.update(kind="custody-por-statement")),
        "format 3": changed(lambda d: d.update(format=3)),
        "format 1 fields": changed(lambda d: d.update(format=1)),
        "a number, not a string": changed(lambda d: d["balances"].update(BTC=0)),
        "a leading zero": changed(lambda d: d["balances"].update(BTC="00")),
        "a negative balance": changed(lambda d: d["balances"].update(BTC="-1")),
        "another snapshot": changed(lambda d: d.update(snapshot_id="00" * 32)),
        "another account id": changed(lambda d: d.update(account_id="bob ")),
        "another salt": changed(lambda d: d.update(salt="00" * 32)),
        "upper-case hex": changed(lambda d: d.update(salt=d["salt"].upper())),
        "pieces in another order": changed(lambda d: d["pieces"].reverse()),
        "a piece left out": changed(lambda d: d["pieces"].pop()),
        "one piece only": changed(lambda d: d.update(pieces=d["pieces"][:1])),
        "two pieces at one place": changed(lambda d: d["pieces"][2].update(index=d["pieces"][1]["index"])),
        "a place past the tree": changed(lambda d: d["pieces"][2].update(index=8)),
        "a place past 2^53": changed(lambda d: d["pieces"][2].update(index=2**53 + 2)),
        "a level missing": changed(lambda d: d["pieces"][0]["path"].pop()),
        "a sibling's sums past u128": changed(lambda d: d["pieces"][0]["path"][2]["sums"].update(BTC=str(2**128))),
        "a share past u64": changed(big_share),
        "a sibling's hash changed": changed(lambda d: d["pieces"][0]["path"][1].update(hash="ab" * 32)),
        "an asset missing": changed(lambda d: d["balances"].pop("BTC")),
        "not JSON": b"bob holds 12.5 ETH",
        "a float": raw.replace(b'"index":3', b'"index":3.0'),
        "bad UTF-8 in the id": raw.replace(b'"account_id":"bob"', b'"account_id":"bob\\udc80"'),
    }


CHECK_ALL = """
const [texts, done] = arguments;
const v = custodyVerifier;
v.readStatement(JSON.parse(document.getElementById("statement").textContent))
  .then((st) => Promise.all(texts.map((t) => v.checkProof(st, t).then(() => "accepted", (e) => e.code || String(e)))))
  .then(done, (err) => done(String(err)));
"""


def test_the_page_accepts_and_refuses_what_the_reference_verifier_does(chromium, tmp_path):
    raw = vector_statement()
    statement = parse_statement(raw)
    publish(snapshot_dir(tmp_path, raw), tmp_path / "site")
    open_page(chromium, tmp_path / "site")
    cases = mutations(vector_proofs()["bob"])
    page = dict(zip(cases, chromium.execute_async_script(CHECK_ALL, [t.decode() for t in cases.values()]), strict=True))
    reference = {}
    for name, text in cases.items():
        try:
            check_proof(statement, text)
            reference[name] = "accepted"
        except ProofInvalid:
            reference[name] = "refused"
    assert {n: "accepted" if c == "accepted" else "refused" for n, c in page.items()} == reference
    assert [n for n, c in reference.items() if c == "accepted"] == ["as published"]
    assert not any(code.startswith(("Error", "TypeError", "RangeError")) for code in page.values()), page
    no_errors(chromium)
