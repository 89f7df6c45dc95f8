"""The pieces of a Bitcoin cold wallet, on the real bitcoind -regtest: a watch-only wallet of the BIP-48 2-of-3
multipath descriptor, a PSBT it funds (two payees, RBF, change on branch 1), signatures by two of the three
keys (one by a node wallet holding that key, one by embit, as the air-gapped signer would), combined,
finalized, accepted by the mempool, broadcast and confirmed. And the client's errors."""

from __future__ import annotations

from decimal import Decimal

import pytest
from embit.bip32 import HDKey
from embit.descriptor import Descriptor
from embit.networks import NETWORKS
from embit.psbt import PSBT

from custody.chain.bitcoin import BitcoinNode
from custody.chain.bitcoindev import Regtest
from custody.chain.devnode import free_port
from custody.errors import BitcoinNodeError

NET = NETWORKS["regtest"]
ACCOUNT = "48h/1h/0h/2h"
SEEDS = [bytes([i + 1]) * 32 for i in range(3)]
RBF_MAX_SEQUENCE = 0xFFFFFFFD


def _roots() -> list[HDKey]:
    return [HDKey.from_seed(seed, version=NET["xprv"]) for seed in SEEDS]


def _key(root: HDKey, private: bool = False) -> str:
    account = root.derive(f"m/{ACCOUNT}")
    encoded = account.to_base58() if private else account.to_public().to_base58(version=NET["xpub"])
    return f"[{root.my_fingerprint.hex()}/{ACCOUNT}]{encoded}/<0;1>/*"


def _descriptor(roots: list[HDKey], private: int | None = None) -> str:
    """wsh(sortedmulti(2, …)) of the three account keys, with key ``private`` as its tprv."""
    keys = ",".join(_key(root, i == private) for i, root in enumerate(roots))
    return f"wsh(sortedmulti(2,{keys}))"


def _with_checksum(node: BitcoinNode, descriptor: str) -> str:
    # For a multipath descriptor, getdescriptorinfo's "descriptor" is its first expansion only (branch 0);
    # its "checksum" is the one of the text given, so that is what to append.
    return f"{descriptor}#{node.call('getdescriptorinfo', descriptor)['checksum']}"


def test_a_2_of_3_multipath_watch_only_wallet_pays_with_a_psbt_signed_by_two_keys(bitcoind: Regtest) -> None:
    node = bitcoind.node()
    roots = _roots()
    watch_text = _descriptor(roots)
    watch_desc = _with_checksum(node, watch_text)

    # createwallet name disable_private_keys blank passphrase avoid_reuse descriptors
    node.call("createwallet", "cold-watch", True, True, "", False, True)
    cold = bitcoind.node("cold-watch")
    imported = cold.call("importdescriptors", [{"desc": watch_desc, "timestamp": "now", "active": True}])
    assert imported[0]["success"] is True
    # Bitcoin Core 29 takes the <0;1> form whole: it becomes the receive (branch 0) and change (branch 1) pair.
    listed = {d["internal"]: d["desc"] for d in cold.call("listdescriptors")["descriptors"]}
    assert set(listed) == {False, True}
    assert "/0/*" in listed[False] and "/1/*" in listed[True]

    address = cold.call("getnewaddress", "", "bech32")
    assert address == Descriptor.from_string(watch_text).derive(0, branch_index=0).address(NET)

    payer = bitcoind.funded_wallet("cold-payer")
    payer.call("sendtoaddress", address, Decimal("3"))
    bitcoind.mine(1)
    assert cold.call("getbalances")["mine"]["trusted"] == Decimal("3.00000000")

    payee1 = payer.call("getnewaddress", "", "bech32")
    payee2 = payer.call("getnewaddress", "", "bech32m")
    funded = cold.call(
        "walletcreatefundedpsbt",
        [],
        [{payee1: Decimal("1.5")}, {payee2: Decimal("0.25")}],
        0,
        {"replaceable": True, "fee_rate": 5},
        True,
    )
    decoded = node.call("decodepsbt", funded["psbt"])
    assert all(i["sequence"] <= RBF_MAX_SEQUENCE for i in decoded["tx"]["vin"])
    for psbt_input in decoded["inputs"]:
        assert "non_witness_utxo" in psbt_input and "witness_utxo" in psbt_input
        assert len(psbt_input["bip32_derivs"]) == 3
    change = decoded["outputs"][funded["changepos"]]
    assert {d["path"] for d in change["bip32_derivs"]} == {f"m/{ACCOUNT}/1/0"}
    paid = {o["scriptPubKey"]["address"]: o["value"] for o in decoded["tx"]["vout"]}
    assert paid[payee1] == Decimal("1.5") and paid[payee2] == Decimal("0.25")

    # Owner 0 signs in a node wallet that holds its key (not active: it only signs).
    node.call("createwallet", "cold-key0", False, True, "", False, True)
    key0 = bitcoind.node("cold-key0")
    private_desc = _with_checksum(node, _descriptor(roots, private=0))
    assert key0.call("importdescriptors", [{"desc": private_desc, "timestamp": "now"}])[0]["success"] is True
    # walletprocesspsbt psbt sign sighashtype bip32derivs finalize
    signed0 = key0.call("walletprocesspsbt", funded["psbt"], True, "ALL", True, False)
    assert signed0["complete"] is False

    # Owner 1 signs with embit, from the unsigned PSBT, as the air-gapped signer does.
    psbt = PSBT.from_string(funded["psbt"])
    assert psbt.sign_with(roots[1]) == len(psbt.inputs)
    signed1 = psbt.to_string()

    combined = node.call("combinepsbt", [signed0["psbt"], signed1])
    final = node.call("finalizepsbt", combined)
    assert final["complete"] is True
    accepted = node.call("testmempoolaccept", [final["hex"]])[0]
    assert accepted["allowed"] is True, accepted
    txid = node.call("sendrawtransaction", final["hex"])
    assert txid == decoded["tx"]["txid"]
    bitcoind.mine(1)
    assert cold.call("gettransaction", txid)["confirmations"] == 1
    assert payer.call("getreceivedbyaddress", payee1) == Decimal("1.5")


