"""A JSON-RPC client for bitcoind (Bitcoin Core or Knots 29 and newer).

Amounts come back as ``Decimal`` (the node writes BTC as JSON numbers with 8 decimals; a float would round
them) and ``Decimal`` parameters are sent as decimal strings, which the node accepts for every amount. The
caller turns them into integer satoshis at once.

The password goes only into the HTTP Authorization header: no error, log line or repr carries it.
"""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from custody.errors import BitcoinNodeError

RPC_WALLET_EXISTS, RPC_WALLET_LOADED = -4, -35
# bitcoind's name of each network (getblockchaininfo "chain"); testnet may be testnet3 or testnet4
NODE_CHAINS = {"mainnet": ("main",), "testnet": ("test", "testnet4"), "signet": ("signet",), "regtest": ("regtest",)}
# Addresses per branch a watch-only descriptor wallet derives up front; the node extends the range as they are used
RANGE_END = 999

# One client for every call of the process: httpx.post() would build a client, with its TLS context, per call
# (a quarter of a second each under load). No connection is kept alive: each call opens its own, as before, so a
# restarted node is never met through a stale connection.
_client: httpx.Client | None = None
_client_lock = threading.Lock()


def _http() -> httpx.Client:
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
        return _client


def _encode(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class BitcoinNode:
    """One node, and optionally one of its wallets (``/wallet/<name>``); ``call`` is one JSON-RPC 1.0 request."""

    def __init__(self, url: str, user: str, password: str, wallet: str | None = None, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self._password = password
        self.wallet = wallet
        self.timeout = timeout
        self._id = 0

    def __repr__(self) -> str:
        return f"BitcoinNode({self.url!r}, wallet={self.wallet!r})"

    def for_wallet(self, name: str) -> BitcoinNode:
        return BitcoinNode(self.url, self.user, self._password, wallet=name, timeout=self.timeout)

    @property
    def endpoint(self) -> str:
        if self.wallet is None:
            return self.url
        return f"{self.url}/wallet/{quote(self.wallet, safe='')}"

    def call(self, method: str, *params: Any) -> Any:
        """The method's result; a node error, a refused login, a timeout or no answer raise BitcoinNodeError."""
        self._id += 1
        body = json.dumps({"jsonrpc": "1.0", "id": self._id, "method": method, "params": list(params)}, default=_encode)
        where = f"bitcoind {method}" + (f" (wallet {self.wallet})" if self.wallet is not None else "")
        try:
            reply = _http().post(
                self.endpoint,
                content=body,
                headers={"Content-Type": "application/json"},
                auth=(self.user, self._password),
                timeout=self.timeout,
            )
        except httpx.TimeoutException:
            raise BitcoinNodeError(f"{where}: no answer from {self.url} in {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            # The exception's own text is left out: it is httpx's, and only the kind of failure matters here.
            raise BitcoinNodeError(f"{where}: {self.url} is unreachable ({type(exc).__name__})") from None
        if reply.status_code in (401, 403):
            raise BitcoinNodeError(f"{where}: the node refused the RPC login of user {self.user!r}")
        try:
            answer = json.loads(reply.text, parse_float=Decimal)
        except ValueError:
            raise BitcoinNodeError(f"{where}: HTTP {reply.status_code} without a JSON-RPC answer") from None
        if not isinstance(answer, dict):
            raise BitcoinNodeError(f"{where}: HTTP {reply.status_code} with a malformed JSON-RPC answer")
        error = answer.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
            raise BitcoinNodeError(
                f"{where}: {message} (code {code})",
                node_code=code if isinstance(code, int) else None,
                node_message=message,
            )
        if "result" not in answer:
            raise BitcoinNodeError(f"{where}: HTTP {reply.status_code} with neither a result nor an error")
        return answer["result"]


def open_wallet(node: BitcoinNode, name: str) -> BitcoinNode:
    """The watch-only wallet, loaded if the node has not loaded it (a node restarted without it)."""
    if name not in node.call("listwallets"):
        try:
            node.call("loadwallet", name)
        except BitcoinNodeError as exc:
            if exc.node_code != RPC_WALLET_LOADED:
                raise
    return node.for_wallet(name)


def in_mempool(node: BitcoinNode, txid: str) -> bool:
    """Whether the node's mempool holds ``txid`` (a node restarted, or one that evicted it, may not)."""
    try:
        node.call("getmempoolentry", txid)
    except BitcoinNodeError:
        return False
    return True
