"""`make demo`: the daemon end to end on the embedded defaults (a SQLite file), driven the way people would:
three operators make keys, the daemon is initialised, two of three admins approve the policy, the exchange
backend gets an API key and submits withdrawals with the Python client, a hot one is paid by the worker, large
ones go out through a cold batch that two of three operators sign on their signers, and the audit log verifies.
Then the same on Bitcoin, on a regtest node of its own: a quorum-signed policy adds BTC, the operators' BIP-48 keys
make a 2-of-3 P2WSH cold wallet, the hot wallet pays small withdrawals in one batched transaction and the large
ones go out as one PSBT that two operators sign offline."""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from pathlib import Path

from demo_bitcoin import BitcoinPolicy, bitcoin_ceremony
from demo_steps import (
    CUSTOMER_WALLET,
    DENIED,
    MAKER,
    OMNIBUS,
    ROOT,
    UNLISTED_WALLET,
    announced_hash,
    daemon,
    export_and_sign,
    operator_pins,
    operator_signs,
    policy_toml,
    propose,
    sh,
    step,
)
from eth_account import Account
from web3 import Web3

from custody.api.client import CustodyAPIError, CustodyClient
from custody.chain.bitcoindev import Regtest
from custody.chain.devnode import FUNDER_KEY, Anvil, deploy_safe_contracts


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir()
    step("A local Ethereum node: anvil from the pinned npm package, on 127.0.0.1")
    with Anvil(block_time=1) as anvil:  # a block a second, so confirmations accrue as on a real chain
        print(f"   {anvil.url}, chain id {anvil.chain_id}")
        run(anvil)


