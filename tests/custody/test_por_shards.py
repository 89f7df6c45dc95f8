"""``custody por export-proofs``: every customer's proof as entry shards, subtree files and a manifest, and each
customer's proof rebuilt from them equal to the one cut from the proofs file, verifying against the statement."""

from __future__ import annotations

import hashlib
import json
import os
import pickle

import numpy as np
import pytest

from custody.errors import ProofInvalid
from custody.por import shards
from custody.por.proofs import ENTRY, HEADER, ProofsFile, Reading, extract
from custody.por.split import split
from custody.por.tree import Accounts, Hashing, build, hash_accounts, sums_width
from custody.por.verify import check_proof
from policies.canonical import canonical_bytes
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
    rewrite_header(tmp / "proofs.bin", as_format_2)  # as an earlier version wrote it
    (tmp / "leaves.pickle").write_bytes(pickle.dumps(leaves))  # the same pieces and places, for another file
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
    # subtrees of 3 levels: several tree files and a top file
    done = shards.export(tmp / "proofs.bin", tmp / "out", prefix_digits=1, subtree_levels=3, workers=2)
    return acc, st, totals, tmp, done


def rewrite_header(path, change):
    with open(path, "r+b") as f:
        header = json.loads(f.read(HEADER))
        change(header)
        f.seek(0)
        f.write(canonical_bytes(header).ljust(HEADER))


def as_format_2(header):
    """A format 3 file of 16-byte sums without stored entries has format 2's layout: only its header differs."""
    assert header.pop("sums_width") == 16 and "entries" not in header["sections"]
    header["format"] = 2


def published(tmp, opened=None):
    def read(name):
        if opened is not None:
            opened.append(name)
        return (tmp / "out" / name).read_bytes()

    return shards.Published((tmp / "out" / shards.MANIFEST).read_bytes(), read)


def test_every_customer_finds_their_proof_in_the_shards(exported):
    acc, st, _, tmp, done = exported
    listed = json.loads((tmp / "out" / shards.MANIFEST).read_bytes())["files"]
    height = st.claims["liabilities"]["height"]
    assert done.shards == 16 and done.tree_files == 2 ** (height - 3) + 1 and done.accounts == acc.count
    on_disk = {str(p.relative_to(tmp / "out")) for p in (tmp / "out").rglob("*.bin")}
    assert on_disk == set(listed) and {f"entries/{i:x}.bin" for i in range(16)} <= on_disk
    for i in range(acc.count):
        salt = acc.salts[32 * i : 32 * i + 32]
        opened = []
        proof = shards.proof_from_shards(published(tmp, opened), acc.account_id(i), salt)
        cut, _ = extract(tmp / "proofs.bin", acc.account_id(i))
        assert proof == cut  # shares and every sibling as the proofs file has them
        assert "included with" in check_proof(st, proof.to_bytes(ASSETS))
        # the customer opens their entry shard, the top of the tree and one subtree file a piece (at most)
        assert opened[0] == shards.shard_name(acc.account_id(i), salt, 1) and "tree/top.bin" in opened
        assert len(opened) <= 2 + len(proof.pieces)


def test_the_files_hold_the_tree_once_and_no_account_id(exported):
    acc, st, _, tmp, done = exported
    blob = b"".join(p.read_bytes() for p in sorted((tmp / "out").rglob("*.bin")))
    assert b"example.com" not in blob and acc.salts[:32] not in blob
    nodes = 2 ** (st.claims["liabilities"]["height"] + 1) - 2  # every node but the root
    headers = 4096 * (done.shards + done.tree_files)
    assert nodes * (32 + 8 * len(ASSETS)) <= done.bytes < nodes * (32 + 8 * len(ASSETS)) + 33 * acc.count + headers


def test_a_wrong_key_a_changed_file_or_an_old_manifest_is_refused(exported):
    acc, _, _, tmp, _ = exported
    salt = acc.salts[:32]
    with pytest.raises(ProofInvalid, match="no entry"):
        shards.proof_from_shards(published(tmp), acc.account_id(0), bytes(32))  # a shard exists, the key is wrong
    manifest = (tmp / "out" / shards.MANIFEST).read_bytes()
    for name in (shards.shard_name(acc.account_id(0), salt, 1), "tree/top.bin"):
        raw = (tmp / "out" / name).read_bytes()
        changed = raw[:-1] + bytes([raw[-1] ^ 1])

        def read(n, name=name, changed=changed):
            return changed if n == name else (tmp / "out" / n).read_bytes()

        tampered = shards.Published(manifest, read)
        with pytest.raises(ProofInvalid, match=f"the shard {name} is not the one the manifest lists"):
            shards.proof_from_shards(tampered, acc.account_id(0), salt)
    old = json.loads(manifest)
    old["format"] = 1
    with pytest.raises(ProofInvalid, match="format 1; this version reads format 2: export them again"):
        shards.Published(canonical_bytes(old), lambda n: b"")
    with pytest.raises(ProofInvalid, match="not a manifest"):
        shards.Published(b"{}", lambda n: b"")


