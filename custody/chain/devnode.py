"""A local anvil node for development, the demo and the tests, from the pinned npm package.

Never used against a real network: it starts anvil on 127.0.0.1 on a free port and stops it after.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from custody.errors import DaemonError
from signer.safecontracts import (
    FALLBACK_HANDLER,
    MULTISEND_CALL_ONLY,
    PROXY_FACTORY,
    SINGLETON,
    SINGLETON_FACTORY,
)

ROOT = Path(__file__).resolve().parents[2]
ANVIL = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
SOLCJS = ROOT / "node_modules" / "solc" / "solc.js"
# anvil's first default account; its key is public knowledge and funds only local test chains.
FUNDER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """One anvil process. ``restart`` keeps the port and, with ``state``, the chain's contents."""

    def __init__(self, *, chain_id: int = 31337, block_time: float | None = None, port: int | None = None) -> None:
        if not ANVIL.exists():
            raise DaemonError("anvil is not installed: run `make test` or `make demo` (npm ci) first")
        self.chain_id, self.block_time = chain_id, block_time
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, state_file: Path | None = None) -> Anvil:
        args = [
            str(ANVIL),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--silent",
            "--accounts",
            "3",
            "--balance",
            "1000000",
        ]
        if self.block_time:
            args += ["--block-time", str(self.block_time)]
        if state_file is not None:
            args += ["--state", str(state_file)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                self.rpc("eth_chainId")
                return self
            except (httpx.TransportError, DaemonError):
                time.sleep(0.05)
        self.stop()
        raise DaemonError("anvil did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def rpc(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        reply = httpx.post(self.url, json=body, timeout=10).json()
        if "error" in reply:
            raise DaemonError(f"{method}: {reply['error']}")
        return reply["result"]

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def compile_contract(source: Path, name: str) -> dict[str, Any]:
    """Compile one Solidity file with the pinned solc-js; return its ABI and creation bytecode."""
    node = shutil.which("node")
    if node is None or not SOLCJS.exists():
        raise DaemonError("node and the solc npm package are needed to compile test contracts (npm ci)")
    request = {
        "language": "Solidity",
        "sources": {source.name: {"content": source.read_text()}},
        "settings": {
            "optimizer": {"enabled": True, "runs": 200},
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
        },
    }
    out = subprocess.run(
        [node, str(SOLCJS), "--standard-json"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(out.stdout[out.stdout.index("{") :])
    errors = [e["formattedMessage"] for e in result.get("errors", []) if e["severity"] == "error"]
    if errors:
        raise DaemonError("solc: " + "\n".join(errors))
    contract = result["contracts"][source.name][name]
    return {"abi": contract["abi"], "bytecode": "0x" + contract["evm"]["bytecode"]["object"]}


SAFE_ARTIFACTS = ROOT / "node_modules" / "@safe-global" / "safe-contracts" / "build" / "artifacts" / "contracts"
FUNDER_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil's first account, unlocked on anvil

# The runtime code of the Safe singleton factory. It is the same contract as the deterministic deployment proxy
# that anvil has at 0x4e59…956C from genesis: calldata = salt (32 bytes) ‖ init code; it CREATE2s the init code
# with that salt and returns the new address. On public chains it lives at SINGLETON_FACTORY already.
SINGLETON_FACTORY_CODE = (
    "0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe03601600081602082378035828234f580151560"
    "39578182fd5b8082525050506014600cf3"
)
# The four Safe 1.4.1 contracts a cold wallet uses, at the addresses the singleton factory gives their
# published build with salt 0, and the pinned npm package's artifact that holds that build.
CANONICAL_ARTIFACTS = {
    "singleton": (SINGLETON, "Safe.sol/Safe.json"),
    "proxy_factory": (PROXY_FACTORY, "proxies/SafeProxyFactory.sol/SafeProxyFactory.json"),
    "fallback_handler": (
        FALLBACK_HANDLER,
        "handler/CompatibilityFallbackHandler.sol/CompatibilityFallbackHandler.json",
    ),
    "multisend_call_only": (MULTISEND_CALL_ONLY, "libraries/MultiSendCallOnly.sol/MultiSendCallOnly.json"),
}


def _code(anvil: Anvil, address: str) -> str:
    return str(anvil.rpc("eth_getCode", address, "latest")).lower()


def _send(anvil: Anvil, to: str, data: str, gas: int) -> None:
    """A transaction from anvil's unlocked first account, followed until it is mined and succeeded."""
    tx_hash = anvil.rpc("eth_sendTransaction", {"from": FUNDER_ADDRESS, "to": to, "data": data, "gas": hex(gas)})
    deadline = time.time() + 30
    while time.time() < deadline:
        receipt = anvil.rpc("eth_getTransactionReceipt", tx_hash)
        if receipt is not None:
            if int(receipt["status"], 16) != 1:
                raise DaemonError(f"the transaction to {to} reverted")
            return
        time.sleep(0.05)
    raise DaemonError("the deployment was not mined in 30 s")


def deploy_safe_contracts(anvil: Anvil) -> dict[str, str]:
    """Put the real Safe 1.4.1 singleton, proxy factory, fallback handler and MultiSendCallOnly at their
    canonical addresses, the way they got there on public chains: the Safe singleton factory CREATE2s the
    pinned @safe-global/safe-contracts build artifacts with salt 0. Idempotent. Returns the addresses by role,
    which are always ``signer.safecontracts``'s constants: any other result is an error."""
    if not SAFE_ARTIFACTS.exists():
        raise DaemonError("the Safe contracts are not installed: run `make test` or `make demo` (npm ci) first")
    factory_code = _code(anvil, SINGLETON_FACTORY)
    if factory_code == "0x":
        # anvil has no Safe singleton factory (its deployment needs a presigned transaction from a funded
        # deployer); the code is the deterministic deployment proxy's, so CREATE2 addresses come out the same.
        anvil.rpc("anvil_setCode", SINGLETON_FACTORY, SINGLETON_FACTORY_CODE)
    elif factory_code != SINGLETON_FACTORY_CODE:
        raise DaemonError(f"{SINGLETON_FACTORY} holds another contract than the Safe singleton factory")
    salt = "00" * 32
    for role, (address, path) in CANONICAL_ARTIFACTS.items():
        artifact = json.loads((SAFE_ARTIFACTS / path).read_text())
        if _code(anvil, address) == "0x":
            init_code = str(artifact["bytecode"]).removeprefix("0x")
            _send(anvil, SINGLETON_FACTORY, "0x" + salt + init_code, gas=10_000_000)
        if _code(anvil, address) != str(artifact["deployedBytecode"]).lower():
            raise DaemonError(f"{address} does not hold the Safe 1.4.1 {role} after deploying it")
    return {role: address for role, (address, _) in CANONICAL_ARTIFACTS.items()}