def test_one_signature_does_not_finalize(bitcoind: Regtest) -> None:
    node = bitcoind.node()
    roots = _roots()
    node.call("createwallet", "cold-watch-1sig", True, True, "", False, True)
    cold = bitcoind.node("cold-watch-1sig")
    desc = _with_checksum(node, _descriptor(roots))
    cold.call("importdescriptors", [{"desc": desc, "timestamp": "now", "active": True}])
    payer = bitcoind.funded_wallet("cold-payer-1sig")
    payer.call("sendtoaddress", cold.call("getnewaddress", "", "bech32"), Decimal("1"))
    bitcoind.mine(1)
    funded = cold.call("walletcreatefundedpsbt", [], [{payer.call("getnewaddress"): Decimal("0.5")}], 0, {}, True)
    psbt = PSBT.from_string(funded["psbt"])
    psbt.sign_with(roots[2])
    assert node.call("finalizepsbt", psbt.to_string())["complete"] is False


def test_a_wrong_password_is_refused_without_the_password_in_the_error(bitcoind: Regtest) -> None:
    wrong = "not-" + bitcoind.password
    with pytest.raises(BitcoinNodeError) as refused:
        BitcoinNode(bitcoind.url, bitcoind.user, wrong).call("getblockcount")
    assert refused.value.code == "bitcoin_node_error"
    assert refused.value.node_code is None
    for text in (str(refused.value), repr(refused.value), refused.value.message):
        assert wrong not in text and bitcoind.password not in text


def test_a_node_error_carries_the_node_code_and_message(bitcoind: Regtest) -> None:
    with pytest.raises(BitcoinNodeError) as refused:
        bitcoind.node().call("getblock", "00" * 32)
    assert refused.value.node_code == -5
    assert refused.value.node_message == "Block not found"
    with pytest.raises(BitcoinNodeError) as missing:
        bitcoind.node("no-such-wallet").call("getbalances")
    assert missing.value.node_code == -18


def test_an_unreachable_node_is_a_node_error(bitcoind: Regtest) -> None:
    with pytest.raises(BitcoinNodeError, match="unreachable"):
        nowhere = BitcoinNode(f"http://127.0.0.1:{free_port()}", bitcoind.user, bitcoind.password, timeout=2)
        nowhere.call("getblockcount")
