"""``custody por verify``: everything a statement claims that can be checked, failing closed.

Without a node: the statement parses strictly and its figures add up; every hot wallet has a valid EIP-191
signature of the statement hash; every Safe has valid signatures of its Safe message from at least its threshold of
its claimed owners; with ``proof``, the account's leaf (or each of its pieces, for a split tree) walks to the root
and the root's sums are the liability totals; with ``policy`` (a policy bundle file), it is the bundle the
statement cites and every asset is that policy's, on the policy's contract. With a node (``--rpc``), everything is
also read at the snapshot's block: each token's ``decimals()`` (18 for the native coin), the block hash, each
wallet's balances, each Safe's owners and threshold, and the Safe's own EIP-1271 ``isValidSignature``. Reading at
that block, not the newest, is what makes an old statement check out as it was.

``--rpc`` needs the policy: a balance read from a contract the host chose proves nothing, so without the
bundle the contracts cannot be checked and the verification fails rather than pass on the host's word.
"""

from __future__ import annotations

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.crypto import keccak

from custody.chain import safe as safe_contract
from custody.chain.bitcoin import BitcoinNode
from custody.chain.ethereum import EthereumNode
from custody.errors import CallReverted, ProofInvalid
from custody.por import btcverify
from custody.por.proofs import SplitProof, parse_proof
from custody.por.split import MAX_PIECES, MIN_PIECES
from custody.por.tree import Sibling, TreeError, account_hash, leaf_hash, piece_hash, walk
from policies.bundle import parse_bundle
from policies.units import format_amount
from signer.porstatement import Statement, check_assets, check_safe_signature, parse_statement
from signer.safetx import pack_signatures

EIP1271_MAGIC = bytes.fromhex("1626ba7e")
IS_VALID_SIGNATURE = keccak(text="isValidSignature(bytes32,bytes)")[:4]
DECIMALS = keccak(text="decimals()")[:4]
NATIVE_DECIMALS = 18  # wei per ether, on every EVM chain


def verify(
    statement_raw: bytes,
    proof_raw: bytes | None = None,
    node: EthereumNode | None = None,
    policy_raw: bytes | None = None,
    bitcoin: BitcoinNode | None = None,
) -> list[str]:
    """The checks that passed, as lines for the auditor; the first failure raises with its reason. ``bitcoin``:
    a bitcoind to check a format 4 statement's coins at (``custody.por.btcverify``)."""
    statement = parse_statement(statement_raw)
    c = statement.claims
    if node is not None and policy_raw is None:
        raise ProofInvalid(
            f"cannot check the assets' contracts without the policy bundle the statement cites "
            f"({c['policy_hash']}): give it with --policy (the snapshot writes it as policy.json)"
        )
    lines = [f"statement {statement.hash.hex()}: parses, and reserves and coverage add up"]
    if policy_raw is not None:
        lines.append(check_policy(statement, policy_raw))
    else:
        lines.append(f"policy {c['policy_hash']}: not checked (no --policy): the assets' contracts are as claimed")
    lines += check_control(statement)
    if statement.format == 4:
        lines += btcverify.check_control(statement)
    if proof_raw is not None:
        lines.append(check_proof(statement, proof_raw))
    if node is not None:
        lines += check_chain(statement, node)
    if bitcoin is not None:
        lines += btcverify.check_chain(statement, bitcoin)
    for a in c["assets"]:
        s, d = a["symbol"], a["decimals"]
        short = int(c["reserves"][s]) < int(c["liabilities"]["totals"][s])
        lines.append(
            f"{s}: liabilities {format_amount(int(c['liabilities']['totals'][s]), d)}, reserves "
            f"{format_amount(int(c['reserves'][s]), d)}, coverage {c['coverage'][s] or '-'} "
            f"(at block {c['block']['number']})" + ("; the reserves do NOT cover the liabilities" if short else "")
        )
    return lines


