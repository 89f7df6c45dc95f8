"""`custody batch export --chain bitcoin --psbt-version 2`: a BIP-370 batch through the real ceremony and the
real node (which reads PSBT version 0 only: the daemon hands it the version 0 spelling, same transaction). One
test, on SQLite, beside test_btc_cold.py's (whose fixture and helpers it reuses) so as not to slow those."""

from __future__ import annotations

import pytest
from embit.psbt import PSBT
from sqlalchemy import select

from custody.store.models import BtcBatch, BtcBatchSignature
from signer.btcbatch import parse_btc_batch_file, parse_btc_signature_file
from tests.cli_helpers import custody
from tests.integration.test_btc_cold import btc, export, fund, queue, sign, states

__all__ = ["btc"]  # the fixture, imported for this module's test


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_version_2_batch_is_signed_imported_combined_and_broadcast(btc, bitcoind, tmp_path):
    d = btc
    fund(d, bitcoind)
    ids = queue(d, tmp_path, [("0.3", d.receivers[0])])
    batch_file = export(d, tmp_path / "out", "--psbt-version", "2")
    doc = parse_btc_batch_file(batch_file.read_bytes())
    assert PSBT.from_string(doc.batch.psbt).version == 2
    sigs = [tmp_path / f"sig{i}.json" for i in range(2)]
    for op, out in zip(d.ops[:2], sigs, strict=True):
        sign(op, batch_file, out, d.passphrase_file)
    signed = [parse_btc_signature_file(p.read_bytes()) for p in sigs]
    assert all(PSBT.from_string(s.psbt).version == 2 for s in signed)

    # The same signature written back as version 0: not the file the signer wrote, refused, nothing stored.
    v0 = PSBT.from_string(signed[0].psbt)
    v0.version = None
    swapped = tmp_path / "swapped.json"
    swapped.write_bytes(signed[0].to_bytes().replace(signed[0].psbt.encode(), v0.to_string().encode()))
    refused = custody("batch", "import", swapped, "--wait", "0", *d.cfg, ok=False).output
    assert "[signature_for_another_batch]" in refused, refused
    with d.store.read() as s:
        assert s.execute(select(BtcBatchSignature)).first() is None

    out = custody("batch", "import", *sigs, "--wait", "0", *d.cfg).output
    assert "signatures 2 of 2" in out, out
    with d.store.read() as s:
        batch = s.execute(select(BtcBatch)).scalar_one()
    assert batch.state == "broadcast" and batch.txid == signed[0].txid
    assert bitcoind.node().call("getmempoolentry", batch.txid)
    assert states(d, ids) == ["broadcast"]
