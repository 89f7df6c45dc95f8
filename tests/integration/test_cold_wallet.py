"""The cold wallet on anvil: a real Safe 1.4.1, batch files, owners signing on their own, execution at quorum."""

from __future__ import annotations

import hashlib
import time

from eth_account import Account
from selenium.webdriver.common.by import By
from sqlalchemy import select

from custody.api.client import CustodyClient
from custody.chain import safe as safe_contract
from custody.chain.devnode import deploy_safe_contracts
from custody.chain.ethereum import EthereumNode
from custody.store.models import Batch, Withdrawal
from signer.batchfile import OwnerSignature, parse_batch_file, parse_signature_file
from signer.coldwallet import parse_cold_wallet
from signer.safecontracts import MULTISEND_CALL_ONLY, safe_address
from signer.safetx import sign_hash
from tests.browser import chromium  # noqa: F401  (the module's browser)
from tests.cli_helpers import custody
from tests.conftest import running_server
from tests.integration.conftest import ETH, make_daemon, operators, queue_cold, sign_as
from tests.integration.console_helpers import console_signed_in


def test_cold_create_uses_only_the_canonical_safe_contracts(tmp_path, db_url, chain):
    """No contracts at the canonical addresses: refused before anything is sent. With them: the Safe is where
    the signers derive it, owners in the order given, salt nonce in the file."""
    daemon = make_daemon(tmp_path, db_url, chain, n_recipients=1)
    ops = operators(tmp_path, daemon.passphrase_file, 3)
    owners = [ops[2].address, ops[0].address, ops[1].address]
    cards = [x for op in (ops[2], ops[0], ops[1]) for x in ("--owner", op.card)]
    cfg = ("--config", daemon.config, "--passphrase-file", daemon.passphrase_file)
    node = EthereumNode(chain.anvil.url, 31337)
    sent = node.transaction_count(daemon.hot)
    refused = custody("cold", "create", *cards, "--threshold", 2, "--salt-nonce", 7, *cfg, ok=False)
    assert refused.exit_code == 1 and "[safe_error]" in refused.output, refused.output
    assert "canonical Safe 1.4.1 singleton is not deployed on chain 31337" in refused.output
    assert not (daemon.data_dir / "cold-wallet.json").exists() and node.transaction_count(daemon.hot) == sent

    deploy_safe_contracts(chain.anvil)
    out = custody("cold", "create", *cards, "--threshold", 2, "--salt-nonce", 7, *cfg).output
    raw = (daemon.data_dir / "cold-wallet.json").read_bytes()
    wallet = parse_cold_wallet(raw)  # what each signer checks when pinning
    assert wallet.safe == safe_address(owners, 2, 7) and wallet.owners == tuple(owners)
    assert (wallet.threshold, wallet.salt_nonce, wallet.multisend) == (2, 7, MULTISEND_CALL_ONLY)
    assert safe_contract.owners(node, wallet.safe) == owners and safe_contract.threshold(node, wallet.safe) == 2
    assert hashlib.sha256(raw).hexdigest() in out and wallet.safe in out
    again = custody("cold", "create", *cards, "--threshold", 2, *cfg, ok=False)
    assert "[cold_wallet_exists]" in again.output


