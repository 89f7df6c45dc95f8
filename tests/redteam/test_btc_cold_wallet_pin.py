"""Pinning the Bitcoin cold wallet: the host writes the file, and everything in it is the host's word.

What the host would like the signers to pin: a descriptor where one of the treasury's keys is swapped for its
own (listed with the honest owners around it), a threshold of 1, keys of another network (coins sent to
addresses nobody on this network checks), a key listed twice (a "2 of 3" that one key satisfies). The signer
rebuilds the descriptor from the owners and threshold and checks every key, and the pin is a ceremony step
with a typed confirmation of the file's hash, recorded in the transcript.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from embit import bip32

from policies.canonical import canonical_bytes
from signer.btckeys import BitcoinKey, account_indexes
from signer.btcwallet import descriptor_text
from tests.redteam.conftest import DAEMON, Ceremony, refused
from tests.signer.btcfixtures import wallet_bytes

TPUB = bytes.fromhex("043587cf")


def keys(ceremony: Ceremony, network: str = "regtest") -> list[BitcoinKey]:
    field, path = ("bitcoin_xpub", "m/48h/0h/0h/2h") if network == "mainnet" else ("bitcoin_tpub", "m/48h/1h/0h/2h")
    return [BitcoinKey(op.card["fingerprint"], path, op.card[field]) for op in ceremony.operators]


def thief_key() -> BitcoinKey:
    account = bip32.HDKey.from_seed(bytes([0x66]) * 64).derive(account_indexes("regtest")).to_public()
    return BitcoinKey("66666666", "m/48h/1h/0h/2h", account.to_base58(version=TPUB))


def daemon() -> str:
    return DAEMON.verify_key.encode().hex()


def transcript(state: Path) -> list[dict[str, str]]:
    path = state / "transcript.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def pin(ceremony: Ceremony, raw: bytes, *extra: object, who: int = 0, stdin: str | None = None):
    path = ceremony.file(raw, "btc-cold-wallet.json")
    return ceremony.run("cold", "pin", path, *extra, who=who, stdin=stdin)


def test_the_honest_wallet_is_pinned_with_the_hash_typed(ceremony: Ceremony):
    raw = wallet_bytes(keys(ceremony), 2, daemon())
    digest = hashlib.sha256(raw).hexdigest()
    result = pin(ceremony, raw, "--keystore", ceremony.operators[0].keystore, stdin=digest[:8] + "\n")
    assert result.exit_code == 0, result.output
    assert (ceremony.states[0] / "btc-cold-wallet.json").read_bytes() == raw
    assert transcript(ceremony.states[0])[-1]["decision"] == "pinned"


def test_a_key_swapped_in_the_descriptor_only_is_refused(ceremony: Ceremony):
    """The owners list is the treasury's; the descriptor (what a node would watch and Core would sign for)
    carries the host's key in place of the third operator's."""
    honest = keys(ceremony)
    swapped = descriptor_text("regtest", 2, [*honest[:2], thief_key()])
    raw = wallet_bytes(honest, 2, daemon(), descriptor=swapped)
    refused(pin(ceremony, raw, "--yes"), "btc_descriptor_mismatch")
    assert not (ceremony.states[0] / "btc-cold-wallet.json").exists()
    assert transcript(ceremony.states[0])[-1]["decision"] == "refused: btc_descriptor_mismatch"


def test_a_threshold_lowered_in_the_descriptor_only_is_refused(ceremony: Ceremony):
    raw = wallet_bytes(keys(ceremony), 2, daemon(), descriptor=descriptor_text("regtest", 1, keys(ceremony)))
    refused(pin(ceremony, raw, "--yes"), "btc_descriptor_mismatch")


def test_a_descriptor_with_a_forged_checksum_is_refused(ceremony: Ceremony):
    honest = descriptor_text("regtest", 2, keys(ceremony))
    body = honest.split("#")[0].replace("sortedmulti(2,", "sortedmulti(1,")
    raw = wallet_bytes(keys(ceremony), 2, daemon(), descriptor=f"{body}#{honest.split('#')[1]}")
    refused(pin(ceremony, raw, "--yes"), "btc_descriptor_mismatch")


def test_mainnet_keys_in_a_regtest_wallet_are_refused(ceremony: Ceremony):
    mainnet = [BitcoinKey(k.fingerprint, "m/48h/1h/0h/2h", k.xpub) for k in keys(ceremony, "mainnet")]
    doc = json.loads(wallet_bytes(keys(ceremony), 2, daemon()))
    doc["owners"] = [{"name": f"op{i}", **vars_of(k)} for i, k in enumerate(mainnet)]
    refused(pin(ceremony, canonical_bytes(doc), "--yes"), "btc_cold_wallet_invalid")


def vars_of(k: BitcoinKey) -> dict[str, str]:
    return {"fingerprint": k.fingerprint, "path": k.path, "xpub": k.xpub}


def test_another_path_a_key_twice_or_a_threshold_out_of_range_is_refused(ceremony: Ceremony):
    honest = keys(ceremony)
    other_path = [BitcoinKey(honest[0].fingerprint, "m/48h/1h/0h/1h", honest[0].xpub), *honest[1:]]
    for doc_keys, threshold in ((other_path, 2), ([honest[0], honest[0], honest[1]], 2), (honest, 0), (honest, 4)):
        doc = json.loads(wallet_bytes(honest, 2, daemon()))
        doc["owners"] = [{"name": f"op{i}", **vars_of(k)} for i, k in enumerate(doc_keys)]
        doc["threshold"] = threshold
        refused(pin(ceremony, canonical_bytes(doc), "--yes"), "btc_cold_wallet_invalid")


def test_a_wallet_without_this_operators_key_is_not_pinned_with_keystore(ceremony: Ceremony):
    raw = wallet_bytes([*keys(ceremony)[:2], thief_key()], 2, daemon())
    result = pin(ceremony, raw, "--yes", "--keystore", ceremony.operators[2].keystore, who=2)
    assert "is not an owner of this wallet" in refused(result, "signer_error")
    assert not (ceremony.states[2] / "btc-cold-wallet.json").exists()


def test_a_file_swapped_before_pinning_is_caught_by_the_typed_hash(ceremony: Ceremony):
    """The operators compared the honest file's hash; the host hands this signer another valid file (its own
    key in place of the third operator's, listed under the same name)."""
    honest = wallet_bytes(keys(ceremony), 2, daemon())
    swapped = wallet_bytes([*keys(ceremony)[:2], thief_key()], 2, daemon())
    result = pin(ceremony, swapped, stdin=hashlib.sha256(honest).hexdigest()[:8] + "\n")
    refused(result, "confirmation_declined")
    assert not (ceremony.states[0] / "btc-cold-wallet.json").exists()
    assert transcript(ceremony.states[0])[-1]["decision"] == "declined"


def test_a_second_different_wallet_is_refused_after_a_pin(ceremony: Ceremony):
    assert pin(ceremony, wallet_bytes(keys(ceremony), 2, daemon()), "--yes").exit_code == 0
    refused(pin(ceremony, wallet_bytes(keys(ceremony), 3, daemon()), "--yes"), "signer_state")
