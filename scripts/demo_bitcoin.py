"""The Bitcoin part of `make demo` (scripts/demo.py), on a regtest node of its own: a quorum-signed policy
version adds BTC, the operators' BIP-48 keys make a 2-of-3 P2WSH cold wallet, the hot wallet pays small
withdrawals in one batched transaction, and the large ones go out as one PSBT that two operators sign offline."""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from demo_steps import (
    ROOT,
    announced_hash,
    daemon,
    export_and_sign,
    operator_pins,
    operator_signs,
    policy_toml,
    propose,
    sh,
    step,
    toml_time,
)

from custody.api.client import CustodyClient
from custody.chain.bitcoindev import Regtest


@dataclass(frozen=True)
class BitcoinPolicy:
    """What the second policy version keeps from the first: its admins, backend, reviewers and ETH whitelist."""

    cards: list[dict[str, str]]
    active_from: int
    backend: str
    reviewers: dict[str, str]


BTC_RECEIVERS = ("BTC omnibus", "BTC market maker", "OTC desk")
# (amount, receiver): at or below the policy's hot_limit of 0.5 BTC the hot wallet pays, above it the cold wallet
BTC_WITHDRAWALS = [("0.1", 0), ("3", 0), ("0.25", 1), ("1.5", 1), ("0.4", 2), ("12.5", 2), ("0.05", 0)]


def bitcoin_toml(receivers: list[str], active_from: int) -> str:
    when = toml_time(active_from)
    entries = "".join(
        f'\n[[whitelist]]\naddress = "{a}"\nassets = ["BTC"]\nlabel = "{label}"\nactive_from = {when}\n'
        for a, label in zip(receivers, BTC_RECEIVERS, strict=True)
    )
    return f"""
[assets.BTC]
chain = "bitcoin"
network = "regtest"
decimals = 8
max_per_transfer = "20"
hot_limit = "0.5"          # paid by the hot wallet at or below this, by a cold ceremony above it
max_fee = "0.002"
max_fee_rate = 200
windows = [{{ period = "24h", limit = "100" }}]
{entries}"""


def bitcoin_ceremony(node: Regtest, cfg: Path, pw: Path, v1: BitcoinPolicy) -> None:
    data = cfg.parent
    step("The operator points the daemon at the node: [bitcoin] rpc_url, rpc_user, rpc_password in custody.toml")
    head, sep, tail = cfg.read_text().partition("[bitcoin]\n")
    for key, value in (("rpc_url", node.url), ("rpc_user", node.user), ("rpc_password", node.password)):
        tail = tail.replace(f'{key} = ""', f"{key} = {json.dumps(value)}", 1)
    cfg.write_text(head + sep + tail)
    print(f"   {cfg}: rpc_url = {node.url}, confirmations = 3")

    step("The operators' cards carry their Bitcoin keys: BIP-48 multisig accounts (m/48h/1h/0h/2h on regtest)")
    for card in v1.cards:  # made by this version of `signer key card`: no --add-bitcoin needed
        print(f"   {card['name']:<6} fingerprint {card['fingerprint']}  {card['bitcoin_tpub'][:32]}…")

    step("Policy v2 adds BTC on regtest and three whitelisted receivers; alice and carol review and sign it")
    node.node().call("createwallet", "customers")  # the receivers' own wallet, to read what reached them
    customers = node.node("customers")
    receivers = [str(customers.call("getnewaddress", label, "bech32")) for label in BTC_RECEIVERS]
    bundle = ROOT / "policy-v2.bundle"
    active_from = propose(
        lambda t: policy_toml(v1.cards, v1.active_from, v1.backend, v1.reviewers, bitcoin_toml(receivers, t)),
        ROOT / "policy-v2.toml",
        bundle,
        cfg,
    )
    sigs = []
    for name in ("alice", "carol"):
        if name == "alice":
            sh("signer", "policy", "review", bundle, "--state", ROOT / f"{name}-signer-state")
        sigs.append(ROOT / f"policy-v2.{name}.sig")
        operator_signs(name, pw, sigs[-1], "policy", "sign", bundle)
    sh("custody", "policy", "apply", bundle, *sigs, "--config", cfg)

    step("custody cold create --chain bitcoin: the 2-of-3 P2WSH descriptor, watched (watch-only) by the node")
    owners = [a for c in ("alice", "bob", "carol") for a in ("--owner", ROOT / f"{c}.card.json")]
    bitcoin = ("--chain", "bitcoin", "--network", "regtest")
    out = sh("custody", "cold", "create", *bitcoin, *owners, "--threshold", 2, "--config", cfg, "--passphrase-file", pw)
    wallet = data / "btc-cold-wallet-regtest.json"
    for name in ("alice", "carol"):
        state = ROOT / f"{name}-signer-state"
        sh("signer", "policy", "accept", bundle, *sigs, "--state", state, show=False)
        keystore = ROOT / f"{name}.keystore"
        operator_pins(name, announced_hash(out, "file hash"), "cold", "pin", wallet, "--keystore", keystore)
    print(
        "   alice and carol accepted policy v2 and pinned the wallet: each signer rebuilt the descriptor from the\n"
        "   owners' keys and the threshold, and each operator typed the first 8 digits of the file hash"
    )

    step("Funding: a block mined to the cold wallet's address, matured by 100 more")
    cold_address = sh("custody", "cold", "address", "--network", "regtest", "--config", cfg, show=False).strip()
    node.mine(1, cold_address)
    node.faucet()  # the node's own wallet: 101 blocks mined to it, which also mature the cold wallet's coin
    print(f"   the cold wallet received a 50 BTC block reward at {cold_address}")

    with daemon(cfg, pw) as url:
        bitcoin_payouts(node, url, cfg, pw, receivers, active_from)


