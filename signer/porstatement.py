"""The proof-of-reserves statement and the Safe owners' signatures of it: defined here, because the signers
sign it (``signer por sign``) and must check what they sign; the daemon writes it and the verifier reads it.

    {"kind": "custody-por-statement", "format": 3,
     "claims": {
        "snapshot_id": "<64 hex>", "created_at": <unix s>, "chain_id": 1,
        "block": {"number": 19000000, "hash": "0x<64 hex>"},
        "policy_hash": "<64 hex>",                  SHA-256 of the policy bundle the assets are taken from
        "assets": [{"symbol": "ETH", "decimals": 9, "chain_decimals": 18, "contract": null}, …],
        "liabilities": {"root": "<64 hex>", "height": 25, "accounts": 10000000, "leaves": 29999512,
                        "totals": {"ETH": "<units of the snapshot's decimals>", …}},
        "wallets": [{"address": "0x…", "kind": "hot" | "safe", "owners": ["0x…", …], "threshold": 2,
                     "balances": {"ETH": "<on-chain base units>", …}}, …],
        "reserves": {"ETH": "<units of the snapshot's decimals, rounded down>", …},
        "coverage": {"ETH": "1.0421" | null, …}},                  reserves / liabilities, 4 places, rounded down
     "statement_hash": "<SHA-256 hex of the canonical claims>",
     "control": {"eip191": [{"wallet": "0x…", "signature": "0x…"}],            one per hot wallet
                 "eip1271": [{"wallet": "0x…", "owner": "0x…", "signature": "0x…"}]}}   owners of each Safe

The statement hash binds everything claimed (root, totals, block hash, wallets and balances) to this one
snapshot; every proof of control signs it, so no signature can be reused for another snapshot. A hot wallet
signs it with EIP-191 (``personal_sign`` of the 32 bytes); a Safe's owners sign the Safe message hash of it
(``signer.safetx.safe_message_hash``) so that the Safe's EIP-1271 ``isValidSignature`` accepts them together.

Format 2 added ``policy_hash``: which token is "USDC" and how many decimals it has on chain are the policy's
to say, not the online host's. An owner signs only a statement that cites the newest policy bundle their
signer has verified and whose every asset has that policy's contract and decimals (``check_policy``), so a
statement the Safe signed vouches for its policy hash too; the verifier then checks the contracts against
that bundle and the decimals against the chain. A format 1 statement, which names no policy, is refused.

Format 3 added ``liabilities.leaves``: the tree is the split one (tree format 2, leaf privacy: each account's
balances cut into 2 to 4 pieces scattered among the leaves), and ``leaves`` is how many pieces it has. A
format 2 statement (one leaf per account, no ``leaves``) still parses and verifies; which one a statement is
follows from its claims, so the statement hash covers the format too.

Format 4 is format 3 plus the Bitcoin wallets (``signer.porbtc``): ``claims.bitcoin`` (the asset, network,
block, and each wallet's descriptor and coins) and ``control.bip127`` (one reserve PSBT per Bitcoin wallet,
``{"wallet": "<descriptor>", "psbt": "<base64>"}``, in the claims' order). The Ethereum wallets' balances then
list the other assets only, and the Bitcoin asset's reserves are the Bitcoin wallets' balances. A statement
without Bitcoin stays format 3.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from policies.bundle import Bundle, read_document
from policies.canonical import canonical_bytes, parse_canonical
from policies.errors import CustodyError
from policies.loader import Reader
from policies.model import AssetRule
from policies.text import escape
from policies.units import parse_base_units
from signer.errors import (
    StatementAssetContract,
    StatementAssetDecimals,
    StatementAssetUnknown,
    StatementInvalid,
    StatementPolicyMismatch,
)
from signer.porbtc import BTC_DECIMALS, parse_bitcoin
from signer.safetx import SignatureInvalid, recover_owner, safe_message_hash

KIND, SIGNATURE_KIND = "custody-por-statement", "custody-por-signature"
FORMAT = 4  # the newest statement format (with Bitcoin); 2 and 3 are still read. The signature file stays format 1
FORMATS = (2, 3, 4)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HASH = re.compile(r"0x[0-9a-f]{64}")
_SIG = re.compile(r"0x[0-9a-f]{130}")
_SYMBOL = re.compile(r"[A-Z0-9]{1,16}")
_RATIO = re.compile(r"(0|[1-9][0-9]*)\.[0-9]{4}")
_BASE64 = re.compile(r"cHNidP8[A-Za-z0-9+/]{1,4000000}={0,2}")
U64 = 2**64


@dataclass(frozen=True)
class Signed:
    wallet: str
    owner: str  # the signing key's address: the wallet itself for a hot wallet
    signature: bytes


@dataclass(frozen=True)
class ReservePsbt:
    wallet: str  # the Bitcoin wallet's descriptor, as claimed
    psbt: str  # base64


@dataclass(frozen=True)
class Statement:
    claims: dict[str, Any]
    eip191: tuple[Signed, ...] = ()
    eip1271: tuple[Signed, ...] = ()
    bip127: tuple[ReservePsbt, ...] = ()

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(canonical_bytes(self.claims)).digest()

    @property
    def format(self) -> int:
        """4 with Bitcoin wallets, 3 for a split tree (its liabilities count the leaves), 2 for one leaf per
        account."""
        if "bitcoin" in self.claims:
            return 4
        return 3 if "leaves" in self.claims["liabilities"] else 2

    def to_bytes(self) -> bytes:
        control: dict[str, Any] = {
            "eip191": [{"wallet": s.wallet, "signature": "0x" + s.signature.hex()} for s in self.eip191],
            "eip1271": [
                {"wallet": s.wallet, "owner": s.owner, "signature": "0x" + s.signature.hex()} for s in self.eip1271
            ],
        }
        if self.format == 4:
            control["bip127"] = [{"wallet": p.wallet, "psbt": p.psbt} for p in self.bip127]
        return canonical_bytes(
            {
                "kind": KIND,
                "format": self.format,
                "claims": self.claims,
                "statement_hash": self.hash.hex(),
                "control": control,
            }
        )

    @property
    def bitcoin_asset(self) -> str | None:
        return self.claims["bitcoin"]["asset"] if "bitcoin" in self.claims else None

    def with_safe_signatures(self, added: list[Signed]) -> Statement:
        """Owners' signatures added once each, sorted so the file does not depend on the order of import."""
        known = {(s.wallet, s.owner): s for s in (*self.eip1271, *added)}
        return replace(self, eip1271=tuple(known[k] for k in sorted(known, key=lambda k: (k[0], int(k[1], 16)))))

    def wallets(self, kind: str) -> list[dict[str, Any]]:
        return [w for w in self.claims["wallets"] if w["kind"] == kind]