def run(anvil: Anvil) -> None:
    pw = ROOT / "passphrase.txt"
    pw.write_text("demo passphrase, never use in production\n")

    step("Three treasury operators create their keys on their air-gapped signers")
    cards = []
    for name in ("alice", "bob", "carol"):
        ks = ROOT / f"{name}.keystore"
        sh("signer", "key", "new", "--name", name, "--out", ks, "--passphrase-file", pw, "--no-confirm", show=False)
        sh("signer", "key", "card", ks, "--out", ROOT / f"{name}.card.json", show=False)
        cards.append(json.loads((ROOT / f"{name}.card.json").read_text()))
        print(f"   {name:<6} fingerprint {cards[-1]['fingerprint']}  approval key {cards[-1]['approval_key'][:16]}…")

    step("custody init: config, SQLite database, sealed daemon keys, genesis admin set (2 of 3)")
    data = ROOT / "daemon"
    card_args = [a for c in ("alice", "bob", "carol") for a in ("--admin-card", ROOT / f"{c}.card.json")]
    out = sh(
        "custody",
        "init",
        "--data-dir",
        data,
        "--quorum",
        2,
        "--activation-delay",
        "0s",
        "--passphrase-file",
        pw,
        "--rpc-url",
        anvil.url,
        "--chain-id",
        anvil.chain_id,
        *card_args,
    )
    cfg = data / "custody.toml"
    genesis_hash = announced_hash(out, "genesis")
    hot = next(line.split()[-1] for line in out.splitlines() if "hot wallet" in line)
    fund(anvil, hot, 20 * 10**18)
    print(f"   funded the hot wallet {hot} with 20 ETH from anvil's development account")

    step("The exchange backend makes its API key; alice and carol make their keys for reviewing held withdrawals")
    public = sh("custody", "apikey", "keygen", "--out", ROOT / "backend.key", show=False).strip()
    reviewers = {}
    for name in ("alice", "carol"):
        out = sh("custody", "review", "keygen", "--out", ROOT / f"{name}.review.key", show=False)
        reviewers[name] = out.split()[-1]
    print(f"   backend {public[:16]}…, reviewers " + ", ".join(f"{n} {k[:16]}…" for n, k in reviewers.items()))

    step("The treasury proposes a policy; alice and carol review and sign it; the daemon applies it")
    bundle = ROOT / "policy-v1.bundle"
    active_from = propose(lambda t: policy_toml(cards, t, public, reviewers), ROOT / "policy.toml", bundle, cfg)
    sigs = []
    for name in ("alice", "carol"):
        state = ROOT / f"{name}-signer-state"
        operator_pins(name, genesis_hash, "policy", "pin", data / "genesis.json")
        if name == "alice":
            sh("signer", "policy", "review", bundle, "--state", state)
        sigs.append(ROOT / f"policy-v1.{name}.sig")
        operator_signs(name, pw, sigs[-1], "policy", "sign", bundle)
        print(f"   {name} signed")
    sh("custody", "policy", "apply", bundle, *sigs, "--config", cfg)

    step("The cold wallet: a real Safe 1.4.1, 2 of 3 owners (alice, bob, carol)")
    deploy_safe_contracts(anvil)
    print(
        "   anvil gets the Safe 1.4.1 contracts at their canonical addresses, as on every public chain: the Safe\n"
        "   singleton factory deploys the pinned @safe-global/safe-contracts build with salt 0"
    )
    owners = [a for c in ("alice", "bob", "carol") for a in ("--owner", ROOT / f"{c}.card.json")]
    out = sh("custody", "cold", "create", *owners, "--threshold", 2, "--config", cfg, "--passphrase-file", pw)
    cold_wallet = data / "cold-wallet.json"
    safe = json.loads(cold_wallet.read_text())["safe"]
    fund(anvil, safe, 100 * 10**18)
    print(f"   funded the Safe {safe} with 100 ETH")
    cold_hash = announced_hash(out, "file hash")
    for name in ("alice", "carol"):
        state = ROOT / f"{name}-signer-state"
        sh("signer", "policy", "accept", bundle, *sigs, "--state", state, show=False)
        operator_pins(name, cold_hash, "cold", "pin", cold_wallet, "--keystore", ROOT / f"{name}.keystore")
    print(
        "   alice and carol accepted policy v1 and pinned the cold wallet on their signers: each signer derived\n"
        "   the Safe's address from its owners, threshold and the canonical Safe contracts, and each operator\n"
        "   typed the first 8 digits of the file hash they compared"
    )

    step("The exchange backend's API key is registered (the policy declares it as a backend)")
    sh(
        "custody",
        "apikey",
        "add",
        "backend",
        "--public-key",
        public,
        "--scopes",
        "withdraw,read,cancel",
        "--config",
        cfg,
    )

    with daemon(cfg, pw) as url:
        time.sleep(max(0.0, active_from + 1 - time.time()))  # until the whitelist entries are active
        key = (ROOT / "backend.key").read_text().strip()
        run_client(url, key, anvil)
        customer_payouts(url, key, cfg)
        cold_ceremony(url, key, anvil, cfg, pw)

    proof_of_reserves(anvil, cfg, pw)

    step("A local Bitcoin node: bitcoind -regtest (fetched by make), on 127.0.0.1 with a fresh data directory")
    with Regtest() as node:  # stopped on every way out of this block, as anvil is
        version = node.node().call("getnetworkinfo")["subversion"]
        print(f"   {node.url}, {version}")
        bitcoin_ceremony(node, cfg, pw, BitcoinPolicy(cards, active_from, public, reviewers))

    step("Auditors verify the hash-chained audit log")
    sh("custody", "audit", "verify", "--config", cfg)
    sh("custody", "status", "--config", cfg)
    print("\nDemo complete. Everything it made is in ./demo-data (delete it freely).")