def test_fifty_cold_withdrawals_in_one_batch_paid_once_at_quorum(tmp_path, chain, cold_setup):
    daemon, ops, safe, cfg, _ = cold_setup
    node = EthereumNode(chain.anvil.url, 31337)
    plan = []
    for i, recipient in enumerate(daemon.recipients):
        if i % 2:
            plan.append(("ETH", f"6.{i:03d}", recipient, 6 * ETH + i * 10**15))
        else:
            plan.append(("TOK", f"{20000 + i}.25", recipient, (20000 + i) * 10**6 + 250_000))
    queue_cold(daemon, tmp_path, [(a, amt, r) for a, amt, r, _ in plan])
    nonce_before = safe_contract.nonce(node, safe)

    out = custody("batch", "export", "--out", tmp_path / "batches", *cfg).output
    (batch_file,) = (tmp_path / "batches").glob("batch-*.json")
    doc = parse_batch_file(batch_file.read_bytes()).batch
    assert len(doc.withdrawals) == 50 and "50 withdrawals" in out and doc.safe_nonce == nonce_before
    # the Safe contract and the signer agree on the hash
    assert safe_contract.contract_transaction_hash(node, safe, doc.safe_tx) == doc.safe_tx_hash

    sign_as(ops[0], batch_file, tmp_path / "sig0.json", daemon.passphrase_file)
    sign_as(ops[2], batch_file, tmp_path / "sig2.json", daemon.passphrase_file)

    # refused: a signature by someone who is not an owner, and one for another batch
    outsider = Account.create()
    forged = OwnerSignature(
        doc.id,
        31337,
        safe,
        doc.safe_nonce,
        doc.safe_tx_hash,
        outsider.address,
        sign_hash(outsider.key, doc.safe_tx_hash),
    )
    (tmp_path / "outsider.json").write_bytes(forged.to_bytes())
    result = custody("batch", "import", tmp_path / "outsider.json", *cfg, ok=False)
    assert result.exit_code == 1 and "[not_a_safe_owner]" in result.output
    mine = parse_signature_file((tmp_path / "sig0.json").read_bytes())
    other_hash = bytes(32)
    elsewhere = OwnerSignature(
        doc.id, 31337, safe, doc.safe_nonce, other_hash, mine.owner, sign_hash(b"\x01" * 32, other_hash)
    )
    (tmp_path / "elsewhere.json").write_bytes(elsewhere.to_bytes())
    result = custody("batch", "import", tmp_path / "elsewhere.json", *cfg, ok=False)
    assert "[signature_for_another_batch]" in result.output

    # one signature: stored, not executed
    out = custody("batch", "import", tmp_path / "sig0.json", *cfg).output
    assert "signatures 1 of 2" in out and "executing" not in out
    assert safe_contract.nonce(node, safe) == nonce_before
    listing = custody("batch", "list", *cfg[:2]).output
    assert "signatures 1/2" in listing and ops[1].address in listing and ops[2].address in listing
    # each owner by the name on their card, as well as the address
    assert f"missing  op1 {ops[1].address}" in listing and f"signed   op0 {ops[0].address}" in listing
    status = custody("status", *cfg[:2]).output
    assert "batches waiting for signatures: 1" in status and "1/2 signed, missing " in status
    assert ops[1].address in status and ops[2].address in status and ops[0].address not in status

    # the second owner's signature (and the first again, harmlessly): executed and confirmed
    out = custody("batch", "import", tmp_path / "sig0.json", tmp_path / "sig2.json", *cfg).output
    assert "signatures 2 of 2" in out and "executed" in out, out
    assert safe_contract.nonce(node, safe) == nonce_before + 1
    for asset, _, recipient, base in plan:
        held = chain.eth_balance(recipient) if asset == "ETH" else chain.token_balance(recipient)
        assert held == base, (recipient, asset, held, base)
    with daemon.store.read() as s:
        states = set(s.execute(select(Withdrawal.state).where(Withdrawal.batch_id == doc.id)).scalars())
        batch = s.get_one(Batch, doc.id)
    assert states == {"confirmed"} and batch.state == "executed"

    # importing again changes nothing and pays nobody twice
    out = custody("batch", "import", tmp_path / "sig2.json", *cfg).output
    assert "none new" in out
    assert safe_contract.nonce(node, safe) == nonce_before + 1
    assert "intact" in custody("audit", "verify", "--config", daemon.config).output


