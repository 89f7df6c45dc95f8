"""A local bitcoind -regtest for development, the demo and the tests.

Never used against a real network: it starts bitcoind with its RPC on a free 127.0.0.1 port (no P2P), a fresh
data directory and a random RPC login, and stops it after. The binary is the one ``scripts/fetch-bitcoind.sh`` puts at
.tools/bin/bitcoind (``make test`` runs it), else a ``bitcoind`` on PATH.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from custody.chain.bitcoin import BitcoinNode
from custody.chain.devnode import free_port
from custody.errors import BitcoinNodeError, DaemonError

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BITCOIND = ROOT / ".tools" / "bin" / "bitcoind"
# The node's answer while it loads its block index and wallets: wait, it is coming up.
RPC_IN_WARMUP = -28
FAUCET = "faucet"


def find_bitcoind() -> Path | None:
    if TOOLS_BITCOIND.exists():
        return TOOLS_BITCOIND
    found = shutil.which("bitcoind")
    return Path(found) if found else None


class Regtest:
    """One bitcoind -regtest process with a ``faucet`` wallet that holds the mined coins."""

    def __init__(self, datadir: Path | None = None) -> None:
        binary = find_bitcoind()
        if binary is None:
            raise DaemonError("bitcoind is not installed: run `make test` (it fetches bitcoind)")
        self.binary = binary
        self._own_datadir = datadir is None
        self.datadir = datadir if datadir is not None else Path(tempfile.mkdtemp(prefix="custody-regtest-"))
        self.rpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.rpc_port}"
        self.user = "custody-" + secrets.token_hex(4)
        self.password = secrets.token_urlsafe(24)
        self.process: subprocess.Popen[bytes] | None = None
        self._faucet_address: str | None = None

    def _write_conf(self) -> Path:
        # A config file rather than arguments: the password stays out of the process list.
        conf = self.datadir / "bitcoin.conf"
        lines = [
            "regtest=1",
            "server=1",
            "txindex=1",
            "fallbackfee=0.0002",
            # Knots defaults to legacy addresses; the tests and the demo want what Bitcoin Core gives.
            "addresstype=bech32",
            "changetype=bech32",
            "listen=0",
            "dnsseed=0",
            "fixedseeds=0",
            "discover=0",
            "printtoconsole=0",
            "rpcworkqueue=64",
            "[regtest]",
            f"rpcport={self.rpc_port}",
            "rpcbind=127.0.0.1",
            "rpcallowip=127.0.0.1",
            f"rpcuser={self.user}",
            f"rpcpassword={self.password}",
        ]
        conf.touch(mode=0o600)
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 60) -> Regtest:
        conf = self._write_conf()
        args = [str(self.binary), f"-datadir={self.datadir}", f"-conf={conf}"]
        # A file, not a pipe: a pipe nobody reads could fill and stall the node.
        stderr = self.datadir / "stderr.log"
        with stderr.open("wb") as err_file:
            # the binary is the project's own fetched bitcoind (or the one on PATH), the arguments are ours
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err_file)  # noqa: S603
        node = self.node()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = stderr.read_text(errors="replace").strip()[-500:]
                self.stop()
                raise DaemonError(f"bitcoind exited at start: {err}")
            try:
                node.call("getblockchaininfo")
                break
            except BitcoinNodeError as exc:
                if exc.node_code not in (None, RPC_IN_WARMUP):
                    self.stop()
                    raise
                time.sleep(0.1)
        else:
            self.stop()
            raise DaemonError(f"bitcoind did not answer RPC in {timeout:g} s")
        return self

    def stop(self) -> None:
        if self.process is not None:
            try:
                self.node().call("stop")
                self.process.wait(30)
            except (BitcoinNodeError, subprocess.TimeoutExpired):
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            self.process = None
        if self._own_datadir:
            shutil.rmtree(self.datadir, ignore_errors=True)

    def __enter__(self) -> Regtest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def node(self, wallet: str | None = None) -> BitcoinNode:
        return BitcoinNode(self.url, self.user, self.password, wallet=wallet)

    def faucet(self) -> BitcoinNode:
        """The wallet the blocks are mined to by default, created with 101 blocks on first use."""
        wallet = self.node(FAUCET)
        if self._faucet_address is None:
            self.node().call("createwallet", FAUCET)
            self._faucet_address = str(wallet.call("getnewaddress", "mining", "bech32"))
            self.mine(101)
        return wallet

    def mine(self, blocks: int, address: str | None = None) -> list[str]:
        if address is None:
            self.faucet()
            address = self._faucet_address
        return [str(h) for h in self.node().call("generatetoaddress", blocks, address)]

    def funded_wallet(self, name: str, amount: Decimal = Decimal(10), coins: int = 1) -> BitcoinNode:
        """A new descriptor wallet holding ``coins`` confirmed outputs of ``amount`` BTC each."""
        self.node().call("createwallet", name)
        wallet = self.node(name)
        faucet = self.faucet()
        for _ in range(coins):
            faucet.call("sendtoaddress", str(wallet.call("getnewaddress")), amount)
        self.mine(1)
        return wallet
