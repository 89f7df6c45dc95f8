"""docs/proof-of-reserves.md's worked examples (the split tree of format 3 statements, and the one-leaf-per-account
tree of format 2 ones, which must keep verifying), recomputed from the page with both implementations of the
rules, and the preimages the page spells out byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from custody.por.proofs import PieceProof, SplitProof
from custody.por.split import MAX_PIECES, UNUSED, SplitLeaves
from custody.por.tree import Accounts, account_hash, build, leaf_hash, node_hash, padding_hash, piece_hash, walk
from custody.por.tree import Sibling as S
from custody.por.verify import check_proof
from signer.porstatement import Statement

DOC = (Path(__file__).parents[2] / "docs" / "proof-of-reserves.md").read_text()
BLOCKS = re.findall(r"```json\n(.*?)\n```", DOC, re.S)
VECTOR = json.loads(next(b for b in BLOCKS if "padding_leaf_index_4" in b))  # tree format 1
SPLIT = json.loads(next(b for b in BLOCKS if "padding_leaf_index_5" in b))  # tree format 2


class Nowhere:
    sums_width = 16

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
    piece_pre, leaf_pre, node_pre = (bytes.fromhex("".join(b.split())) for b in blocks)
    assert hashlib.sha256(piece_pre).hexdigest() == SPLIT["accounts"][1]["pieces"][2]["leaf"]
    assert hashlib.sha256(leaf_pre).hexdigest() == VECTOR["accounts"][0]["leaf"]
    assert hashlib.sha256(node_pre).hexdigest() == VECTOR["level1"][0]["hash"]


def _sums(values: list[str]) -> tuple[int, ...]:
    return tuple(int(x) for x in values)


def test_the_documented_split_vector_holds_step_by_step():
    v = SPLIT
    sid = bytes.fromhex(v["snapshot_id"])
    assert sid == hashlib.sha256(b"custody proof-of-reserves test vector, format 2").digest()
    height, half = v["height"], 1 << (v["height"] - 1)
    level: dict[int, tuple[bytes, tuple[int, ...]]] = {}
    for a in v["accounts"]:
        salt = bytes.fromhex(a["salt"])
        assert salt == hashlib.sha256(b"salt:" + a["id"].encode()).digest()
        assert account_hash(a["id"], salt).hex() == a["account_hash"]
        pieces = a["pieces"]
        assert pieces[0]["index"] < half <= pieces[1]["index"]  # the halves rule
        added = [sum(int(p["shares"][i]) for p in pieces) for i in range(len(v["assets"]))]
        assert [str(x) for x in added] == a["balances"]  # shares add up to exactly the balances
        for j, p in enumerate(pieces):
            shares = _sums(p["shares"])
            leaf = piece_hash(sid, bytes.fromhex(a["account_hash"]), j, len(pieces), shares)
            assert leaf.hex() == p["leaf"]
            level[p["index"]] = (leaf, shares)
    padding = [i for i in range(1 << height) if i not in level]
    assert padding == [5] and padding_hash(sid, 5).hex() == v["padding_leaf_index_5"]
    level[5] = (padding_hash(sid, 5), (0, 0))
    nodes = [level[i] for i in range(1 << height)]
    for name in ("level1", "level2"):
        nodes = [
            (node_hash(a[0], b[0], a[1], b[1]), tuple(x + y for x, y in zip(a[1], b[1], strict=True)))
            for a, b in zip(nodes[0::2], nodes[1::2], strict=True)
        ]
        assert [(h.hex(), [str(x) for x in s]) for h, s in nodes] == [(n["hash"], n["sums"]) for n in v[name]]
    root = node_hash(nodes[0][0], nodes[1][0], nodes[0][1], nodes[1][1])
    assert root.hex() == v["root"]["hash"]

    # the vectorised builder reaches the same root from the page's pieces and places
    size = 1 << height
    owner, piece = np.full(size, -1, dtype=np.int32), np.zeros(size, dtype=np.uint8)
    shares = np.zeros((size, 2), dtype=np.uint64)
    places = np.full((3, MAX_PIECES), UNUSED, dtype=np.uint32)
    for i, a in enumerate(v["accounts"]):
        for j, p in enumerate(a["pieces"]):
            owner[p["index"]], piece[p["index"]], places[i, j] = i, j, p["index"]
            shares[p["index"]] = [int(x) for x in p["shares"]]
    hashes = np.array([list(bytes.fromhex(a["account_hash"])) for a in v["accounts"]], dtype=np.uint8)
    counts = np.array([len(a["pieces"]) for a in v["accounts"]], dtype=np.uint8)
    leaves = SplitLeaves(sid, hashes, counts, places, owner, piece, shares, height)
    built_root, sums = build(leaves, height, Nowhere(), chunk_levels=1)
    assert built_root.hex() == v["root"]["hash"] and [str(s) for s in sums] == v["root"]["sums"]

    # every account's proof, as the verifier checks it
    levels = [[(level[i][0], level[i][1]) for i in range(size)]]
    for name in ("level1", "level2"):
        levels.append([(bytes.fromhex(n["hash"]), _sums(n["sums"])) for n in v[name]])
    st = Statement(
        {
            "snapshot_id": v["snapshot_id"],
            "assets": [{"symbol": s, "decimals": 0} for s in v["assets"]],
            "liabilities": {
                "root": v["root"]["hash"],
                "height": height,
                "accounts": 3,
                "leaves": 7,
                "totals": dict(zip(v["assets"], v["root"]["sums"], strict=True)),
            },
        }
    )
    for a in v["accounts"]:
        proof = SplitProof(
            sid,
            a["id"],
            bytes.fromhex(a["salt"]),
            _sums(a["balances"]),
            tuple(
                PieceProof(
                    p["index"],
                    _sums(p["shares"]),
                    tuple(S(*levels[lv][(p["index"] >> lv) ^ 1]) for lv in range(height)),
                )
                for p in a["pieces"]
            ),
        )
        assert f"account {a['id']}: included with" in check_proof(st, proof.to_bytes(v["assets"]))