def customer_payouts(url: str, private_key: str, cfg: Path) -> None:
    step("Customers: an address-book entry, a payout to it, an unusual one held for two operators, an unlisted one")
    with CustodyClient(url, "backend", private_key) as c:
        entry = c.add_address("cust-42", "ETH", CUSTOMER_WALLET, "Dana's wallet")
        print(f"   cust-42 adds {CUSTOMER_WALLET} to its address book -> {entry['state']} until {entry['active_at']}")
        time.sleep(3)  # the demo policy's 2 s lock
        first = c.create_withdrawal(
            "ETH", "0.5", CUSTOMER_WALLET, idempotency_key=str(uuid.uuid4()), customer="cust-42"
        )
        kind = first["decision"]["destination_kind"]
        print(f"   0.5 ETH to cust-42's entry ({kind}, route {first['decision']['route']}) -> {first['state']}")
        unusual = c.create_withdrawal(
            "ETH", "2.6", CUSTOMER_WALLET, idempotency_key=str(uuid.uuid4()), customer="cust-42"
        )
        why = [
            r["message"] for r in unusual["decision"]["reasons"] if r["rule"].startswith("hold:") and not r["passed"]
        ]
        print(f"   2.6 ETH to the same entry -> {unusual['state']}: {why[0] if why else '?'}")
        if unusual["state"] != "held":
            sys.exit("the unusual withdrawal was not held")
    for name in ("alice", "carol"):
        sh(
            "custody",
            "review",
            "approve",
            unusual["id"],
            "--reason",
            "called the customer back: it is theirs",
            "--key",
            ROOT / f"{name}.review.key",
            "--config",
            cfg,
        )
    with CustodyClient(url, "backend", private_key) as c:
        print(f"   after alice's and carol's approvals -> {c.get_withdrawal(unusual['id'])['state']}")
        unlisted = c.create_withdrawal(
            "ETH", "3", UNLISTED_WALLET, idempotency_key=str(uuid.uuid4()), customer="cust-7"
        )
        kind = unlisted["decision"]["destination_kind"]
        print(f"   3 ETH for cust-7 to {UNLISTED_WALLET} ({kind}) -> {unlisted['state']}")


def cold_ceremony(url: str, private_key: str, anvil: Anvil, cfg: Path, pw: Path) -> None:
    step("Large withdrawals wait in the cold queue; the daemon exports them as one batch file")
    with CustodyClient(url, "backend", private_key) as c:
        c.create_withdrawal("ETH", "3", MAKER, idempotency_key=str(uuid.uuid4()), client_reference="order-1002")
        queued = c.list_withdrawals(state="queued_cold")["items"]
        for w in queued:
            print(f"   {w['amount']} ETH to {w['destination']} -> {w['state']}")
    before = {w["destination"]: Web3(Web3.HTTPProvider(anvil.url)).eth.get_balance(w["destination"]) for w in queued}
    sigs = export_and_sign("batch", pw, ".sig", "--config", cfg, "--passphrase-file", pw)

    step("The signature files come back; at quorum the daemon executes the Safe transaction")
    sh("custody", "batch", "import", sigs[0], "--config", cfg, "--passphrase-file", pw)
    sh("custody", "batch", "import", *sigs, "--config", cfg, "--passphrase-file", pw)
    sh("custody", "batch", "list", "--config", cfg)
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    with CustodyClient(url, "backend", private_key) as c:
        for w in queued:
            now = c.get_withdrawal(w["id"])
            paid = (w3.eth.get_balance(w["destination"]) - before[w["destination"]]) / 10**18
            print(f"   {w['amount']} ETH to {w['destination']} -> {now['state']}; received {paid} ETH")
            if now["state"] != "confirmed":
                sys.exit("the cold withdrawal was not confirmed")


def proof_of_reserves(anvil: Anvil, cfg: Path, pw: Path) -> None:
    step("Proof of reserves: the liabilities tree, reserves at one block, the hot key signs the statement")
    balances = ROOT / "balances.csv"
    balances.write_text("account_id,ETH\n" + "".join(f"customer-{i:03d},0.{i * 37 % 1000:03d}\n" for i in range(200)))
    snap = ROOT / "por"
    sh(
        "custody",
        "por",
        "snapshot",
        "--liabilities",
        balances,
        "--out",
        snap,
        "--decimals",
        "ETH=9",
        "--config",
        cfg,
        "--passphrase-file",
        pw,
    )
    step("alice and carol sign the statement for the Safe (EIP-1271) on their signers; a customer checks their proof")
    sigs = []
    for name in ("alice", "carol"):
        sigs.append(snap / f"{name}.sig")
        operator_signs(name, pw, sigs[-1], "por", "sign", snap / "statement.json")
    sh("custody", "por", "attach", snap / "statement.json", *sigs)
    sh("custody", "por", "proof", "customer-042", "--snapshot", snap, "--out", snap / "customer-042.proof.json")
    sh(
        "custody",
        "por",
        "verify",
        snap / "statement.json",
        "--proof",
        snap / "customer-042.proof.json",
        "--rpc",
        anvil.url,
    )
    print(f"   the report for people: {snap / 'report.html'}")