def check_control(statement: Statement) -> list[str]:
    lines = []
    hot = {w["address"] for w in statement.wallets("hot")}
    signed = {}
    for sig in statement.eip191:
        if sig.wallet not in hot:
            raise ProofInvalid(f"an EIP-191 signature for {sig.wallet}, which is not a hot wallet of the statement")
        recovered = Account.recover_message(encode_defunct(primitive=statement.hash), signature=sig.signature)
        if recovered != sig.wallet:
            raise ProofInvalid(
                f"the EIP-191 signature for {sig.wallet} was made by {recovered}: not for this statement"
            )
        signed[sig.wallet] = True
    for wallet in sorted(hot - set(signed)):
        raise ProofInvalid(f"missing signature: the hot wallet {wallet} has not signed the statement")
    lines += [f"hot wallet {w}: EIP-191 signature of the statement hash is valid" for w in sorted(hot)]
    for safe in statement.wallets("safe"):
        mine = [sig for sig in statement.eip1271 if sig.wallet == safe["address"]]
        for sig in mine:
            check_safe_signature(statement, sig)
        if len({sig.owner for sig in mine}) < safe["threshold"]:
            raise ProofInvalid(
                f"missing signature: the Safe {safe['address']} needs {safe['threshold']} owners' signatures, "
                f"the statement has {len(mine)}"
            )
        lines.append(
            f"Safe {safe['address']}: {len(mine)} of its claimed owners signed (threshold {safe['threshold']}); "
            "only --rpc checks the owners and the signatures against the Safe itself"
        )
    safes = {w["address"] for w in statement.wallets("safe")}
    stray = [sig.wallet for sig in statement.eip1271 if sig.wallet not in safes]
    if stray:
        raise ProofInvalid(f"an EIP-1271 signature for {stray[0]}, which is not a Safe of the statement")
    return lines


def check_proof(statement: Statement, proof_raw: bytes) -> str:
    """A format 1 proof against a format 2 statement (one leaf per account), a format 2 proof against a format
    3 statement (the account's pieces); never crossed, since the leaves of the two trees differ."""
    c = statement.claims
    assets = [a["symbol"] for a in c["assets"]]
    proof = parse_proof(proof_raw, assets)
    if proof.snapshot_id.hex() != c["snapshot_id"]:
        raise ProofInvalid(f"the proof is for snapshot {proof.snapshot_id.hex()[:16]}…, not {c['snapshot_id'][:16]}…")
    split = isinstance(proof, SplitProof)
    if split != (statement.format >= 3):
        raise ProofInvalid(
            f"a format {2 if split else 1} proof cannot be checked against a format {statement.format} statement"
        )
    height = c["liabilities"]["height"]
    top = (bytes.fromhex(c["liabilities"]["root"]), tuple(int(c["liabilities"]["totals"][a]) for a in assets))
    acct = account_hash(proof.account_id, proof.salt)
    if isinstance(proof, SplitProof):
        walks = check_pieces(proof, height, acct)
        how = f"in {len(proof.pieces)} pieces adding up to it; every piece's path adds up to the root"
    else:
        if len(proof.path) != height:
            raise ProofInvalid(f"the proof has {len(proof.path)} levels, the tree has {height}")
        walks = [(leaf_hash(proof.snapshot_id, acct, proof.balances), proof.balances, proof.index, proof.path)]
        how = "every sum on its path adds up to the root"
    for leaf, sums, index, path in walks:
        try:
            reached = walk(leaf, sums, index, path)
        except TreeError as exc:
            raise ProofInvalid(f"the proof does not add up: {exc}") from None
        if reached[0] != top[0]:
            raise ProofInvalid(
                "the proof does not lead to the statement's root: a balance, share, salt or sibling was changed"
            )
        if reached[1] != top[1]:
            raise ProofInvalid(f"the proof's root sums {reached[1]} are not the statement's liability totals {top[1]}")
    shown = ", ".join(
        f"{a} {format_amount(b, x['decimals'])}" for a, b, x in zip(assets, proof.balances, c["assets"], strict=True)
    )
    return f"account {proof.account_id}: included with {shown}; {how}"


Walk = tuple[bytes, tuple[int, ...], int, tuple[Sibling, ...]]


def check_pieces(proof: SplitProof, height: int, acct: bytes) -> list[Walk]:
    """The rules of the split tree that a single proof can check (docs/proof-of-reserves.md): 2 to 4 pieces at
    distinct places, piece 0 in the left half and piece 1 in the right, shares adding up to exactly the
    balances shown; then each piece's leaf, to be walked to the root."""
    k, half = len(proof.pieces), 1 << (height - 1)
    if not MIN_PIECES <= k <= MAX_PIECES:
        raise ProofInvalid(f"the proof has {k} pieces; an account has {MIN_PIECES} to {MAX_PIECES}")
    places = [p.index for p in proof.pieces]
    if len(set(places)) != k:
        raise ProofInvalid("two pieces of the proof are at the same place")
    if not (places[0] < half <= places[1]):
        raise ProofInvalid("piece 0 must be in the left half of the tree and piece 1 in the right half")
    for j, p in enumerate(proof.pieces):
        if len(p.path) != height:
            raise ProofInvalid(f"piece {j} has {len(p.path)} levels, the tree has {height}")
    added = tuple(sum(column) for column in zip(*(p.shares for p in proof.pieces), strict=True))
    if added != proof.balances:
        raise ProofInvalid(f"the pieces' shares add up to {added}, not to the balances shown {proof.balances}")
    return [
        (piece_hash(proof.snapshot_id, acct, j, k, p.shares), p.shares, p.index, p.path)
        for j, p in enumerate(proof.pieces)
    ]


