"""The canonical Safe 1.4.1 contracts, as constants, and the offline derivation of a Safe's address.

The signer trusts no contract address the online host names. The four contracts a cold wallet uses are
fixed here: they are the addresses the Safe singleton factory (0x914d…43d7, salt 0) gives the published 1.4.1
build on every EVM chain, development chains included (the tests and the demo deploy them the same way).

A Safe proxy made by the canonical factory's ``createProxyWithNonce(singleton, initializer, salt_nonce)``
lives at a CREATE2 address that commits to everything its ``setup`` was called with:

    initializer = setup(owners, threshold, to=0, data="", fallbackHandler=FALLBACK_HANDLER,
                        paymentToken=0, payment=0, paymentReceiver=0)            ABI-encoded with its selector
    salt        = keccak(keccak(initializer) ‖ salt_nonce as uint256)
    init_code   = PROXY_CREATION_CODE ‖ SINGLETON as uint256
    address     = keccak(0xff ‖ PROXY_FACTORY ‖ salt ‖ keccak(init_code))[12:]

So if ``safe_address(owners, threshold, salt_nonce)`` equals the pinned Safe, that Safe was set up with exactly
those owners (in that order), that threshold, the canonical fallback handler, no modules (``to`` is zero, so
no module-enabling delegatecall ran) and no guard (a fresh Safe has none). Changing any of them later takes a
Safe transaction that calls the Safe itself, which the signer never signs.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

from signer.safetx import ZERO_ADDRESS, address_bytes, address_word, word

SINGLETON = "0x41675C099F32341bf84BFc5382aF534df5C7461a"
PROXY_FACTORY = "0x4e1DCf7AD4e460CfD30791CCC4F9c8a4f820ec67"
FALLBACK_HANDLER = "0xfd0732Dc9E303f09fCEf3a7388Ad10A83459Ec99"
MULTISEND_CALL_ONLY = "0x9641d764fc13c8B624c04430C7356C1C7C8102e2"
# The Safe singleton factory that deployed the four above (salt 0) on every chain.
SINGLETON_FACTORY = "0x914d7Fec6aaC8cd542e72Bca78B30650d45643d7"

# SafeProxy's creation code in Safe 1.4.1 (SafeProxyFactory.proxyCreationCode()).
PROXY_CREATION_CODE = bytes.fromhex(
    "608060405234801561001057600080fd5b506040516101e63803806101e68339818101604052602081101561003357600080fd5b"
    "8101908080519060200190929190505050600073ffffffffffffffffffffffffffffffffffffffff168173ffffffffffffffff"
    "ffffffffffffffffffffffff1614156100ca576040517f08c379a0000000000000000000000000000000000000000000000000"
    "0000000081526004018080602001828103825260228152602001806101c46022913960400191505060405180910390fd5b8060"
    "00806101000a81548173ffffffffffffffffffffffffffffffffffffffff021916908373ffffffffffffffffffffffffffffff"
    "ffffffffff1602179055505060ab806101196000396000f3fe608060405273ffffffffffffffffffffffffffffffffffffffff"
    "600054167fa619486e0000000000000000000000000000000000000000000000000000000060003514156050578060005260"
    "206000f35b3660008037600080366000845af43d6000803e60008114156070573d6000fd5b3d6000f3fea264697066735822"
    "122003d1488ee65e08fa41e58e888a9865554c535f2c77126a82cb4c0f917f31441364736f6c63430007060033496e76616c6964"
    "2073696e676c65746f6e20616464726573732070726f7669646564"
)
SETUP_SELECTOR = keccak(b"setup(address[],uint256,address,bytes,address,address,uint256,address)")[:4]
CREATE_PROXY_SELECTOR = keccak(b"createProxyWithNonce(address,bytes,uint256)")[:4]


def setup_data(owners: Sequence[str], threshold: int) -> bytes:
    """``setup`` calldata for a Safe with these owners and threshold, the canonical fallback handler and
    nothing else (no module call, no payment)."""
    head_words = 8
    owners_offset = head_words * 32
    data_offset = owners_offset + 32 * (1 + len(owners))
    head = (
        word(owners_offset)
        + word(threshold)
        + address_word(ZERO_ADDRESS)
        + word(data_offset)
        + address_word(FALLBACK_HANDLER)
        + address_word(ZERO_ADDRESS)
        + word(0)
        + address_word(ZERO_ADDRESS)
    )
    tail = word(len(owners)) + b"".join(address_word(o) for o in owners) + word(0)
    return SETUP_SELECTOR + head + tail


def create_proxy_data(owners: Sequence[str], threshold: int, salt_nonce: int) -> bytes:
    """The proxy factory call that creates this Safe (what the daemon sends)."""
    initializer = setup_data(owners, threshold)
    padded = initializer + bytes(-len(initializer) % 32)
    return (
        CREATE_PROXY_SELECTOR + address_word(SINGLETON) + word(96) + word(salt_nonce) + word(len(initializer)) + padded
    )


def safe_address(owners: Sequence[str], threshold: int, salt_nonce: int) -> str:
    """The address the canonical factory gives a Safe set up with exactly these owners and threshold."""
    salt = keccak(keccak(setup_data(owners, threshold)) + word(salt_nonce))
    init_code = PROXY_CREATION_CODE + address_word(SINGLETON)
    digest = keccak(b"\xff" + address_bytes(PROXY_FACTORY) + salt + keccak(init_code))
    return to_checksum_address(digest[12:])
