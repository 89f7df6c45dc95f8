"""docs/proof-of-reserves.md's worked example, recomputed from the page with both implementations of the rules,
and the two preimages it spells out byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from custody.por.tree import Accounts, account_hash, build, leaf_hash, node_hash, padding_hash, walk
from custody.por.tree import Sibling as S

DOC = (Path(__file__).parents[2] / "docs" / "proof-of-reserves.md").read_text()
VECTOR = json.loads(re.findall(r"```json\n(.*?)\n```", DOC, re.S)[1])


class Nowhere:
    def write_level(self, level: int, start: int, records: bytes) -> None:
        pass


def test_the_documented_vector_holds_step_by_step():
    v = VECTOR
    sid = bytes.fromhex(v["snapshot_id"])
    assert sid == hashlib.sha256(b"custody proof-of-reserves test vector").digest()
    leaves = []
    for a in v["accounts"]:
        salt = bytes.fromhex(a["salt"])
        assert salt == hashlib.sha256(b"salt:" + a["id"].encode()).digest()
        assert account_hash(a["id"], salt).hex() == a["account_hash"]
        balances = [int(b) for b in a["balances"]]
        assert leaf_hash(sid, bytes.fromhex(a["account_hash"]), balances).hex() == a["leaf"]
        leaves.append((bytes.fromhex(a["leaf"]), balances))
    for i, node in enumerate(v["level1"]):
        (lh, ls), (rh, rs) = leaves[2 * i], leaves[2 * i + 1]
        assert node_hash(lh, rh, ls, rs).hex() == node["hash"]
        assert [str(x + y) for x, y in zip(ls, rs, strict=True)] == node["sums"]
    (l1, r1) = v["level1"]
    root = node_hash(
        bytes.fromhex(l1["hash"]), bytes.fromhex(r1["hash"]), [int(x) for x in l1["sums"]], [int(x) for x in r1["sums"]]
    )
    assert root.hex() == v["root"]["hash"]
    assert padding_hash(sid, 4).hex() == v["padding_leaf_index_4"]

    # the vectorised builder reaches the same root
    ids = [a["id"].encode() for a in v["accounts"]]
    acc = Accounts(
        sid,
        b"".join(ids),
        np.cumsum([0] + [len(i) for i in ids]).astype(np.int64),
        b"".join(bytes.fromhex(a["salt"]) for a in v["accounts"]),
        np.array([[int(b) for b in a["balances"]] for a in v["accounts"]], dtype=np.uint64),
    )
    built_root, sums = build(acc, 2, Nowhere())
    assert built_root.hex() == v["root"]["hash"] and [str(s) for s in sums] == v["root"]["sums"]

    # dave's proof, as the page describes it: carol's leaf, then the left node, both on the left
    carol = v["accounts"][2]
    path = (
        S(bytes.fromhex(carol["leaf"]), tuple(int(b) for b in carol["balances"])),
        S(bytes.fromhex(l1["hash"]), tuple(int(x) for x in l1["sums"])),
    )
    dave = leaves[3]
    assert walk(dave[0], dave[1], 3, path) == (root, tuple(int(x) for x in v["root"]["sums"]))


def test_the_spelled_out_preimages_are_the_hashed_bytes():
    blocks = re.findall(r"```\n(0[01] [0-9a-f ].*?)\n```", DOC, re.S)
    leaf_pre, node_pre = (bytes.fromhex("".join(b.split())) for b in blocks)
    assert hashlib.sha256(leaf_pre).hexdigest() == VECTOR["accounts"][0]["leaf"]
    assert hashlib.sha256(node_pre).hexdigest() == VECTOR["level1"][0]["hash"]
