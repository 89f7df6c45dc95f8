"""``custody por export-proofs``: every customer's proof in shards with a manifest, and each customer's proof
rebuilt from their shard equal to the one cut from the proofs file, verifying against the statement."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from custody.errors import ProofInvalid
from custody.por import shards
from custody.por.proofs import ProofsFile, extract
from custody.por.split import split
from custody.por.tree import Accounts, build, hash_accounts
from custody.por.verify import check_proof
from signer.porstatement import Statement

ASSETS = ["ETH", "USDC"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    n = 300
    rng = np.random.default_rng(5)
    ids = [f"client.{i}@example.com" for i in range(n)]
    acc = Accounts(
        os.urandom(32),
        "".join(ids).encode(),
        np.cumsum([0] + [len(i) for i in ids]).astype(np.int64),
        os.urandom(32 * n),
        rng.integers(0, 10**15, size=(n, len(ASSETS)), dtype=np.uint64),
    )
    hashes, keys = hash_accounts(acc)
    leaves = split(acc, hashes)
    store = ProofsFile(tmp / "proofs.bin", acc, ASSETS, leaves.height, keys, leaves)
    root, totals = build(leaves, leaves.height, store, chunk_levels=3, workers=2)
    store.close()
    st = Statement(
        {
            "snapshot_id": acc.snapshot_id.hex(),
            "assets": [{"symbol": a, "decimals": 0} for a in ASSETS],
            "liabilities": {
                "root": root.hex(),
                "height": leaves.height,
                "accounts": n,
                "leaves": leaves.leaves,
                "totals": {a: str(t) for a, t in zip(ASSETS, totals, strict=True)},
            },
        }
    )
    # a batch of a few shards at a time, to exercise the batching
    done = shards.export(tmp / "proofs.bin", tmp / "out", prefix_digits=1, workers=2, batch_pieces=100)
    return acc, st, totals, tmp, done


def test_every_customer_finds_their_proof_in_their_shard(exported):
    acc, st, totals, tmp, done = exported
    manifest = (tmp / "out" / shards.MANIFEST).read_bytes()
    listed = json.loads(manifest)["shards"]
    assert done.shards == 16 == len(listed) and done.accounts == acc.count
    assert sorted(p.name for p in (tmp / "out").glob("*.bin")) == [f"{i:x}.bin" for i in range(16)]
    for i in range(acc.count):
        salt = acc.salts[32 * i : 32 * i + 32]
        name = shards.shard_name(acc.account_id(i), salt, 1)
        raw = (tmp / "out" / name).read_bytes()
        shards.check_manifest(manifest, name, raw)
        proof = shards.proof_from_shard(raw, acc.account_id(i), salt, totals)
        cut, _ = extract(tmp / "proofs.bin", acc.account_id(i))
        assert proof == cut  # shares derived from the totals are the leaf's own
        assert "included with" in check_proof(st, proof.to_bytes(ASSETS))


def test_no_shard_holds_an_account_id(exported):
    acc, _, _, tmp, done = exported
    blob = b"".join(p.read_bytes() for p in sorted((tmp / "out").glob("*.bin")))
    assert b"example.com" not in blob and acc.salts[:32] not in blob
    per_proof = sum(len(extract(tmp / "proofs.bin", acc.account_id(i))[0].to_bytes(ASSETS)) for i in range(20))
    assert done.bytes < per_proof / 20 * acc.count / 4  # much smaller than the JSON proofs


def test_a_wrong_key_or_a_changed_shard_is_refused(exported):
    acc, _, totals, tmp, _ = exported
    salt = acc.salts[:32]
    name = shards.shard_name(acc.account_id(0), salt, 1)
    raw = (tmp / "out" / name).read_bytes()
    with pytest.raises(ProofInvalid, match="no entry"):
        shards.proof_from_shard(raw, acc.account_id(0), bytes(32), totals)  # in the right shard, the wrong key
    changed = raw[:-1] + bytes([raw[-1] ^ 1])
    with pytest.raises(ProofInvalid, match="SHA-256 differs"):
        shards.check_manifest((tmp / "out" / shards.MANIFEST).read_bytes(), name, changed)
    assert (
        hashlib.sha256(raw).hexdigest() == json.loads((tmp / "out" / shards.MANIFEST).read_bytes())["shards"][name[0]]
    )