def fund(anvil: Anvil, address: str, wei: int) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    funder = Account.from_key(FUNDER_KEY)
    tx = {
        "from": funder.address,
        "to": address,
        "value": wei,
        "gas": 100_000,  # a Safe's receive function logs the payment: more than a plain transfer's 21,000
        "chainId": anvil.chain_id,
        "nonce": w3.eth.get_transaction_count(funder.address),
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
    }
    raw = funder.sign_transaction(tx).raw_transaction
    if w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw))["status"] != 1:
        sys.exit(f"funding {address} failed")


def run_client(url: str, private_key: str, anvil: Anvil) -> None:
    step("The backend submits withdrawals with custody.api.client.CustodyClient")
    with CustodyClient(url, "backend", private_key) as c:
        for _ in range(100):  # the worker reads the hot balance first; until then nothing can be routed hot
            if {b["asset"]: b for b in c.balances()["assets"]}["ETH"]["hot"] != "0":
                break
            time.sleep(0.1)
        hot = c.create_withdrawal(
            "ETH", "0.75", OMNIBUS, idempotency_key=str(uuid.uuid4()), client_reference="order-1000"
        )
        print(f"   0.75 ETH to the omnibus (small: route {hot['decision']['route']}) -> {hot['state']}")
        seen = [hot["state"]]
        for _ in range(300):
            state = c.get_withdrawal(hot["id"])["state"]
            if state != seen[-1]:
                seen.append(state)
            if state in ("confirmed", "failed"):
                break
            time.sleep(0.1)
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        held = w3.eth.get_balance(Web3.to_checksum_address(OMNIBUS)) / 10**18
        print(f"   states seen: {' -> '.join(seen)}; the omnibus now holds {held} ETH")
        if seen[-1] != "confirmed":
            sys.exit("the hot withdrawal was not confirmed")
        rows = []
        key = str(uuid.uuid4())
        w = c.create_withdrawal("ETH", "2.5", OMNIBUS, idempotency_key=key, client_reference="order-1001")
        rows.append(("2.5 ETH (over the hot limit)", w))
        retry = c.create_withdrawal("ETH", "2.5", OMNIBUS, idempotency_key=key, client_reference="order-1001")
        print(f"   retry with the same Idempotency-Key -> same withdrawal: {retry['id'] == w['id']}")
        rows.append(
            ("60 ETH (large: delayed 1 h)", c.create_withdrawal("ETH", "60", MAKER, idempotency_key=str(uuid.uuid4())))
        )
        rows.append(
            ("1 ETH to a denied address", c.create_withdrawal("ETH", "1", DENIED, idempotency_key=str(uuid.uuid4())))
        )
        cancelled = c.cancel_withdrawal(rows[1][1]["id"])
        for label, row in rows:
            failed = [r["message"] for r in row["decision"]["reasons"] if not r["passed"]]
            print(
                f"   {label:<30} -> {row['state']:<12} route {row['decision']['route'] or '-':<5}"
                f"{'  because ' + failed[0] if failed else ''}"
            )
        print(f"   cancelled the delayed one -> {cancelled['state']}")
        try:
            c.create_withdrawal("ETH", "0.1", OMNIBUS.lower(), idempotency_key=str(uuid.uuid4()))
        except CustodyAPIError as exc:
            print(f"   an address without its EIP-55 checksum is refused: {exc.status} {exc.code}")
        page = c.list_withdrawals()
        print(
            f"   the backend lists {len(page['items'])} withdrawals: "
            + ", ".join(sorted({w["state"] for w in page["items"]}))
        )


if __name__ == "__main__":
    main()
