"""``custody por snapshot``: liabilities tree, reserves at one block, the statement, the hot wallet's proof of
control, per-account proofs and the report, all in one new directory, with the active policy bundle the
statement cites (``policy.json``, for ``custody por verify --policy``).

A Bitcoin asset of the policy is counted from the Bitcoin wallets' coins at one Bitcoin block
(``custody.por.btcreserves``), beside the Ethereum block: the statement is then format 4, with each Bitcoin
wallet's BIP-127 reserve PSBT (the hot one signed here, the cold one also written as ``btc-cold-reserve.psbt``
for its owners).

Nothing is written until the liabilities file has been read whole without a mistake; a failure after that
removes the directory again, so there is never half a snapshot.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi.exceptions import DecodingError
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from sqlalchemy import select

from custody.chain import safe as safe_contract
from custody.chain.ethereum import EthereumNode
from custody.errors import CallReverted, ConfigError, LiabilitiesInvalid, NoActivePolicy, ProofInvalid
from custody.ledger import audit
from custody.ledger.policy import head
from custody.por import btcreserves
from custody.por.btcreserves import BitcoinSource
from custody.por.liabilities import read_liabilities
from custody.por.proofs import ENTRY, ProofsFile
from custody.por.report import write_report
from custody.por.shards import entry_digests
from custody.por.split import split
from custody.por.tree import Accounts, Hashing, build, free_shared, sums_width
from custody.store.db import Store
from custody.store.models import ColdWallet
from policies.chains import BITCOIN, ETHEREUM
from policies.model import AssetRule
from signer.porstatement import (
    Signed,
    Statement,
    check_claims,
    check_safe_signature,
    coverage,
    parse_signature_file,
    parse_statement,
    reserves_in_snapshot_units,
)

STATEMENT, PROOFS, REPORT, POLICY = "statement.json", "proofs.bin", "report.html", "policy.json"


def snapshot(
    store: Store,
    node: EthereumNode,
    hot: LocalAccount,
    liabilities: Path,
    out_dir: Path,
    now: int,
    *,
    block: int | None = None,
    decimals: dict[str, int] | None = None,
    only: tuple[str, ...] | None = None,
    workers: int = 2,
    progress: Callable[[str], None] = lambda _: None,
    bitcoin: BitcoinSource | None = None,
) -> Statement:
    """``bitcoin`` (the node and the hot seed's Bitcoin keys) is needed when a covered asset is on Bitcoin.
    ``only`` narrows the assets the snapshot covers (by default every asset of the policy): the liabilities
    file must have a column for each covered asset and no other, so an asset is never left out unsaid."""
    with store.read() as s:
        _, bundle = head(s)
        cold = s.execute(select(ColdWallet).limit(1)).scalar_one_or_none()
    if bundle is None:
        raise NoActivePolicy("no policy bundle has been applied yet: the statement's assets come from the policy")
    policy = bundle.policy
    places = {symbol: rule.decimals for symbol, rule in policy.assets.items()}
    for symbol, d in (decimals or {}).items():
        if symbol not in places:
            raise ConfigError(f"--decimals names {symbol}, which is not an asset of the policy")
        if not 0 <= d <= places[symbol]:
            raise ConfigError(f"--decimals {symbol}={d}: must be between 0 and its {places[symbol]} on-chain decimals")
        places[symbol] = d
    covered = list(places) if only is None else list(dict.fromkeys(only))
    for symbol in covered:
        if symbol not in places:
            raise ConfigError(f"--assets names {symbol}, which is not an asset of the policy")
    on_bitcoin = [symbol for symbol in covered if policy.assets[symbol].chain == BITCOIN]
    elsewhere = [symbol for symbol in covered if policy.assets[symbol].chain not in (ETHEREUM, BITCOIN)]
    if elsewhere or len(on_bitcoin) > 1:  # a statement must not count one chain's coins as another's
        ethereum = ",".join(s for s in places if policy.assets[s].chain == ETHEREUM)
        raise ConfigError(
            f"proof of reserves covers Ethereum assets and one Bitcoin asset, not {', '.join(elsewhere or on_bitcoin)};"
            f" to prove the others, pass --assets {ethereum} and a liabilities file with only their columns"
        )
    if on_bitcoin and bitcoin is None:
        raise ConfigError(
            f"{on_bitcoin[0]} is a Bitcoin asset: the snapshot needs the Bitcoin node ([bitcoin] rpc_url), or leave "
            "it out with --assets"
        )
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} is not empty: a snapshot goes into a new directory")
    snapshot_id = os.urandom(32)
    progress(f"reading {liabilities}")
    assets, accounts = read_liabilities(liabilities, places, snapshot_id)
    check_covered(liabilities, assets, covered)
    number = node.block_number() if block is None else block
    block_hash = node.block_hash(number)
    if block_hash is None:
        raise ProofInvalid(f"the node has no block {number}")
    safe = None if cold is None else _safe_at(node, cold.address, number)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        tree = build_liabilities(accounts, assets, out_dir / PROOFS, workers=workers, progress=progress)
        progress(f"reading every custody wallet at block {number}")
        held = [a for a in assets if a not in on_bitcoin]
        wallets = [_wallet(node, hot.address, "hot", [hot.address], 1, held, policy.assets, number)]
        if cold is not None and safe is not None:
            owners, threshold = safe
            wallets.append(_wallet(node, cold.address, "safe", owners, threshold, held, policy.assets, number))
        onchain = {a: sum(int(w["balances"][a]) for w in wallets) for a in held}
        coins = None
        if on_bitcoin and bitcoin is not None:
            network = policy.assets[on_bitcoin[0]].network or ""
            progress(f"reading the Bitcoin wallets' coins on {network}")
            coins = btcreserves.read_reserves(store, bitcoin.node, network)
            onchain[on_bitcoin[0]] = sum(w.balance for w in coins.wallets)
        reserves = {a: reserves_in_snapshot_units(onchain[a], policy.assets[a].decimals, places[a]) for a in assets}
        claims = {
            "snapshot_id": snapshot_id.hex(),
            "created_at": now,
            "chain_id": node.chain_id,
            "block": {"number": number, "hash": block_hash},
            "policy_hash": bundle.hash,
            "assets": [
                {
                    "symbol": a,
                    "decimals": places[a],
                    "chain_decimals": policy.assets[a].decimals,
                    "contract": policy.assets[a].contract,
                }
                for a in assets
            ],
            "liabilities": {
                "root": tree.root.hex(),
                "height": tree.height,
                "accounts": accounts.count,
                "leaves": tree.leaves,
                "totals": {a: str(t) for a, t in zip(assets, tree.totals, strict=True)},
            },
            "wallets": wallets,
            "reserves": {a: str(v) for a, v in reserves.items()},
            "coverage": {a: coverage(reserves[a], tree.totals[i]) for i, a in enumerate(assets)},
        }
        if coins is not None:
            claims["bitcoin"] = coins.claims(on_bitcoin[0])
        check_claims(claims)
        statement = Statement(claims)
        signature = bytes(Account.sign_message(encode_defunct(primitive=statement.hash), hot.key).signature)
        psbts = (
            ()
            if coins is None or bitcoin is None
            else tuple(btcreserves.control(statement.hash, coins, bitcoin.accounts))
        )
        statement = Statement(claims, eip191=(Signed(hot.address, hot.address, signature),), bip127=psbts)
        statement = parse_statement(statement.to_bytes())  # what every verifier will read, checked before it is written
        for p, w in zip(psbts, () if coins is None else coins.wallets, strict=True):
            if w.kind == "cold":
                (out_dir / btcreserves.COLD_PSBT).write_text(p.psbt + "\n")
        (out_dir / STATEMENT).write_bytes(statement.to_bytes())
        (out_dir / POLICY).write_bytes(bundle.raw)
        write_report(statement, out_dir / REPORT)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    with store.transaction() as s:
        audit.append(
            s,
            now,
            "por.snapshot",
            snapshot_id.hex(),
            {
                "statement_hash": statement.hash.hex(),
                "block": number,
                "root": tree.root.hex(),
                "accounts": accounts.count,
                "coverage": claims["coverage"],  # per asset, for the console's reserves page
                **({} if coins is None else {"bitcoin_block": coins.height}),
            },
        )
    return statement


@dataclass(frozen=True)
class Liabilities:
    root: bytes
    totals: tuple[int, ...]
    height: int
    leaves: int


def build_liabilities(
    accounts: Accounts,
    assets: list[str],
    proofs_path: Path,
    *,
    workers: int = 2,
    progress: Callable[[str], None] = lambda _: None,
) -> Liabilities:
    """The split tree (tree format 2) and the indexed proofs file: every account hashed once for its leaves, the
    lookup index and the published entries (in the hashing workers, while other workers cut the accounts into
    pieces and place them), then the tree built level by level into the file."""
    started = time.monotonic()
    progress(f"{accounts.count} accounts, {len(assets)} assets: hashing the ids")
    with Hashing(accounts, workers=workers, digest=entry_digests, digest_size=ENTRY) as hashing:
        leaves = split(accounts, hashing.hashes, workers=workers)  # while the hashing workers go on
        hashing.wait()
    progress(f"  cut into {leaves.leaves} pieces: a tree of height {leaves.height}")
    width = sums_width(accounts.balances)
    proofs = ProofsFile(
        proofs_path, accounts, assets, leaves.height, hashing.keys, leaves, hashing.digests, width, defer=True
    )

    def write_sections() -> None:  # while the workers build the tree; then the keys and digests are let go
        proofs.write_sections()
        for done in (hashing.keys, hashing.digests):
            if done is not None:
                free_shared(done)

    def chunk_done(done: int, total: int) -> None:
        if total > 1:
            progress(f"  tree {100 * done // total:3d} % ({time.monotonic() - started:.0f} s)")

    try:
        root, totals = build(
            leaves, leaves.height, proofs, workers=workers, progress=chunk_done, meanwhile=write_sections
        )
    finally:
        proofs.close()
    return Liabilities(root, totals, leaves.height, leaves.leaves)


def check_covered(path: Path, columns: list[str], covered: list[str]) -> None:
    """The file's asset columns are exactly the covered assets: a policy asset without a column would be left
    out of the statement without a word, which an auditor could not tell from an asset nobody holds."""
    missing = [a for a in covered if a not in columns]
    if missing:
        raise LiabilitiesInvalid(
            f"{path}: line 1: no column for {', '.join(missing)}, an asset of the policy: add the column (0 for "
            f"accounts without any), or leave it out of this snapshot on purpose with --assets "
            f"{','.join(a for a in covered if a not in missing) or 'SYMBOL'}"
        )
    extra = [a for a in columns if a not in covered]
    if extra:
        raise LiabilitiesInvalid(
            f"{path}: line 1: a column for {', '.join(extra)}, which --assets leaves out of this snapshot"
        )


def _safe_at(node: EthereumNode, address: str, block: int) -> tuple[list[str], int]:
    """The Safe's owners and threshold at ``block``; refused, with what to do, when it did not exist yet."""
    try:
        return safe_contract.owners(node, address, block), safe_contract.threshold(node, address, block)
    except (DecodingError, CallReverted):
        raise ProofInvalid(
            f"the Safe {address} has no code at block {block}: it was created after that block. Take the "
            "snapshot at a later block (or without --block, at the newest)"
        ) from None


def _wallet(
    node: EthereumNode,
    address: str,
    kind: str,
    owners: list[str],
    threshold: int,
    assets: list[str],
    rules: Mapping[str, AssetRule],
    block: int,
) -> dict[str, Any]:
    return {
        "address": address,
        "kind": kind,
        "owners": owners,
        "threshold": threshold,
        "balances": {a: str(node.balance(address, rules[a].contract, block)) for a in assets},
    }


def attach(statement_path: Path, signature_files: list[bytes]) -> tuple[Statement, list[str]]:
    """Add Safe owners' signatures, and Bitcoin owners' signed reserve PSBTs, to a statement: each checked
    against this statement (and the Safe's owners as claimed, or the coins' keys); one bad file refuses them all
    and the statement is left as it was. Returns what was attached, in words."""
    statement = parse_statement(statement_path.read_bytes())
    added = []
    attached = []
    for raw in signature_files:
        if btcreserves.is_psbt(raw):
            statement, wallet, n = btcreserves.attach_psbt(statement, raw)
            attached.append(f"{n} signatures for the Bitcoin wallet …#{wallet[-8:]}")
            continue
        digest, sig = parse_signature_file(raw)
        if digest != statement.hash.hex():
            raise ProofInvalid(
                f"the signature of {sig.owner} is for statement {digest[:16]}…, "
                f"not this one ({statement.hash.hex()[:16]}…)"
            )
        check_safe_signature(statement, sig)
        added.append(sig)
        attached.append(f"the signature of {sig.owner}")
    updated = statement.with_safe_signatures(added)
    tmp = statement_path.with_suffix(".tmp")
    tmp.write_bytes(updated.to_bytes())
    os.replace(tmp, statement_path)
    return updated, attached


def load_decimals(pairs: tuple[str, ...]) -> dict[str, int]:
    """``--decimals ETH=9`` options."""
    out = {}
    for pair in pairs:
        symbol, _, digits = pair.partition("=")
        if not digits.isdigit():
            raise ConfigError(f"--decimals {pair!r}: write it as SYMBOL=N, such as ETH=9")
        out[symbol] = int(digits)
    return out