def check_policy(statement: Statement, policy_raw: bytes) -> str:
    """The bundle is the one the statement cites (by its hash), and each asset is that policy's, on its
    contract. The chain decides the decimals (``check_chain``); the Safe owners' signatures vouch that the
    cited bundle is the quorum-signed one their signers verified."""
    bundle = parse_bundle(policy_raw)
    cited = statement.claims["policy_hash"]
    if bundle.hash != cited:
        raise ProofInvalid(
            f"the policy file is bundle {bundle.hash} (version {bundle.version}); the statement cites {cited}"
        )
    check_assets(statement, bundle.policy.assets, decimals=False)
    tokens = ", ".join(f"{a['symbol']} {a['contract'] or 'native'}" for a in statement.claims["assets"])
    return f"policy bundle version {bundle.version} ({cited}): every asset is the policy's ({tokens})"


def chain_decimals(node: EthereumNode, contract: str | None, block: int) -> int:
    """What the chain says: 18 for the native coin, else the token's own ``decimals()`` at ``block``."""
    if contract is None:
        return NATIVE_DECIMALS
    try:
        answer = node.call(contract, DECIMALS, block=block)
    except CallReverted as exc:
        raise ProofInvalid(f"{contract} has no decimals() at block {block}: {exc.message}") from None
    if len(answer) != 32 or int.from_bytes(answer, "big") > 255:
        raise ProofInvalid(f"{contract} answered decimals() at block {block} with {answer.hex()[:80]!r}, not a uint8")
    return int.from_bytes(answer, "big")


def check_chain(statement: Statement, node: EthereumNode) -> list[str]:
    c = statement.claims
    number = c["block"]["number"]
    if node.chain_id != c["chain_id"]:
        raise ProofInvalid(f"the node is on chain {node.chain_id}, the statement on {c['chain_id']}")
    node.check_chain()
    if node.block_hash(number) != c["block"]["hash"]:
        raise ProofInvalid(f"block {number} on this node is not the statement's {c['block']['hash']}")
    contracts = {a["symbol"]: a["contract"] for a in c["assets"]}
    lines = [f"block {number} has the statement's hash {c['block']['hash']}"]
    for a in c["assets"]:
        if a["symbol"] == statement.bitcoin_asset:
            continue  # on Bitcoin (8 decimals, checked when parsed); its coins are btcverify's
        actual = chain_decimals(node, a["contract"], number)
        token = "the native coin" if a["contract"] is None else a["contract"]
        if actual != a["chain_decimals"]:
            raise ProofInvalid(
                f"the statement gives {a['symbol']} {a['chain_decimals']} decimals on chain; {token} has {actual}"
            )
        lines.append(f"{a['symbol']}: {token} has {actual} decimals at block {number}, as the statement says")
    for w in c["wallets"]:
        for symbol, claimed in w["balances"].items():
            actual = node.balance(w["address"], contracts[symbol], number)
            if actual != int(claimed):
                raise ProofInvalid(
                    f"{w['address']} held {actual} {symbol} base units at block {number}, the statement says {claimed}"
                )
        if w["kind"] == "safe":
            owners = safe_contract.owners(node, w["address"], number)
            threshold = safe_contract.threshold(node, w["address"], number)
            if set(owners) != set(w["owners"]) or threshold != w["threshold"]:
                raise ProofInvalid(f"the Safe {w['address']} had other owners or threshold at block {number}")
            sigs = {s.owner: s.signature for s in statement.eip1271 if s.wallet == w["address"]}
            call = IS_VALID_SIGNATURE + abi_encode(["bytes32", "bytes"], [statement.hash, pack_signatures(sigs)])
            try:
                answer = node.call(w["address"], call, block=number)
            except CallReverted as exc:
                raise ProofInvalid(f"the Safe {w['address']} refuses the owners' signatures: {exc.message}") from None
            if answer[:4] != EIP1271_MAGIC:
                raise ProofInvalid(f"the Safe {w['address']} does not accept the signatures (EIP-1271)")
            lines.append(f"Safe {w['address']}: isValidSignature accepts the owners' signatures at block {number}")
        lines.append(f"{w['kind']} wallet {w['address']}: balances at block {number} match")
    return lines