def coverage(reserves: int, liabilities: int) -> str | None:
    """reserves / liabilities with 4 decimal places, rounded down (never flattering); None with no liabilities."""
    if liabilities == 0:
        return None
    whole, frac = divmod(reserves * 10_000 // liabilities, 10_000)
    return f"{whole}.{frac:04d}"


def reserves_in_snapshot_units(onchain: int, chain_decimals: int, decimals: int) -> int:
    return onchain // int(10 ** (chain_decimals - decimals))


def parse_statement(raw: bytes) -> Statement:
    """Strictly (unknown fields anywhere are refused), and check that the claims add up."""
    fmt = _declared_format(raw)
    doc = read_document(raw, KIND, {"claims", "statement_hash", "control"}, StatementInvalid, fmt)
    r = Reader(human=False)
    try:
        claims = _claims(r, doc["claims"], fmt)
        control = r.table(doc["control"], "control", {"eip191", "eip1271"} | ({"bip127"} if fmt == 4 else set()))
        eip191 = tuple(
            Signed(w["wallet"], w["wallet"], _signature(r, w["signature"], f"control.eip191[{i}].signature"))
            for i, w in enumerate(r.array(control["eip191"], "control.eip191"))
            if r.table(w, f"control.eip191[{i}]", {"wallet", "signature"}) and r.address(w["wallet"], "wallet")
        )
        eip1271 = tuple(
            Signed(
                r.address(w["wallet"], f"control.eip1271[{i}].wallet"),
                r.address(w["owner"], f"control.eip1271[{i}].owner"),
                _signature(r, w["signature"], f"control.eip1271[{i}].signature"),
            )
            for i, w in enumerate(r.array(control["eip1271"], "control.eip1271"))
            if r.table(w, f"control.eip1271[{i}]", {"wallet", "owner", "signature"})
        )
        bip127 = tuple(
            ReservePsbt(r.typed(p["wallet"], str, f"control.bip127[{i}].wallet"), _base64(r, p["psbt"], i))
            for i, p in enumerate(r.array(control.get("bip127", []), "control.bip127"))
            if r.table(p, f"control.bip127[{i}]", {"wallet", "psbt"})
        )
    except CustodyError as exc:
        raise StatementInvalid(f"not a valid statement: {exc.message}") from None
    statement = Statement(claims, eip191, eip1271, bip127)
    if fmt == 4 and [p.wallet for p in bip127] != [w["descriptor"] for w in claims["bitcoin"]["wallets"]]:
        raise StatementInvalid("control.bip127: one reserve PSBT per Bitcoin wallet, in the claims' order")
    if doc["statement_hash"] != statement.hash.hex():
        raise StatementInvalid("statement_hash is not the hash of the claims")
    if statement.to_bytes() != raw:
        raise StatementInvalid("the statement is not in canonical form")
    check_claims(statement.claims)
    return statement


def _declared_format(raw: bytes) -> int:
    """The format the file says it has, if it is one this reader knows; else the newest, so that the strict
    parse refuses the file with its own reason."""
    try:
        doc = parse_canonical(raw)
    except CustodyError:
        return FORMAT
    fmt = doc.get("format") if isinstance(doc, dict) else None
    return fmt if fmt in FORMATS else FORMAT


def _base64(r: Reader, value: Any, i: int) -> str:
    text = r.typed(value, str, f"control.bip127[{i}].psbt")
    if _BASE64.fullmatch(text) is None:
        raise StatementInvalid(f"control.bip127[{i}].psbt: must be a PSBT in base64")
    return text


def _signature(r: Reader, value: Any, path: str) -> bytes:
    return bytes.fromhex(r.text(value, path, _SIG, "signature (0x and 130 hex)")[2:])


def _claims(r: Reader, value: Any, fmt: int) -> dict[str, Any]:
    c = r.table(
        value,
        "claims",
        {
            "snapshot_id",
            "created_at",
            "chain_id",
            "block",
            "policy_hash",
            "assets",
            "liabilities",
            "wallets",
            "reserves",
            "coverage",
        }
        | ({"bitcoin"} if fmt == 4 else set()),
    )
    r.text(c["snapshot_id"], "claims.snapshot_id", _HEX64, "snapshot id")
    r.instant(c["created_at"], "claims.created_at")
    r.count(c["chain_id"], "claims.chain_id", 1, 2**53)
    block = r.table(c["block"], "claims.block", {"number", "hash"})
    r.count(block["number"], "claims.block.number", 0, 2**53)
    r.text(block["hash"], "claims.block.hash", _HASH, "block hash")
    r.text(c["policy_hash"], "claims.policy_hash", _HEX64, "policy bundle hash")
    assets = r.array(c["assets"], "claims.assets")
    if not assets:
        raise StatementInvalid("claims.assets: at least one asset is needed")
    symbols = []
    for i, a in enumerate(assets):
        path = f"claims.assets[{i}]"
        r.table(a, path, {"symbol", "decimals", "chain_decimals", "contract"})
        symbols.append(r.text(a["symbol"], f"{path}.symbol", _SYMBOL, "asset symbol"))
        chain_decimals = r.count(a["chain_decimals"], f"{path}.chain_decimals", 0, 36)
        r.count(a["decimals"], f"{path}.decimals", 0, chain_decimals)
        if a["contract"] is not None:
            r.address(a["contract"], f"{path}.contract")
    r.unique(symbols, lambda s: s, "claims.assets", "asset")
    fields = {"root", "height", "accounts", "totals"} | ({"leaves"} if fmt >= 3 else set())
    liabilities = r.table(c["liabilities"], "claims.liabilities", fields)
    r.text(liabilities["root"], "claims.liabilities.root", _HEX64, "root hash")
    height = r.count(liabilities["height"], "claims.liabilities.height", 1, 40)
    accounts = r.count(liabilities["accounts"], "claims.liabilities.accounts", 1, 2**height)
    if fmt >= 3:
        # every account is cut into 2 to 4 pieces (custody.por.split)
        r.count(liabilities["leaves"], "claims.liabilities.leaves", 2 * accounts, min(4 * accounts, 2**height))
    _per_asset(r, liabilities["totals"], "claims.liabilities.totals", symbols)
    onchain = symbols  # the assets the Ethereum wallets hold
    if fmt == 4:
        bitcoin = parse_bitcoin(r, c["bitcoin"], symbols)
        onchain = [s for s in symbols if s != bitcoin["asset"]]
        (asset,) = (a for a in assets if a["symbol"] == bitcoin["asset"])
        if asset["contract"] is not None or asset["chain_decimals"] != BTC_DECIMALS:
            raise StatementInvalid(f"claims.bitcoin: {bitcoin['asset']} has no contract and 8 decimals on chain")
    wallets = r.array(c["wallets"], "claims.wallets")
    for i, w in enumerate(wallets):
        path = f"claims.wallets[{i}]"
        r.table(w, path, {"address", "kind", "owners", "threshold", "balances"})
        r.address(w["address"], f"{path}.address")
        if w["kind"] not in ("hot", "safe"):
            raise StatementInvalid(f"{path}.kind: must be hot or safe")
        owners = [r.address(o, f"{path}.owners[{j}]") for j, o in enumerate(r.array(w["owners"], f"{path}.owners"))]
        r.unique(owners, lambda o: o, f"{path}.owners", "owner")
        r.count(w["threshold"], f"{path}.threshold", 1, max(1, len(owners)))
        if w["kind"] == "hot" and (owners != [w["address"]] or w["threshold"] != 1):
            raise StatementInvalid(f"{path}: a hot wallet is its own single owner")
        _per_asset(r, w["balances"], f"{path}.balances", onchain)
    if not wallets:
        raise StatementInvalid("claims.wallets: at least one wallet is needed")
    r.unique([w["address"] for w in wallets], lambda a: a, "claims.wallets", "wallet")
    _per_asset(r, c["reserves"], "claims.reserves", symbols)
    cov = r.table(c["coverage"], "claims.coverage", set(symbols))
    for s in symbols:
        if cov[s] is not None:
            r.text(cov[s], f"claims.coverage.{s}", _RATIO, "ratio with 4 decimal places")
    return c


def _per_asset(r: Reader, value: Any, path: str, symbols: list[str]) -> dict[str, int]:
    table = r.table(value, path, set(symbols))
    try:
        return {s: parse_base_units(table[s]) for s in symbols}
    except CustodyError as exc:
        raise StatementInvalid(f"{path}: {exc.message}") from None


def check_claims(claims: dict[str, Any]) -> None:
    """The figures must add up: reserves are the wallets' balances in the snapshot's units, coverage is their
    ratio to the liability totals. (The totals themselves are checked against the tree by each proof.)"""
    btc = claims["bitcoin"]["asset"] if "bitcoin" in claims else None
    for asset in claims["assets"]:
        s = asset["symbol"]
        if s == btc:
            onchain = sum(int(w["balance"]) for w in claims["bitcoin"]["wallets"])
        else:
            onchain = sum(int(w["balances"][s]) for w in claims["wallets"])
        reserves = reserves_in_snapshot_units(onchain, asset["chain_decimals"], asset["decimals"])
        if int(claims["reserves"][s]) != reserves:
            raise StatementInvalid(f"the {s} reserves {claims['reserves'][s]} are not the wallets' sum ({reserves})")
        expected = coverage(reserves, int(claims["liabilities"]["totals"][s]))
        if claims["coverage"][s] != expected:
            raise StatementInvalid(
                f"the {s} coverage {claims['coverage'][s]} is not reserves / liabilities ({expected})"
            )


def check_pinned_safe(statement: Statement, chain_id: int, safe: str, owners: tuple[str, ...], threshold: int) -> None:
    """Before an owner signs: the statement must claim this Safe, on this chain, with exactly the owners and
    threshold the signer pinned. Offline verification counts signatures against the claimed owners, so a
    statement that listed other owners would make those owners' signatures look like the Safe's."""
    if statement.claims["chain_id"] != chain_id:
        raise StatementInvalid(
            f"the statement is for chain {statement.claims['chain_id']}, the pinned Safe is on {chain_id}"
        )
    claimed = next((w for w in statement.wallets("safe") if w["address"] == safe), None)
    if claimed is None:
        raise StatementInvalid(f"the statement does not claim the pinned Safe {safe}")
    if set(claimed["owners"]) != set(owners) or claimed["threshold"] != threshold:
        raise StatementInvalid(
            f"the statement says the Safe {safe} has {claimed['threshold']} of {len(claimed['owners'])} owners "
            f"{sorted(claimed['owners'])}; the pinned Safe has {threshold} of {sorted(owners)}"
        )


def check_policy(statement: Statement, bundle: Bundle | None) -> None:
    """Before an owner signs: the statement cites ``bundle`` (the newest policy bundle this signer verified),
    and every asset in it is that policy's, on the policy's contract with the policy's decimals. Otherwise
    the host could count 10 ETH as 100 by claiming 17 decimals, or count its own token as USDC."""
    cited = statement.claims["policy_hash"]
    if bundle is None:
        raise StatementPolicyMismatch(
            f"the statement cites policy bundle {cited}, and this signer has verified no policy bundle yet"
        )
    if cited != bundle.hash:
        raise StatementPolicyMismatch(
            f"the statement cites policy bundle {cited}; the newest this signer verified is version "
            f"{bundle.version}, {bundle.hash}"
        )
    check_assets(statement, bundle.policy.assets, decimals=True)


def check_assets(statement: Statement, assets: Mapping[str, AssetRule], *, decimals: bool) -> None:
    """Each asset of the statement is in ``assets`` with the same contract (None: the native coin) and, with
    ``decimals``, the same number of decimals on chain; the statement's Bitcoin asset (format 4) is the policy's
    bitcoin asset of its network, and no other asset is a bitcoin one (its balance is not on Ethereum)."""
    btc = statement.bitcoin_asset
    for a in statement.claims["assets"]:
        symbol, contract = a["symbol"], a["contract"]
        rule = assets.get(symbol)
        if rule is None:
            raise StatementAssetUnknown(f"the statement counts {escape(symbol)}, which is not an asset of the policy")
        on_bitcoin = rule.chain == "bitcoin"
        if on_bitcoin != (symbol == btc) or (on_bitcoin and rule.network != statement.claims["bitcoin"]["network"]):
            counted = f"Bitcoin {escape(statement.claims['bitcoin']['network'])}" if symbol == btc else "Ethereum"
            raise StatementAssetContract(
                f"the statement counts {escape(symbol)} on {counted}; the policy's {escape(symbol)} is on "
                f"{escape(rule.chain)} {escape(rule.network or '')}".rstrip()
            )
        if contract != rule.contract:
            raise StatementAssetContract(
                f"the statement counts {escape(symbol)} as {_token(contract)}; the policy's {escape(symbol)} is "
                f"{_token(rule.contract)}"
            )
        if decimals and a["chain_decimals"] != rule.decimals:
            raise StatementAssetDecimals(
                f"the statement gives {escape(symbol)} {a['chain_decimals']} decimals on chain; "
                f"the policy says {rule.decimals}"
            )


def _token(contract: str | None) -> str:
    return "the native coin" if contract is None else f"the token at {escape(contract)}"


def safe_digest(statement: Statement, safe: str) -> bytes:
    return safe_message_hash(statement.claims["chain_id"], safe, statement.hash)


def check_safe_signature(statement: Statement, sig: Signed) -> None:
    """The signature is by ``sig.owner``, over this statement's Safe message, and the owner is one of the
    Safe's owners as claimed at the snapshot block."""
    safes = {w["address"]: w for w in statement.wallets("safe")}
    if sig.wallet not in safes:
        raise StatementInvalid(f"{sig.wallet} is not a Safe of this statement")
    try:
        signer = recover_owner(safe_digest(statement, sig.wallet), sig.signature)
    except SignatureInvalid as exc:
        raise StatementInvalid(f"the signature of {sig.owner}: {exc}") from None
    if signer != sig.owner:
        raise StatementInvalid(
            f"the signature claims owner {sig.owner} but was made by {signer}: it is for another statement or Safe"
        )
    if sig.owner not in safes[sig.wallet]["owners"]:
        raise StatementInvalid(f"{sig.owner} is not an owner of the Safe {sig.wallet}")


# -- the owners' signature file ----------------------------------------------------------------------------
def signature_file(statement: Statement, sig: Signed) -> bytes:
    return canonical_bytes(
        {
            "kind": SIGNATURE_KIND,
            "format": 1,
            "statement_hash": statement.hash.hex(),
            "safe": sig.wallet,
            "owner": sig.owner,
            "signature": "0x" + sig.signature.hex(),
        }
    )


def parse_signature_file(raw: bytes) -> tuple[str, Signed]:
    """(statement hash, the signature); canonical form only."""
    doc = read_document(raw, SIGNATURE_KIND, {"statement_hash", "safe", "owner", "signature"}, StatementInvalid)
    r = Reader(human=False)
    try:
        digest = r.text(doc["statement_hash"], "statement_hash", _HEX64, "statement hash")
        sig = Signed(
            r.address(doc["safe"], "safe"),
            r.address(doc["owner"], "owner"),
            _signature(r, doc["signature"], "signature"),
        )
    except CustodyError as exc:
        raise StatementInvalid(f"not a valid statement signature file: {exc.message}") from None
    if canonical_bytes(doc) != raw:
        raise StatementInvalid("the signature file is not in canonical form")
    return digest, sig


def describe(statement: Statement, bundle: Bundle | None = None) -> list[str]:
    """What an owner reads before signing: the block, the policy, each asset's token and decimals, every
    wallet, and per asset liabilities, reserves, coverage. Everything from the file is printed escaped."""
    from policies.units import format_amount

    c = statement.claims
    policy = f"policy       {escape(c['policy_hash'])}"
    if bundle is not None and bundle.hash == c["policy_hash"]:
        policy += f" (version {bundle.version}, the newest this signer verified)"
    lines = [
        f"snapshot     {escape(c['snapshot_id'])}",
        f"block        {c['block']['number']} ({escape(c['block']['hash'])}) on chain {c['chain_id']}",
        policy,
        f"accounts     {c['liabilities']['accounts']}"
        + (f" in {c['liabilities']['leaves']} leaves" if "leaves" in c["liabilities"] else "")
        + f" (Merkle sum tree root {escape(c['liabilities']['root'])})",
        "",
        f"{'asset':<8}{'token':<44}{'decimals on chain':>18}{'counted in':>12}",
    ]
    for a in c["assets"]:
        token = "native coin" if a["contract"] is None else a["contract"]
        lines.append(f"{escape(a['symbol']):<8}{escape(token):<44}{a['chain_decimals']:>18}{a['decimals']:>12}")
    lines += ["", f"{'asset':<8}{'liabilities':>28}{'reserves':>28}{'coverage':>10}"]
    for a in c["assets"]:
        s, d = a["symbol"], a["decimals"]
        lines.append(
            f"{escape(s):<8}{format_amount(int(c['liabilities']['totals'][s]), d):>28}"
            f"{format_amount(int(c['reserves'][s]), d):>28}{escape(c['coverage'][s] or '-'):>10}"
        )
    lines.append("")
    for w in c["wallets"]:
        lines.append(
            f"{escape(w['kind']):<5} wallet {escape(w['address'])}"
            + (f"  ({w['threshold']} of {len(w['owners'])})" if w["kind"] == "safe" else "")
        )
    if "bitcoin" in c:
        b = c["bitcoin"]
        lines += [
            "",
            f"bitcoin      {escape(b['network'])} block {b['block']['height']} ({escape(b['block']['hash'])})",
        ]
        for w in b["wallets"]:
            lines.append(
                f"{escape(w['kind']):<5} wallet {escape(w['descriptor'][:48])}…#{escape(w['descriptor'][-8:])}  "
                f"{format_amount(int(w['balance']), 8)} {escape(b['asset'])} in {len(w['utxos'])} coins"
            )
    lines += ["", f"statement hash {statement.hash.hex()}"]
    return lines