def bitcoin_payouts(node: Regtest, url: str, cfg: Path, pw: Path, receivers: list[str], active_from: int) -> None:
    step("The hot wallet's Bitcoin account (BIP-84): custody status shows where to fund it")
    for _ in range(100):  # the worker registers the account with the node on its first pass
        shown = sh("custody", "status", "--config", cfg, show=False).splitlines()
        line = next((x for x in shown if "fund at" in x), "")
        if line:
            break
        time.sleep(0.2)
    else:
        sys.exit("the worker did not register the Bitcoin hot wallet")
    hot = line.split("fund at ")[1].split(",")[0]
    print(f"   {line.strip()}")
    node.faucet().call("sendtoaddress", hot, Decimal(2))
    print(f"   the treasury sent 2 BTC to {hot} (in the mempool: the hot wallet spends confirmed coins only)")
    key = (ROOT / "backend.key").read_text().strip()
    with CustodyClient(url, "backend", key) as c:
        for _ in range(100):  # the worker reads the hot balance (unconfirmed coins count as incoming)
            if Decimal({b["asset"]: b for b in c.balances()["assets"]}["BTC"]["hot"]) > 0:
                break
            time.sleep(0.1)
        else:
            sys.exit("the worker did not read the Bitcoin hot balance")

        step("The backend submits BTC withdrawals: at most 0.5 BTC to the hot wallet, larger ones to the cold queue")
        time.sleep(max(0.0, active_from + 1 - time.time()))  # until the receivers' whitelist entries are active
        made = []
        for amount, to in BTC_WITHDRAWALS:
            w = c.create_withdrawal("BTC", amount, receivers[to], idempotency_key=str(uuid.uuid4()))
            made.append(w)
            print(f"   {amount:>5} BTC to {BTC_RECEIVERS[to]:<16} -> {w['state']}")
        hot_ids = [w["id"] for w in made if w["state"] == "queued_hot"]
        if len(hot_ids) != 4 or sum(w["state"] == "queued_cold" for w in made) != 3:
            sys.exit("the BTC withdrawals were not routed by the hot limit")

        step("A block confirms the hot wallet's coin; the worker pays the 4 hot withdrawals in one transaction")
        node.mine(1)
        wait_for(c, hot_ids, ("broadcast", "confirmed"))
        for txid in node.node().call("getrawmempool"):  # the node is the demo's own: only the hot payment waits
            tx = node.node().call("getrawtransaction", txid, 1)
            print(f"   in the mempool: {txid}, {len(tx['vin'])} input(s), {len(tx['vout'])} outputs")

    step("custody batch export --chain bitcoin: one PSBT paying the 3 cold withdrawals, change to the cold wallet")
    cfg_args = ("--config", cfg, "--passphrase-file", pw)
    sigs = export_and_sign("PSBT batch", pw, ".sig.json", "--chain", "bitcoin", *cfg_args)

    step("custody batch import: at 2 of 2 the daemon finalizes the PSBT and broadcasts; blocks are mined")
    sh("custody", "batch", "import", *sigs, "--wait", 0, *cfg_args)
    node.mine(3)  # [bitcoin] confirmations = 3: the hot payment and the cold batch both settle
    with CustodyClient(url, "backend", key) as c:
        done = {w["id"]: w for w in wait_for(c, [w["id"] for w in made], ("confirmed",))}
    for route, ids in (("hot", hot_ids), ("cold", [i for i in done if i not in hot_ids])):
        txids = {done[i]["tx_hash"] for i in ids}
        if len(txids) != 1:
            sys.exit(f"the {route} BTC withdrawals were paid by {len(txids)} transactions, not one")
        print(f"   {len(ids)} {route} withdrawals confirmed, all paid by {txids.pop()}")
    check_received(node, receivers)


def wait_for(c: CustodyClient, ids: list[str], states: tuple[str, ...], limit: float = 120) -> list[dict[str, object]]:
    deadline = time.monotonic() + limit
    while True:
        now = [c.get_withdrawal(i) for i in ids]
        if all(w["state"] in states for w in now):
            return now
        if time.monotonic() > deadline:
            sys.exit("BTC withdrawals stuck: " + ", ".join(f"{w['id']} {w['state']}" for w in now))
        time.sleep(0.2)


def check_received(node: Regtest, receivers: list[str]) -> None:
    """Each receiver holds exactly what its withdrawals sent it, to the satoshi; the demo fails otherwise."""
    node.node().call("syncwithvalidationinterfacequeue")  # the receivers' wallet has seen the blocks
    customers = node.node("customers")
    wrong = False
    for i, (address, label) in enumerate(zip(receivers, BTC_RECEIVERS, strict=True)):
        expected = sum((Decimal(a) for a, to in BTC_WITHDRAWALS if to == i), Decimal(0))
        got = Decimal(str(customers.call("getreceivedbyaddress", address)))
        wrong = wrong or got != expected
        verdict = "ok" if got == expected else "MISMATCH"
        print(f"   {label:<16} {address}: received {got} BTC, withdrawn {expected} BTC, {verdict}")
    if wrong:
        sys.exit("a receiver's Bitcoin balance differs from its withdrawals")
