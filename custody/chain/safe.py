"""The Safe 1.4.1 contracts as the daemon uses them: create a Safe, read its owners, threshold and nonce, and
encode ``execTransaction``. Hashing and owner signatures live in ``signer.safetx``, shared with the signers.

Only the canonical 1.4.1 deployments are used, on every chain: their addresses, the factory call that creates
a Safe and the offline derivation of its address are ``signer.safecontracts``, the signers' own constants. A
development chain gets the same contracts at the same addresses (``custody/chain/devnode.py`` deploys them
through the Safe singleton factory); a chain without them is refused, never served from other addresses.
"""

from __future__ import annotations

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from custody.chain.ethereum import EthereumNode
from custody.errors import SafeError
from signer.safecontracts import FALLBACK_HANDLER, MULTISEND_CALL_ONLY, PROXY_FACTORY, SINGLETON
from signer.safetx import SafeTx

# What a cold wallet needs on its chain, by role.
CONTRACTS = {
    "Safe 1.4.1 singleton": SINGLETON,
    "SafeProxyFactory": PROXY_FACTORY,
    "CompatibilityFallbackHandler": FALLBACK_HANDLER,
    "MultiSendCallOnly": MULTISEND_CALL_ONLY,
}


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


EXEC_TRANSACTION = _selector(
    "execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)"
)
GET_OWNERS = _selector("getOwners()")
GET_THRESHOLD = _selector("getThreshold()")
NONCE = _selector("nonce()")
GET_TRANSACTION_HASH = _selector(
    "getTransactionHash(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,uint256)"
)


def check_contracts(node: EthereumNode) -> None:
    """Refuse a chain that lacks any of the canonical Safe 1.4.1 contracts: no other addresses are used."""
    for name, address in CONTRACTS.items():
        if not node.code(address):
            raise SafeError(
                f"the canonical {name} is not deployed on chain {node.chain_id} (no contract at {address}); "
                "the cold wallet uses only the canonical Safe 1.4.1 deployments: is this the right chain?"
            )


def predict_address(node: EthereumNode, sender: str, data: bytes) -> str:
    """The address the factory will give the proxy, by simulating the call (deterministic: CREATE2)."""
    (address,) = abi_decode(["address"], node.call(PROXY_FACTORY, data, sender=sender))
    return to_checksum_address(address)


def owners(node: EthereumNode, safe: str, block: int | str = "latest") -> list[str]:
    (found,) = abi_decode(["address[]"], node.call(safe, GET_OWNERS, block=block))
    return [to_checksum_address(a) for a in found]


def threshold(node: EthereumNode, safe: str, block: int | str = "latest") -> int:
    (value,) = abi_decode(["uint256"], node.call(safe, GET_THRESHOLD, block=block))
    return int(value)


def nonce(node: EthereumNode, safe: str) -> int:
    (value,) = abi_decode(["uint256"], node.call(safe, NONCE))
    return int(value)


def contract_transaction_hash(node: EthereumNode, safe: str, tx: SafeTx) -> bytes:
    """The Safe contract's own ``getTransactionHash``: an independent check of ``signer.safetx``."""
    data = GET_TRANSACTION_HASH + abi_encode([*SAFE_TX_TYPES, "uint256"], [*_fields(tx), tx.nonce])
    return node.call(safe, data)[:32]


def exec_transaction_call(tx: SafeTx, signatures: bytes) -> bytes:
    return EXEC_TRANSACTION + abi_encode([*SAFE_TX_TYPES, "bytes"], [*_fields(tx), signatures])


# The SafeTx fields in the order both getTransactionHash and execTransaction take them (then nonce or signatures).
SAFE_TX_TYPES = ["address", "uint256", "bytes", "uint8", "uint256", "uint256", "uint256", "address", "address"]


def _fields(tx: SafeTx) -> list[object]:
    return [
        tx.to,
        tx.value,
        tx.data,
        tx.operation,
        tx.safe_tx_gas,
        tx.base_gas,
        tx.gas_price,
        tx.gas_token,
        tx.refund_receiver,
    ]
