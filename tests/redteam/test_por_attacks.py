"""Attack 8: a proof of reserves that lies about what the wallets hold.

The compromised host writes the statement (there is no offline writer: the project's own one reads a node), so
each test builds it here as the host would, with figures that add up, and hands it to the real
``signer por sign`` of an owner of the pinned Safe. Which token is "USDC" and how many decimals a coin has are
the policy's to say: the host that counts 10 ETH as 100 by claiming 17 decimals, counts its own token as USDC,
cites a policy the signer has not verified (or an older one) or counts an asset the policy does not have gets
a refusal with a specific code, and nothing is signed.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from policies.bundle import make_bundle, sign_bundle
from policies.loader import load_policy_toml
from signer.porstatement import Statement, check_claims, coverage, reserves_in_snapshot_units
from tests.redteam.conftest import ETH, HOT, NOW, USDC_CONTRACT, Ceremony, policy_text, refused

ATTACKER_TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def claims(ceremony: Ceremony, assets: list[dict[str, Any]], held: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """A statement's claims with every figure adding up: ``held`` is each asset's (hot, Safe) balance in base
    units, liabilities are half the reserves, reserves and coverage are computed from the claimed decimals."""
    wallets = [
        {"address": HOT, "kind": "hot", "owners": [HOT], "threshold": 1, "balances": {}},
        {
            "address": ceremony.cold.safe,
            "kind": "safe",
            "owners": sorted(ceremony.cold.owners),
            "threshold": ceremony.cold.threshold,
            "balances": {},
        },
    ]
    reserves, totals = {}, {}
    for a in assets:
        s = a["symbol"]
        hot, safe = held[s]
        wallets[0]["balances"][s], wallets[1]["balances"][s] = str(hot), str(safe)
        reserves[s] = reserves_in_snapshot_units(hot + safe, a["chain_decimals"], a["decimals"])
        totals[s] = reserves[s] // 2
    c = {
        "snapshot_id": "5a" * 32,
        "created_at": NOW,
        "chain_id": ceremony.cold.chain_id,
        "block": {"number": 1234, "hash": "0x" + "b7" * 32},
        "policy_hash": ceremony.bundle.hash,
        "assets": assets,
        "liabilities": {
            "root": "c4" * 32,
            "height": 3,
            "accounts": 5,
            "totals": {s: str(t) for s, t in totals.items()},
        },
        "wallets": wallets,
        "reserves": {s: str(r) for s, r in reserves.items()},
        "coverage": {s: coverage(reserves[s], totals[s]) for s in reserves},
    }
    check_claims(c)  # the figures add up: only the policy can tell the lie
    return c


ETH_ASSET = {"symbol": "ETH", "decimals": 9, "chain_decimals": 18, "contract": None}
USDC_ASSET = {"symbol": "USDC", "decimals": 6, "chain_decimals": 6, "contract": USDC_CONTRACT}
HONEST_HELD = {"ETH": (2 * ETH, 8 * ETH), "USDC": (10**9, 10**10)}


def honest(ceremony: Ceremony) -> dict[str, Any]:
    return claims(ceremony, [dict(ETH_ASSET), dict(USDC_ASSET)], HONEST_HELD)


def por_sign(ceremony: Ceremony, c: dict[str, Any], who: int = 0, *, ok: bool = False):
    path = ceremony.file(Statement(c).to_bytes(), "statement.json")
    out = ceremony.tmp / f"por.{who}.sig"
    result = ceremony.signing(("por", "sign"), path, out, who, ok=ok)
    if not ok:
        assert not out.exists(), "a refused statement must not leave a signature behind"
    return result


def last_transcript(ceremony: Ceremony, who: int = 0) -> dict[str, str]:
    lines = (ceremony.states[who] / "transcript.log").read_text().splitlines()
    return json.loads(lines[-1])


def test_an_honest_statement_is_shown_with_each_token_and_signed(ceremony):
    result = por_sign(ceremony, honest(ceremony), ok=True)
    out = result.output
    assert f"policy       {ceremony.bundle.hash} (version 1, the newest this signer verified)" in out
    eth_row = next(line for line in out.splitlines() if line.startswith("ETH ") and "native coin" in line)
    usdc_row = next(line for line in out.splitlines() if line.startswith("USDC ") and USDC_CONTRACT in line)
    assert eth_row.split()[-2:] == ["18", "9"] and usdc_row.split()[-2:] == ["6", "6"]
    assert "signed statement" in out and last_transcript(ceremony)["decision"] == "signed"


def test_eth_counted_with_17_decimals_is_refused(ceremony):
    # 10 real ETH claimed with 17 decimals read as 100 ETH of reserves, coverage doubled
    lie = claims(ceremony, [{**ETH_ASSET, "chain_decimals": 17}, dict(USDC_ASSET)], HONEST_HELD)
    assert lie["reserves"]["ETH"] == str(100 * 10**9)
    message = refused(por_sign(ceremony, lie), "statement_asset_decimals")
    assert "ETH 17 decimals on chain; the policy says 18" in message
    assert last_transcript(ceremony)["decision"] == "refused: statement_asset_decimals"


def test_usdc_on_the_attackers_token_is_refused(ceremony):
    # a billion of the host's own token, counted as USDC
    fake = claims(
        ceremony, [dict(ETH_ASSET), {**USDC_ASSET, "contract": ATTACKER_TOKEN}], {**HONEST_HELD, "USDC": (0, 10**15)}
    )
    message = refused(por_sign(ceremony, fake), "statement_asset_contract")
    assert f"USDC as the token at {ATTACKER_TOKEN}; the policy's USDC is the token at {USDC_CONTRACT}" in message


def test_the_native_coin_claimed_as_a_token_is_refused(ceremony):
    fake = claims(ceremony, [{**ETH_ASSET, "contract": ATTACKER_TOKEN}], {"ETH": (0, 10**6 * ETH)})
    message = refused(por_sign(ceremony, fake), "statement_asset_contract")
    assert "the policy's ETH is the native coin" in message


def test_an_asset_outside_the_policy_is_refused(ceremony):
    dai = {"symbol": "DAI", "decimals": 18, "chain_decimals": 18, "contract": ATTACKER_TOKEN}
    extra = claims(ceremony, [dict(ETH_ASSET), dict(USDC_ASSET), dai], {**HONEST_HELD, "DAI": (0, 10**9 * ETH)})
    message = refused(por_sign(ceremony, extra), "statement_asset_unknown")
    assert "DAI, which is not an asset of the policy" in message


def test_a_statement_citing_another_policy_is_refused(ceremony):
    other = honest(ceremony)
    other["policy_hash"] = "00" * 32
    message = refused(por_sign(ceremony, other), "statement_policy_mismatch")
    assert f"the newest this signer verified is version 1, {ceremony.bundle.hash}" in message


def test_a_statement_citing_the_previous_policy_is_refused(ceremony):
    """Once the signer has verified bundle 2 (which, say, moved USDC to a new contract), a statement made under
    bundle 1 is stale, even if every asset in it matches bundle 1."""
    admins = [(op.name, op.card["approval_key"]) for op in ceremony.operators]
    created = NOW - 30
    policy = load_policy_toml(policy_text(admins, created))
    v2 = make_bundle(policy, ceremony.bundle.head(), created)
    bundle = ceremony.file(v2.raw, "bundle-2.json")
    sigs = []
    for i, op in enumerate(ceremony.operators[:2]):
        sigs.append(ceremony.file(sign_bundle(v2.hash, op.approval).to_bytes(), f"bundle-2.{i}.sig"))
    ceremony.run("policy", "accept", bundle, *sigs, ok=True)

    stale = honest(ceremony)
    assert stale["policy_hash"] == ceremony.bundle.hash and ceremony.bundle.version == 1
    message = refused(por_sign(ceremony, stale), "statement_policy_mismatch")
    assert f"the newest this signer verified is version 2, {v2.hash}" in message
    current = copy.deepcopy(stale)
    current["policy_hash"] = v2.hash
    assert "signed statement" in por_sign(ceremony, current, ok=True).output


def test_an_owner_with_no_verified_policy_signs_nothing(ceremony):
    (ceremony.states[1] / "policy.json").unlink()
    message = refused(por_sign(ceremony, honest(ceremony), who=1), "statement_policy_mismatch")
    assert "has verified no policy bundle yet" in message


def test_a_statement_listing_an_owner_twice_is_refused(ceremony):
    """[o1, o2, o3, o1] would pass a set comparison and show the 2-of-3 Safe as "2 of 4"."""
    c = honest(ceremony)
    safe = next(w for w in c["wallets"] if w["kind"] == "safe")
    safe["owners"] = safe["owners"] + [safe["owners"][0]]
    assert "duplicate owner" in refused(por_sign(ceremony, c), "statement_invalid")


def split_claims(ceremony: Ceremony, leaves: int) -> dict[str, Any]:
    """A format 3 statement (leaf privacy): 5 accounts cut into ``leaves`` pieces in a tree of height 4."""
    c = honest(ceremony)
    c["liabilities"] = {**c["liabilities"], "height": 4, "leaves": leaves}
    return c


def test_an_honest_split_statement_is_shown_with_its_pieces_and_signed(ceremony):
    result = por_sign(ceremony, split_claims(ceremony, 12), ok=True)
    assert "accounts     5 in 12 leaves (Merkle sum tree root" in result.output
    assert "signed statement" in result.output


def test_a_split_statement_with_fewer_than_two_pieces_an_account_is_refused(ceremony):
    """A host claiming leaf privacy over a tree that cannot have it (5 accounts in 9 leaves: one account in a
    single leaf, which every neighbour's proof would show whole) gets no signature."""
    message = refused(por_sign(ceremony, split_claims(ceremony, 9)), "statement_invalid")
    assert "claims.liabilities.leaves" in message and "must be between 10 and 16" in message


def test_a_split_statement_with_more_pieces_than_leaves_is_refused(ceremony):
    message = refused(por_sign(ceremony, split_claims(ceremony, 17)), "statement_invalid")
    assert "must be between 10 and 16" in message