def test_cancelled_and_expired_batches_free_their_nonce_for_reuse_or_a_no_op(tmp_path, chain, cold_setup):
    daemon, ops, safe, cfg, _ = cold_setup
    node = EthereumNode(chain.anvil.url, 31337)
    pw = daemon.passphrase_file
    a, b = daemon.recipients[:2]
    queue_cold(daemon, tmp_path, [("ETH", "7", a), ("ETH", "8", b)])

    custody("batch", "export", "--out", tmp_path / "first", *cfg)
    (first,) = (tmp_path / "first").glob("*.json")
    first_doc = parse_batch_file(first.read_bytes()).batch
    sign_as(ops[0], first, tmp_path / "f0.json", pw)
    sign_as(ops[1], first, tmp_path / "f1.json", pw)
    custody("batch", "cancel", first_doc.id, "--reason", "wrong ticket", *cfg[:2])
    result = custody("batch", "import", tmp_path / "f0.json", tmp_path / "f1.json", *cfg, ok=False)
    assert "cancelled" in result.output and safe_contract.nonce(node, safe) == 0

    # the same withdrawals go out again at the same Safe nonce: only one of the two batches can ever execute
    custody("batch", "export", "--out", tmp_path / "second", "--expires-in", "1h", *cfg)
    (second,) = (tmp_path / "second").glob("*.json")
    second_doc = parse_batch_file(second.read_bytes()).batch
    assert second_doc.safe_nonce == first_doc.safe_nonce == 0
    assert {w.id for w in second_doc.withdrawals} == {w.id for w in first_doc.withdrawals}
    sign_as(ops[1], second, tmp_path / "s1.json", pw)
    sign_as(ops[2], second, tmp_path / "s2.json", pw)
    assert "executed" in custody("batch", "import", tmp_path / "s1.json", tmp_path / "s2.json", *cfg).output
    assert chain.eth_balance(a) == 7 * ETH and chain.eth_balance(b) == 8 * ETH

    # a batch that expires unsigned gives its withdrawal back; with nothing else to pay, the next export is an
    # empty batch that uses the freed nonce up, so the old batch's signatures can never be replayed
    queue_cold(daemon, tmp_path, [("ETH", "9", a)])
    custody("batch", "export", "--out", tmp_path / "third", "--expires-in", "6s", *cfg)
    (third,) = (tmp_path / "third").glob("*.json")
    sign_as(ops[0], third, tmp_path / "t0.json", pw)  # well within its 6 s, even on a slow machine
    time.sleep(max(0.0, parse_batch_file(third.read_bytes()).batch.expires_at + 1 - time.time()))
    with daemon.store.read() as s:
        assert s.execute(select(Withdrawal.state).where(Withdrawal.amount == 9 * ETH)).scalar_one() == "batched"
    daemon.worker(chain).step()  # the worker's pass releases expired batches
    with daemon.store.read() as s:
        w = s.execute(select(Withdrawal).where(Withdrawal.amount == 9 * ETH)).scalar_one()
        assert w.state == "queued_cold" and w.batch_id is None
        assert s.get_one(Batch, parse_batch_file(third.read_bytes()).batch.id).state == "expired"
    with (
        running_server(daemon.store, tmp_path) as srv,
        CustodyClient(srv.url, daemon.client_key.name, daemon.client_key.key) as client,
    ):
        assert client.cancel_withdrawal(w.id)["state"] == "cancelled"
    out = custody("batch", "export", "--out", tmp_path / "fourth", *cfg).output
    assert "no transfers" in out and "Safe nonce 1" in out
    (fourth,) = (tmp_path / "fourth").glob("*.json")
    sign_as(ops[0], fourth, tmp_path / "n0.json", pw)
    sign_as(ops[2], fourth, tmp_path / "n2.json", pw)
    assert "executed" in custody("batch", "import", tmp_path / "n0.json", tmp_path / "n2.json", *cfg).output
    assert safe_contract.nonce(node, safe) == 2
    result = custody("batch", "import", tmp_path / "t0.json", *cfg, ok=False)
    assert "expired" in result.output
    assert chain.eth_balance(a) == 7 * ETH  # the expired batch's 9 ETH was never paid
    assert "intact" in custody("audit", "verify", "--config", daemon.config).output


