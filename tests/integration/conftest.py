"""A real anvil node, a real ERC-20 compiled from source and deployed on it, and a daemon whose hot wallet
is funded there."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from nacl.signing import SigningKey
from sqlalchemy import select
from web3 import Web3

from custody.api.client import CustodyClient
from custody.chain.devnode import FUNDER_KEY, Anvil, compile_contract, deploy_safe_contracts
from custody.chain.ethereum import EthereumNode
from custody.clock import SystemClock
from custody.config import render_config
from custody.keys import create_daemon_keys, load_hot_account
from custody.loops.worker import Worker, WorkerSettings
from custody.store.db import Store
from custody.store.models import PolicyBundleRow
from policies.model import AssetRule, Policy, WhitelistEntry, Window
from tests.cli_helpers import custody, signer
from tests.conftest import DAY, apply_policy, governance_for_tests, running_server

ETH = 10**18
TOKEN_SOURCE = Path(__file__).parent.parent / "contracts" / "TestToken.sol"
PASSPHRASE = "integration passphrase"


@pytest.fixture(scope="session")
def token_artifact() -> dict:
    return compile_contract(TOKEN_SOURCE, "TestToken")


@dataclass
class Chain:
    anvil: Anvil
    w3: Web3
    token: object  # a web3 contract

    def eth_balance(self, address: str) -> int:
        return self.w3.eth.get_balance(address)

    def token_balance(self, address: str) -> int:
        return self.token.functions.balanceOf(address).call()

    def send(self, tx: dict) -> None:
        funder = Account.from_key(FUNDER_KEY)
        tx = {
            "from": funder.address,
            "nonce": self.w3.eth.get_transaction_count(funder.address, "pending"),
            "chainId": 31337,
            "gas": 100_000,
            "maxFeePerGas": 50 * 10**9,
            "maxPriorityFeePerGas": 10**9,
            **tx,
        }
        raw = funder.sign_transaction(tx).raw_transaction
        receipt = self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_raw_transaction(raw), timeout=30)
        assert receipt["status"] == 1


def deploy_token(anvil: Anvil, artifact: dict) -> Chain:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    funder = Account.from_key(FUNDER_KEY)
    contract = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = contract.constructor("Test Token", "TOK", 6, 10**15).build_transaction(
        {"from": funder.address, "nonce": w3.eth.get_transaction_count(funder.address), "chainId": 31337}
    )
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(funder.sign_transaction(tx).raw_transaction), timeout=30
    )
    return Chain(anvil, w3, w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"]))


@pytest.fixture
def chain(token_artifact):
    with Anvil(block_time=None) as anvil:
        yield deploy_token(anvil, token_artifact)


def recipients(n: int, salt: str = "r") -> list[str]:
    return [Account.from_key(Web3.keccak(text=f"{salt}{i}")).address for i in range(n)]


def chain_policy(
    token: str,
    whitelist: list[str],
    now: int,
    eth_band: tuple[int, int] | None = None,
    eth_auto_freeze: Window | None = None,
) -> Policy:
    entries = {a: WhitelistEntry(a, ("ETH", "TOK"), f"recipient {i}", now - DAY) for i, a in enumerate(whitelist)}
    return Policy(
        governance=governance_for_tests(),
        assets={
            "ETH": AssetRule(
                "ETH",
                True,
                18,
                100 * ETH,
                5 * ETH,
                (Window(DAY, 10_000 * ETH),),
                hot_min=eth_band[0] if eth_band else None,
                hot_max=eth_band[1] if eth_band else None,
                auto_freeze=eth_auto_freeze,
            ),
            "TOK": AssetRule("TOK", True, 6, 10**12, 10**10, (Window(DAY, 10**14),), contract=token),
        },
        whitelist=entries,
    )


_STORES: list[Store] = []


@pytest.fixture(autouse=True)
def _dispose_stores():
    """Close every daemon store a test made, so no database connection outlives its test."""
    yield
    while _STORES:
        _STORES.pop().dispose()


@dataclass
class HotDaemon:
    data_dir: Path
    config: Path
    passphrase_file: Path
    store: Store
    hot: str
    recipients: list[str]
    client_key: object

    def worker(self, chain: Chain, *, confirmations: int = 1, stuck_after: int = 120) -> Worker:
        account = load_hot_account(self.data_dir, PASSPHRASE)
        return Worker(
            self.store,
            EthereumNode(chain.anvil.url, 31337),
            account,
            WorkerSettings(31337, confirmations, 200 * 10**9, stuck_after),
            SystemClock(),
        )


def make_daemon(
    tmp_path: Path,
    db_url: str,
    chain: Chain,
    n_recipients: int = 10,
    *,
    confirmations: int = 1,
    stuck_after: int = 120,
    fund_eth: int = 500 * ETH,
    fund_tok: int = 10**13,
    eth_band: tuple[int, int] | None = None,
    eth_auto_freeze: Window | None = None,
    edit_policy: Callable[[Policy, str], Policy] | None = None,
) -> HotDaemon:
    """``edit_policy(policy, client_public_key_hex)`` changes the policy before it is applied (for example to
    declare the client's key as a backend)."""
    from tests.conftest import add_client

    client_key = SigningKey.generate()

    data = tmp_path / "data"
    data.mkdir()
    pw = tmp_path / "pass.txt"
    pw.write_text(PASSPHRASE + "\n")
    _, hot = create_daemon_keys(data, PASSPHRASE, n=2**15)
    config = data / "custody.toml"
    text = render_config(data, db_url, rpc_url=chain.anvil.url, chain_id=31337, confirmations=confirmations)
    config.write_text(text.replace("stuck_after_seconds = 120", f"stuck_after_seconds = {stuck_after}"))
    store = Store(db_url)
    _STORES.append(store)
    store.migrate()
    now = int(time.time())
    people = recipients(n_recipients)
    policy = chain_policy(chain.token.address, people, now, eth_band, eth_auto_freeze)
    if edit_policy is not None:
        policy = edit_policy(policy, client_key.verify_key.encode().hex())
    apply_policy(store, policy, now)
    assert hot == load_hot_account(data, PASSPHRASE).address
    chain.send({"to": hot, "value": fund_eth})
    chain.send({"to": chain.token.address, "data": chain.token.encode_abi("transfer", [hot, fund_tok])})
    return HotDaemon(data, config, pw, store, hot, people, add_client(store, key=client_key))


# -- the cold wallet: three operators, a 2-of-3 Safe on anvil, funded -------------------------------------
@dataclass
class Operator:
    keystore: Path
    card: Path
    state: Path
    address: str


def operators(tmp_path: Path, pw: Path, n: int) -> list[Operator]:
    people = []
    for i in range(n):
        ks, card, state = tmp_path / f"op{i}.keystore", tmp_path / f"op{i}.card", tmp_path / f"op{i}-state"
        signer("key", "new", "--name", f"op{i}", "--out", ks, "--passphrase-file", pw, "--no-confirm", "--state", state)
        signer("key", "card", ks, "--out", card)
        people.append(Operator(ks, card, state, json.loads(card.read_text())["owner_address"]))
    return people


def prepare_signer(op: Operator, daemon, tmp_path: Path, wallet: Path | None = None) -> None:
    """What an operator does once per deployment: pin the genesis and the cold wallet (by default the Safe's
    ``cold-wallet.json``; a Bitcoin test names its wallet file), accept the policy."""
    with daemon.store.read() as s:
        rows = {r.version: r for r in s.execute(select(PolicyBundleRow)).scalars()}
    genesis, bundle = tmp_path / "genesis.json", tmp_path / "bundle-1.json"
    genesis.write_bytes(rows[0].raw)
    bundle.write_bytes(rows[1].raw)
    sigs = []
    for i, line in enumerate(rows[1].signatures.splitlines()):
        path = tmp_path / f"bundle-1.sig{i}"
        path.write_text(line)
        sigs.append(path)
    signer("policy", "pin", genesis, "--yes", "--state", op.state)
    signer("policy", "accept", bundle, *sigs, "--state", op.state)
    wallet = daemon.data_dir / "cold-wallet.json" if wallet is None else wallet
    signer("cold", "pin", wallet, "--keystore", op.keystore, "--yes", "--state", op.state)


@pytest.fixture
def cold_setup(tmp_path, db_url, chain):
    return make_cold(tmp_path, db_url, chain)


def make_cold(tmp_path, db_url, chain, edit_policy: Callable[[Policy, str], Policy] | None = None):
    """A daemon with a funded 2-of-3 Safe whose three operators pinned it and accepted the policy."""
    daemon = make_daemon(tmp_path, db_url, chain, n_recipients=50, edit_policy=edit_policy)
    contracts = deploy_safe_contracts(chain.anvil)
    ops = operators(tmp_path, daemon.passphrase_file, 3)
    cards = [x for op in ops for x in ("--owner", op.card)]
    cfg = ("--config", daemon.config, "--passphrase-file", daemon.passphrase_file)
    out = custody("cold", "create", *cards, "--threshold", 2, *cfg).output
    wallet = json.loads((daemon.data_dir / "cold-wallet.json").read_text())
    assert wallet["safe"] in out and wallet["threshold"] == 2 and wallet["owners"] == [o.address for o in ops]
    for op in ops:
        prepare_signer(op, daemon, tmp_path)
    safe = wallet["safe"]
    chain.send({"to": safe, "value": 1000 * ETH})
    chain.send({"to": chain.token.address, "data": chain.token.encode_abi("transfer", [safe, 10**14])})
    return daemon, ops, safe, cfg, contracts


def queue_cold(daemon, tmp_path, amounts: list[tuple[str, str, str]]) -> None:
    with (
        running_server(daemon.store, tmp_path) as srv,
        CustodyClient(srv.url, daemon.client_key.name, daemon.client_key.key) as client,
    ):
        for asset, amount, recipient in amounts:
            w = client.create_withdrawal(asset, amount, recipient, idempotency_key=str(uuid.uuid4()))
            assert w["state"] == "queued_cold", w


def sign_as(op: Operator, batch_file: Path, out: Path, pw: Path) -> None:
    signer("review", batch_file, "--state", op.state)
    signer(
        "sign",
        batch_file,
        "--keystore",
        op.keystore,
        "--out",
        out,
        "--yes",
        "--passphrase-file",
        pw,
        "--state",
        op.state,
    )
