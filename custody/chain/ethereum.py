"""The Ethereum adapter on web3.py: the only place in the daemon that talks to the node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from web3 import Web3
from web3.exceptions import BlockNotFound, ContractLogicError, TransactionNotFound, Web3RPCError

from custody.errors import BroadcastRefused, CallReverted, ChainMismatch, NodeUnavailable

GWEI = 10**9
FALLBACK_GAS = 120_000
BALANCE_OF_SELECTOR = keccak(text="balanceOf(address)")[:4]


# What ``send_raw`` found: the node took the bytes now, had them already, or that nonce is used on chain.
SENT, ALREADY_KNOWN, NONCE_USED = "sent", "known", "nonce_used"


@dataclass(frozen=True)
class Receipt:
    block_number: int
    block_hash: str
    success: bool


class EthereumNode:
    def __init__(self, url: str, chain_id: int, timeout: float = 10.0) -> None:
        self.url, self.chain_id = url, chain_id
        self.w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}))

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (Web3RPCError, TransactionNotFound, BlockNotFound, ValueError, ContractLogicError):
            raise
        except Exception as exc:  # connection refused, timeouts, bad gateway: the node is not there
            raise NodeUnavailable(f"the node at {self.url} is unreachable: {type(exc).__name__}") from None

    def check_chain(self) -> None:
        actual = self._call(lambda: self.w3.eth.chain_id)
        if actual != self.chain_id:
            raise ChainMismatch(f"the node is on chain {actual}, the configuration says {self.chain_id}")

    def block_number(self) -> int:
        return int(self._call(lambda: self.w3.eth.block_number))

    def block_hash(self, number: int) -> str | None:
        """The hash of the canonical block at ``number``; None only when the node has no block there (the chain
        is shorter). A node that answers with an error raises ``NodeUnavailable``: a missing answer is not
        evidence that a block left the chain."""
        try:
            block = self._call(self.w3.eth.get_block, number)
        except BlockNotFound:
            return None
        except (Web3RPCError, ValueError) as exc:
            raise NodeUnavailable(f"the node at {self.url} could not give block {number}: {str(exc)[:160]}") from None
        return "0x" + bytes(block["hash"]).hex()

    def head(self) -> tuple[int, str]:
        """The latest block's number and hash."""
        block = self._call(self.w3.eth.get_block, "latest")
        return int(block["number"]), "0x" + bytes(block["hash"]).hex()

    def fees(self, cap: int) -> tuple[int, int]:
        """(max fee, priority fee) per gas for the next block: twice the next base fee plus the median
        recent tip (at least 1 gwei), never above ``cap``."""
        history = self._call(self.w3.eth.fee_history, 5, "latest", [50])
        base = int(history["baseFeePerGas"][-1])
        tips = sorted(int(r[0]) for r in history.get("reward", []) if r)
        priority = max(tips[len(tips) // 2] if tips else 0, GWEI)
        max_fee = min(2 * base + priority, cap)
        return max_fee, min(priority, max_fee)

    def estimate_gas(self, sender: str, to: str, value: int, data: bytes) -> int:
        """The node's estimate plus 20 % headroom. If the call would revert now, a fixed limit instead: the
        payment is still sent, so it reaches a final state on chain (failed, with its block) rather than
        blocking every later nonce of the wallet."""
        tx = {"from": sender, "to": to, "value": value, "data": data}
        try:
            return int(self._call(self.w3.eth.estimate_gas, tx)) * 6 // 5
        except (Web3RPCError, ValueError, ContractLogicError):
            return FALLBACK_GAS if data else 21_000

    def transaction_count(self, address: str, block: int | str = "latest") -> int:
        return int(self._call(self.w3.eth.get_transaction_count, address, block))

    def send_raw(self, raw: bytes) -> str:
        """Broadcast; a node that already has it, or has already mined that nonce, is not an error here:
        the receipt decides what happened. Returns SENT, ALREADY_KNOWN or NONCE_USED."""
        try:
            self._call(self.w3.eth.send_raw_transaction, raw)
        except (Web3RPCError, ValueError) as exc:
            text = str(exc).lower()
            if "already known" in text or "already imported" in text:
                return ALREADY_KNOWN
            if "nonce too low" in text:
                return NONCE_USED
            raise BroadcastRefused(f"the node refused the transaction: {str(exc)[:200]}") from None
        return SENT

    def knows(self, tx_hash: str) -> bool:
        """Whether the node has this transaction at all, in its mempool or in a block
        (eth_getTransactionByHash is not null). A node restarted without its mempool has forgotten what was
        waiting there."""
        try:
            found = self._call(self.w3.eth.get_transaction, tx_hash)
        except TransactionNotFound:
            return False
        return found is not None

    def receipt(self, tx_hash: str) -> Receipt | None:
        try:
            r = self._call(self.w3.eth.get_transaction_receipt, tx_hash)
        except TransactionNotFound:
            return None
        if r is None:
            return None
        return Receipt(int(r["blockNumber"]), "0x" + bytes(r["blockHash"]).hex(), int(r["status"]) == 1)

    def balance(self, address: str, contract: str | None, block: int | str = "latest") -> int:
        if contract is None:
            return int(self._call(self.w3.eth.get_balance, address, block))
        data = BALANCE_OF_SELECTOR + abi_encode(["address"], [address])
        out = self._call(self.w3.eth.call, {"to": contract, "data": data}, block)
        return int.from_bytes(bytes(out)[:32], "big")

    def call(self, to: str, data: bytes, *, sender: str | None = None, block: int | str = "latest") -> bytes:
        """eth_call; a revert raises ``CallReverted``."""
        tx: dict[str, Any] = {"to": to, "data": data}
        if sender is not None:
            tx["from"] = sender
        try:
            return bytes(self._call(self.w3.eth.call, tx, block))
        except (Web3RPCError, ValueError, ContractLogicError) as exc:
            raise CallReverted(f"call to {to} reverted: {str(exc)[:200]}") from None

    def code(self, address: str) -> bytes:
        return bytes(self._call(self.w3.eth.get_code, address))

    def logs(self, address: str, topics: list[str | None], from_block: int = 0) -> list[int]:
        """Block numbers of the logs ``address`` emitted matching ``topics`` (hex), oldest first."""
        found = self._call(
            self.w3.eth.get_logs, {"address": address, "topics": topics, "fromBlock": from_block, "toBlock": "latest"}
        )
        return [int(entry["blockNumber"]) for entry in found]
