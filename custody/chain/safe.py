"""The Safe 1.4.1 contracts as the daemon uses them: create a Safe, read its owners, threshold and nonce, and
encode ``execTransaction``. Hashing and owner signatures live in ``signer.safetx``, shared with the signers.

On public chains the canonical 1.4.1 deployments are used; a development chain passes its own addresses
(``custody/chain/devnode.py`` deploys the same contracts from the pinned npm package's build artifacts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from custody.chain.ethereum import EthereumNode
from custody.errors import DaemonError
from signer.safetx import ZERO_ADDRESS, SafeTx


class SafeError(DaemonError):
    code, status = "safe_error", 502


class SafeDeployment(NamedTuple):
    """Where the Safe 1.4.1 contracts live on one chain."""

    singleton: str
    proxy_factory: str
    fallback_handler: str
    multisend_call_only: str

    def to_json(self) -> str:
        return json.dumps(self._asdict(), indent=2) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> SafeDeployment:
        try:
            data = json.loads(path.read_text())
            return cls(**{k: to_checksum_address(data[k]) for k in cls._fields})
        except (ValueError, KeyError, TypeError) as exc:
            raise SafeError(f"{path} is not a Safe deployment file: {exc}") from None


# The canonical Safe 1.4.1 deployments (safe-global/safe-deployments), the same address on every EVM chain.
CANONICAL_1_4_1 = SafeDeployment(
    singleton="0x41675C099F32341bf84BFc5382aF534df5C7461a",
    proxy_factory="0x4e1DCf7AD4e460CfD30791CCC4F9c8a4f820ec67",
    fallback_handler="0xfd0732Dc9E303f09fCEf3a7388Ad10A83459Ec99",
    multisend_call_only="0x9641d764fc13c8B624c04430C7356C1C7C8102e2",
)


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


SETUP = _selector("setup(address[],uint256,address,bytes,address,address,uint256,address)")
CREATE_PROXY = _selector("createProxyWithNonce(address,bytes,uint256)")
EXEC_TRANSACTION = _selector(
    "execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)"
)
GET_OWNERS = _selector("getOwners()")
GET_THRESHOLD = _selector("getThreshold()")
NONCE = _selector("nonce()")
GET_TRANSACTION_HASH = _selector(
    "getTransactionHash(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,uint256)"
)


def create_call(deployment: SafeDeployment, owners: list[str], threshold: int, salt: int) -> bytes:
    """Calldata for the proxy factory: a new Safe proxy, set up with these owners and threshold."""
    initializer = SETUP + abi_encode(
        ["address[]", "uint256", "address", "bytes", "address", "address", "uint256", "address"],
        [owners, threshold, ZERO_ADDRESS, b"", deployment.fallback_handler, ZERO_ADDRESS, 0, ZERO_ADDRESS],
    )
    return CREATE_PROXY + abi_encode(["address", "bytes", "uint256"], [deployment.singleton, initializer, salt])


def check_deployment(node: EthereumNode, deployment: SafeDeployment) -> None:
    for name, address in deployment._asdict().items():
        if not node.code(address):
            raise SafeError(f"no contract at {address} ({name}) on chain {node.chain_id}; is this the right chain?")


def predict_address(node: EthereumNode, sender: str, deployment: SafeDeployment, data: bytes) -> str:
    """The address the factory will give the proxy, by simulating the call (deterministic: CREATE2)."""
    (address,) = abi_decode(["address"], node.call(deployment.proxy_factory, data, sender=sender))
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