def test_concurrent_exports_take_different_nonces_and_different_withdrawals(tmp_path, chain, cold_setup):
    """Two exports at once (two replicas, or two operators) never share a Safe nonce or a withdrawal."""
    import threading

    from custody.cold import batches
    from custody.keys import load_identity
    from tests.integration.conftest import PASSPHRASE

    daemon, *_ = cold_setup
    queue_cold(daemon, tmp_path, [("ETH", str(6 + i), r) for i, r in enumerate(daemon.recipients[:6])])
    identity = load_identity(daemon.data_dir, PASSPHRASE)
    node = EthereumNode(chain.anvil.url, 31337)
    results, errors = [], []
    start = threading.Barrier(3)

    def export(n: int) -> None:
        start.wait()
        try:
            results.append(
                batches.export(daemon.store, node, identity, tmp_path / f"out{n}", int(time.time()), limit=2)
            )
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=export, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(r.safe_nonce for r in results) == [0, 1, 2]
    ids = [w.id for r in results for w in parse_batch_file(r.path.read_bytes()).batch.withdrawals]
    assert len(ids) == len(set(ids)) == 6


def test_a_released_withdrawal_goes_out_again_only_at_its_own_nonce(tmp_path, chain, cold_setup, chromium):  # noqa: F811
    """Signers refuse a withdrawal at any nonce but the one they signed it at, so the exporter must not move it."""
    daemon, ops, _, cfg, _ = cold_setup
    pw = daemon.passphrase_file
    a, b = daemon.recipients[:2]
    queue_cold(daemon, tmp_path, [("ETH", "7", a)])
    custody("batch", "export", "--out", tmp_path / "n0", *cfg)
    queue_cold(daemon, tmp_path, [("ETH", "8", b)])
    custody("batch", "export", "--out", tmp_path / "n1", *cfg)
    (n0,) = (tmp_path / "n0").glob("*.json")
    (n1,) = (tmp_path / "n1").glob("*.json")
    first, second = (parse_batch_file(f.read_bytes()).batch for f in (n0, n1))
    assert (first.safe_nonce, second.safe_nonce) == (0, 1)
    sign_as(ops[0], n1, tmp_path / "n1.0.json", pw)  # operator 0 has signed b's withdrawal at nonce 1
    for doc in (first, second):
        custody("batch", "cancel", doc.id, "--reason", "new tickets", *cfg[:2])
    custody("batch", "export", "--out", tmp_path / "again0", *cfg)
    (again0,) = (tmp_path / "again0").glob("*.json")
    redo = parse_batch_file(again0.read_bytes()).batch
    assert redo.safe_nonce == 0 and [w.id for w in redo.withdrawals] == [w.id for w in first.withdrawals]
    custody("batch", "export", "--out", tmp_path / "again1", *cfg)
    (again1,) = (tmp_path / "again1").glob("*.json")
    redo1 = parse_batch_file(again1.read_bytes()).batch
    assert redo1.safe_nonce == 1 and [w.id for w in redo1.withdrawals] == [w.id for w in second.withdrawals]
    sign_as(ops[0], again1, tmp_path / "again1.0.json", pw)  # the same nonce: operator 0's ledger agrees

    # the operators' console: each batch's SafeTx hash in full, who has signed and who is missing, by name
    assert "signatures 1 of 2" in custody("batch", "import", tmp_path / "again1.0.json", *cfg).output
    with console_signed_in(daemon.store, chromium) as url:
        chromium.get(f"{url}/batches")
        rows = {r.text.split()[0]: r for r in chromium.find_elements(By.CSS_SELECTOR, "#safe-batches tbody tr")}
        assert set(rows) == {d.id[:8] for d in (first, second, redo, redo1)}
        cells = [c.text for c in rows[redo1.id[:8]].find_elements(By.TAG_NAME, "td")]
        assert cells[1:5] == ["1", "exported", "1", "1/2: op0"] and cells[5] == "op1, op2"
        assert cells[7] == "0x" + redo1.safe_tx_hash.hex() and cells[8] == "-"
        cells = [c.text for c in rows[redo.id[:8]].find_elements(By.TAG_NAME, "td")]
        assert cells[1:6] == ["0", "exported", "1", "0/2: nobody", "op0, op1, op2"]
        assert cells[7] == "0x" + redo.safe_tx_hash.hex()
        assert [c.text for c in rows[first.id[:8]].find_elements(By.TAG_NAME, "td")][2] == "cancelled"
