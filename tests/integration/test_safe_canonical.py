"""The canonical Safe 1.4.1 contracts on anvil, and the signer's offline derivation of a Safe's address checked
against the real factory: the address it derives is the one the chain gives, and nothing else is."""

from __future__ import annotations

import json

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils.crypto import keccak

from custody.chain import safe as safe_contract
from custody.chain.devnode import (
    CANONICAL_ARTIFACTS,
    FUNDER_ADDRESS,
    SAFE_ARTIFACTS,
    SINGLETON_FACTORY_CODE,
    Anvil,
    deploy_safe_contracts,
)
from custody.chain.ethereum import EthereumNode
from signer.safecontracts import (
    FALLBACK_HANDLER,
    MULTISEND_CALL_ONLY,
    PROXY_CREATION_CODE,
    PROXY_FACTORY,
    SINGLETON,
    SINGLETON_FACTORY,
    create_proxy_data,
    safe_address,
)
from signer.safetx import ZERO_ADDRESS

DETERMINISTIC_DEPLOYMENT_PROXY = "0x4e59b44847b379578588920cA78FbF26c0B4956C"
# Safe 1.4.1's storage slots for the fallback handler and the guard (FallbackManager, GuardManager).
FALLBACK_HANDLER_SLOT = keccak(text="fallback_manager.handler.address")
GUARD_SLOT = keccak(text="guard_manager.guard.address")
SENTINEL = "0x0000000000000000000000000000000000000001"
GET_MODULES = keccak(text="getModulesPaginated(address,uint256)")[:4]
OWNERS = [Account.from_key(bytes([0x50 + i]) * 32).address for i in range(5)]
CASES = [
    (OWNERS[:3], 2, 0),
    (OWNERS[:3][::-1], 2, 0),  # the same owners in another order: another Safe
    (OWNERS[:3], 3, 0),
    (OWNERS[:3], 2, 1),
    (OWNERS[:1], 1, 2**256 - 1),
    (OWNERS, 3, 123456789),
]


@pytest.fixture(scope="module")
def anvil():
    with Anvil() as node:
        yield node


def _mine(anvil: Anvil, to: str, data: bytes) -> None:
    tx = {"from": FUNDER_ADDRESS, "to": to, "data": "0x" + data.hex(), "gas": hex(3_000_000)}
    receipt = anvil.rpc("eth_getTransactionReceipt", anvil.rpc("eth_sendTransaction", tx))
    assert receipt is not None and int(receipt["status"], 16) == 1  # anvil mines on submission


def _word_address(anvil: Anvil, address: str, slot: bytes) -> str:
    value = bytes.fromhex(anvil.rpc("eth_getStorageAt", address, "0x" + slot.hex(), "latest")[2:])
    return "0x" + value[-20:].hex()


def test_the_contracts_go_to_their_canonical_addresses_through_the_singleton_factory():
    with Anvil() as anvil:
        _deploy_on_a_fresh_chain(anvil)


def _deploy_on_a_fresh_chain(anvil: Anvil) -> None:
    node = EthereumNode(anvil.url, 31337)
    # the singleton factory is the same contract as the deterministic deployment proxy anvil has from genesis
    assert anvil.rpc("eth_getCode", DETERMINISTIC_DEPLOYMENT_PROXY, "latest") == SINGLETON_FACTORY_CODE
    with pytest.raises(safe_contract.SafeError, match=r"canonical Safe 1\.4\.1 singleton is not deployed on chain"):
        safe_contract.check_contracts(node)  # the daemon refuses a chain without them

    contracts = deploy_safe_contracts(anvil)
    assert contracts == {
        "singleton": SINGLETON,
        "proxy_factory": PROXY_FACTORY,
        "fallback_handler": FALLBACK_HANDLER,
        "multisend_call_only": MULTISEND_CALL_ONLY,
    }
    for address, artifact in CANONICAL_ARTIFACTS.values():
        built = json.loads((SAFE_ARTIFACTS / artifact).read_text())["deployedBytecode"]
        assert anvil.rpc("eth_getCode", address, "latest") == built, artifact
    assert anvil.rpc("eth_getCode", SINGLETON_FACTORY, "latest") == SINGLETON_FACTORY_CODE
    block = anvil.rpc("eth_blockNumber")
    assert deploy_safe_contracts(anvil) == contracts  # idempotent: nothing is sent again
    assert anvil.rpc("eth_blockNumber") == block
    safe_contract.check_contracts(node)
    # the proxy's creation code the signer hashes is the factory's own
    (code,) = abi_decode(["bytes"], node.call(PROXY_FACTORY, keccak(text="proxyCreationCode()")[:4]))
    assert code == PROXY_CREATION_CODE


@pytest.mark.parametrize("owners, threshold, salt_nonce", CASES)
def test_the_factory_creates_each_safe_at_the_address_the_signer_derives_offline(anvil, owners, threshold, salt_nonce):
    deploy_safe_contracts(anvil)
    node = EthereumNode(anvil.url, 31337)
    derived = safe_address(owners, threshold, salt_nonce)
    data = create_proxy_data(owners, threshold, salt_nonce)
    assert safe_contract.predict_address(node, FUNDER_ADDRESS, data) == derived
    assert not node.code(derived)
    _mine(anvil, PROXY_FACTORY, data)
    assert node.code(derived)
    # what the address commits to, read back from the real Safe
    assert safe_contract.owners(node, derived) == owners  # in setup order
    assert safe_contract.threshold(node, derived) == threshold
    assert _word_address(anvil, derived, bytes(32)).lower() == SINGLETON.lower()
    assert _word_address(anvil, derived, FALLBACK_HANDLER_SLOT).lower() == FALLBACK_HANDLER.lower()
    assert _word_address(anvil, derived, GUARD_SLOT) == ZERO_ADDRESS
    paginated = keccak(text="getModulesPaginated(address,uint256)")[:4] + abi_encode(
        ["address", "uint256"], [SENTINEL, 10]
    )
    modules, _ = abi_decode(["address[]", "address"], node.call(derived, paginated))
    assert list(modules) == []


def test_one_encoding_of_the_factory_call_and_it_agrees_with_eth_abi():
    """``signer.safecontracts`` encodes the factory call by hand (the signer takes no eth_abi); eth_abi, an
    independent implementation, must produce the same bytes."""
    setup = keccak(text="setup(address[],uint256,address,bytes,address,address,uint256,address)")[:4]
    create = keccak(text="createProxyWithNonce(address,bytes,uint256)")[:4]
    for owners, threshold, salt_nonce in CASES:
        initializer = setup + abi_encode(
            ["address[]", "uint256", "address", "bytes", "address", "address", "uint256", "address"],
            [owners, threshold, ZERO_ADDRESS, b"", FALLBACK_HANDLER, ZERO_ADDRESS, 0, ZERO_ADDRESS],
        )
        expected = create + abi_encode(["address", "bytes", "uint256"], [SINGLETON, initializer, salt_nonce])
        assert create_proxy_data(owners, threshold, salt_nonce) == expected
    assert len({safe_address(*case) for case in CASES}) == len(CASES)  # each one commits to all three
