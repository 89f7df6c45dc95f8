"""The signer imports no network or database library, and works with sockets made impossible."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

from eth_account import Account  # the parent builds the online side's files; the signer runs in a child
from nacl.signing import SigningKey

from policies.bundle import genesis_bytes, make_bundle, parse_genesis, sign_bundle
from policies.loader import load_policy_toml
from signer.batchfile import Batch, BatchWithdrawal, parse_signature_file, write_batch_file
from signer.coldwallet import ColdWallet
from signer.keystore import load_keystore
from signer.review import assemble
from signer.safecontracts import MULTISEND_CALL_ONLY, safe_address
from signer.safetx import recover_owner
from tests.cli_helpers import signer
from tests.conftest import ADMINS, DAY, MAKER, OMNIBUS, governance_for_tests, policy_toml

BANNED = {
    "web3",
    "sqlalchemy",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "requests",
    "aiohttp",
    "urllib3",
    "psycopg",
}

# Runs each argument list through the signer CLI in a fresh interpreter in which creating, connecting or
# binding any socket raises (an audit hook sees every route to a socket, whatever name it was imported by).
OFFLINE = textwrap.dedent("""
    import json, sys
    def refuse(event, args):
        if event in ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo"):
            raise RuntimeError(f"the signer tried to use the network: {event}")
    sys.addaudithook(refuse)
    from click.testing import CliRunner
    from signer.cli import main
    for args in json.loads(sys.argv[1]):
        r = CliRunner().invoke(main, args, catch_exceptions=False)
        print(r.output)
        assert r.exit_code == 0, (args, r.output)
    print("offline ok")
""")


def offline(*commands: list[object]) -> str:
    argv = json.dumps([[str(a) for a in command] for command in commands])
    out = subprocess.run([sys.executable, "-c", OFFLINE, argv], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.rstrip().endswith("offline ok"), out.stdout + out.stderr
    return out.stdout


def test_signer_cli_imports_no_network_or_database_library():
    code = "import sys, signer.cli; print(','.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(out.strip().split(","))
    assert not (loaded & BANNED), loaded & BANNED


def test_the_offline_guard_really_refuses_sockets(tmp_path):
    probe = OFFLINE.replace("from click.testing", "import socket; socket.socket()\nfrom click.testing")
    out = subprocess.run([sys.executable, "-c", probe, "[]"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "tried to use the network: socket.__new__" in out.stderr


def ceremony(tmp_path: Path) -> tuple[Path, Path, Path, Batch]:
    """A new key made offline, and the files the online side hands over for it: genesis, policy bundle with
    a quorum of signatures, the cold wallet it owns, and a batch. Returns (passphrase file, keystore, state,
    batch)."""
    pw, ks, card, state = tmp_path / "pw", tmp_path / "op.keystore", tmp_path / "op.card", tmp_path / "state"
    pw.write_text("pass phrase\n")
    offline(
        ["key", "new", "--name", "op", "--out", ks, "--passphrase-file", pw, "--no-confirm", "--state", state],
        ["key", "card", ks, "--out", card],
    )
    owner = json.loads(card.read_text())["owner_address"]

    # what the online side hands over, as files
    now = int(time.time())
    genesis_raw = genesis_bytes(governance_for_tests(), now - 4 * DAY)
    bundle = make_bundle(load_policy_toml(policy_toml(now)), parse_genesis(genesis_raw), now - 3 * DAY)
    daemon = SigningKey(bytes([9]) * 32)
    owners = (owner, Account.create().address)
    cold = ColdWallet(
        chain_id=31337,
        safe=safe_address(owners, 2, 0),
        owners=owners,
        threshold=2,
        multisend=MULTISEND_CALL_ONLY,
        daemon_key=daemon.verify_key.encode().hex(),
    )
    batch = assemble(
        batch_id=str(uuid.uuid4()),
        chain_id=cold.chain_id,
        safe=cold.safe,
        safe_nonce=0,
        multisend=cold.multisend,
        policy_version=bundle.version,
        policy_hash=bundle.hash,
        created_at=now,
        expires_at=now + DAY,
        withdrawals=[
            BatchWithdrawal(str(uuid.uuid4()), "ETH", 12 * 10**18, 18, None, OMNIBUS, "omnibus"),
            BatchWithdrawal(str(uuid.uuid4()), "ETH", 3 * 10**18, 18, None, MAKER, "maker"),
        ],
        policy=bundle.policy,
    )
    files = {
        "genesis.json": genesis_raw,
        "bundle.json": bundle.raw,
        "bundle.sig0": sign_bundle(bundle.hash, ADMINS[0]).to_bytes(),
        "bundle.sig1": sign_bundle(bundle.hash, ADMINS[1]).to_bytes(),
        "cold-wallet.json": cold.to_bytes(),
        "batch.json": write_batch_file(batch, daemon),
    }
    for name, raw in files.items():
        (tmp_path / name).write_bytes(raw)

    offline(
        ["policy", "pin", tmp_path / "genesis.json", "--yes", "--state", state],
        [
            "policy",
            "accept",
            tmp_path / "bundle.json",
            tmp_path / "bundle.sig0",
            tmp_path / "bundle.sig1",
            "--state",
            state,
        ],
        ["cold", "pin", tmp_path / "cold-wallet.json", "--keystore", ks, "--yes", "--state", state],
    )
    return pw, ks, state, batch


def test_key_new_review_and_sign_a_batch_with_sockets_disabled(tmp_path: Path):
    """A whole ceremony on the air-gapped side: make a key, pin genesis, accept the policy, pin the cold
    wallet, review a batch and sign it, with no socket possible at any point."""
    pw, ks, state, batch = ceremony(tmp_path)
    owner = load_keystore(ks.read_bytes()).card.owner_address
    sig = tmp_path / "batch.sig"
    out = offline(
        ["review", tmp_path / "batch.json", "--state", state],
        [
            "sign",
            tmp_path / "batch.json",
            "--keystore",
            ks,
            "--out",
            sig,
            "--yes",
            "--passphrase-file",
            pw,
            "--state",
            state,
        ],
    )
    assert "0x" + batch.safe_tx_hash.hex() in out and "15 " in out  # the hash and the ETH total were shown
    signature = parse_signature_file(sig.read_bytes())
    assert signature.safe_tx_hash == batch.safe_tx_hash
    assert recover_owner(batch.safe_tx_hash, signature.signature) == owner
    actions = [json.loads(line) for line in (state / "transcript.log").read_text().splitlines()]
    assert actions[-1]["action"] == "batch-sign" and actions[-1]["subject"] == batch.id
    assert actions[-1]["decision"] == "signed" and actions[-1]["hash"] == "0x" + batch.safe_tx_hash.hex()


def test_signing_asks_for_the_start_of_the_hash_and_signs_nothing_on_a_mismatch(tmp_path: Path):
    pw, ks, state, batch = ceremony(tmp_path)
    sig = tmp_path / "batch.sig"
    args = ("sign", tmp_path / "batch.json", "--keystore", ks, "--out", sig, "--passphrase-file", pw, "--state", state)
    result = signer(*args, ok=False, stdin="deadbeef\n")
    assert result.exit_code == 1 and "nothing was signed" in result.output and not sig.exists()
    last = json.loads((state / "transcript.log").read_text().splitlines()[-1])
    assert (last["action"], last["decision"]) == ("batch-sign", "declined")
    result = signer(*args, stdin=batch.safe_tx_hash.hex()[:8] + "\n")
    assert "signed 0x" in result.output and parse_signature_file(sig.read_bytes()).safe_tx_hash == batch.safe_tx_hash