def test_files_that_match_a_forged_manifest_but_are_cut_short_get_a_clear_refusal(exported):
    """A host that rewrites the files and the manifest together: the hashes match, the contents do not hold."""
    acc, st, _, tmp, _ = exported
    salt = acc.salts[:32]
    doc = json.loads((tmp / "out" / shards.MANIFEST).read_bytes())
    proof = shards.proof_from_shards(published(tmp), acc.account_id(0), salt)
    digits = shards._tree_digits(st.claims["liabilities"]["height"], 3)
    subtree = f"tree/{proof.pieces[0].index >> 3:0{digits}x}.bin"
    entry = shards.shard_name(acc.account_id(0), salt, 1)
    cases = ((subtree, "the shards lack the node"), ("tree/top.bin", "the shards lack the node"))
    for name, why in (*cases, (entry, "the shards are not well-formed proof shards")):
        files = {n: (tmp / "out" / n).read_bytes() for n in doc["files"]}
        files[name] = files[name][: 4 + int.from_bytes(files[name][:4], "big")]  # the header, no body
        forged = {**doc, "files": {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}}
        with pytest.raises(ProofInvalid, match=why):
            shards.proof_from_shards(
                shards.Published(canonical_bytes(forged), files.__getitem__), acc.account_id(0), salt
            )


def test_a_file_with_stored_entries_and_8_byte_sums_exports_the_same_files(exported):
    """The snapshot's proofs file (format 3: the sorted entries stored, 8-byte sums, the sections written while
    the tree is built) gives byte for byte the files exported from one without them."""
    acc, _, _, tmp, _ = exported
    hashing = Hashing(acc, workers=2, chunk=64, digest=shards.entry_digests, digest_size=ENTRY).wait()
    leaves = pickle.loads((tmp / "leaves.pickle").read_bytes())
    assert np.array_equal(hashing.hashes, leaves.account_hashes)
    width = sums_width(acc.balances)
    assert width == 8
    store = ProofsFile(
        tmp / "v3.bin", acc, ASSETS, leaves.height, hashing.keys, leaves, hashing.digests, width, defer=True
    )
    build(leaves, leaves.height, store, chunk_levels=3, workers=2, meanwhile=store.write_sections)
    store.close()
    with Reading(tmp / "v3.bin") as f:
        assert f.header["format"] == 3 and "entries" in f.sections and f.width == 8
    with Reading(tmp / "proofs.bin") as f:
        assert f.header["format"] == 2 and "entries" not in f.sections and f.width == 16
    assert (tmp / "v3.bin").stat().st_size < (tmp / "proofs.bin").stat().st_size
    shards.export(tmp / "v3.bin", tmp / "v3", prefix_digits=1, subtree_levels=3, workers=2)
    names = sorted(str(p.relative_to(tmp / "out")) for p in (tmp / "out").rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(tmp / "v3")) for p in (tmp / "v3").rglob("*") if p.is_file())
    assert shards.MANIFEST in names
    for name in names:
        assert (tmp / "v3" / name).read_bytes() == (tmp / "out" / name).read_bytes(), name


@pytest.mark.parametrize(
    "change",
    [
        lambda h: h.update(format=4),
        lambda h: h.update(format=3),  # format 3 without its sums' width
        lambda h: h.update(format=3, sums_width=12),
        lambda h: h.update(sums_width=8),  # format 2 has 16-byte sums only
        lambda h: h.pop("sections"),
        lambda h: h.update(kind="custody-por-proof"),
    ],
)
def test_a_proofs_file_this_version_cannot_read_is_refused_and_never_misread(exported, tmp_path, change):
    _, _, _, tmp, _ = exported
    path = tmp_path / "proofs.bin"
    path.write_bytes((tmp / "proofs.bin").read_bytes())
    rewrite_header(path, change)
    with pytest.raises(ProofInvalid, match="proofs file"):
        shards.export(path, tmp_path / "out")
    with pytest.raises(ProofInvalid, match="proofs file"):
        extract(path, "client.1@example.com")
