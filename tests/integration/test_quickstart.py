"""docs/quickstart.md is executed as written, so it can never drift: every ```sh block line by line, in order, in one
empty directory on a fresh anvil, each line asserted to succeed, and the withdrawals it makes asserted confirmed.
The page's own HTML comment lists its conventions (background lines, `file:` blocks, ports, placeholders, typed
confirmations); this file implements them. Also: the shipped example policy is accepted by `custody policy
propose`, today and in years to come."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path

from nacl.signing import SigningKey

from custody.config import load_settings
from custody.ledger import policy as policy_service
from custody.store.db import Store
from tests.cli_helpers import custody

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "quickstart.md"
EXAMPLE = REPO / "policies" / "examples" / "policy.toml"
HEX64 = "[0-9a-f]{64}"
ADDRESS = "0x[0-9a-fA-F]{40}"

# What an operator types when a signer asks for digits: the start of the hash the daemon announced before (the
# last one it printed with this label), as in a ceremony.
CONFIRMATIONS = {
    "signer policy pin": rf"genesis\s+({HEX64})",
    "signer policy sign": rf"bundle version \d+, hash ({HEX64})",
    "signer cold pin": rf"file hash\s+({HEX64})",
    "signer sign": rf"SafeTx hash\s+0x({HEX64})",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def steps(text: str) -> list[tuple[str, str, str]]:
    """The page's fenced blocks in order as (kind, name, body): ("run", "", line) per command line of a ```sh block,
    ("file", NAME, content) for a block after `<!-- file: NAME -->`; blocks after `<!-- not run -->` are left out."""
    out: list[tuple[str, str, str]] = []
    pattern = r"(?:<!--\s*(file: \S+|not run)\s*-->\n)?```(\w+)\n(.*?)```"
    for marker, lang, body in re.findall(pattern, text, re.S):
        if marker == "not run":
            continue
        if marker:
            out.append(("file", marker.removeprefix("file: "), body))
            continue
        assert lang == "sh", f"a ```{lang} block that is neither run nor a file:\n{body}"
        for line in body.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                out.append(("run", "", line.strip()))
    return out


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} after {seconds} s")


class Reader:
    """A newcomer at a terminal: runs each line, reads what the daemon printed, fills in the placeholders."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.state = work.parent / "shell-state.sh"  # the exported variables, carried from line to line
        self.daemon_output = ""  # everything `custody` printed so far: where announced values are read
        self.last_output: dict[str, str] = {}
        self.background: list[subprocess.Popen[bytes]] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTODY_", "SIGNER_"))}
        self.env["HOME"] = str(work)
        self.state.write_text("")

    def announced(self, pattern: str, what: str) -> str:
        found = re.findall(pattern, self.daemon_output)
        assert found, f"no {what} was printed before it is needed"
        return str(found[-1])

    def fill(self, text: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "repo":
                return str(REPO)
            if name == "active-from":  # "a time a minute or so from now": a few seconds keeps the test short
                return dt.datetime.fromtimestamp(time.time() + 8, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if name.endswith("-approval-key"):
                card = self.work / f"{name.removesuffix('-approval-key')}.card.json"
                return str(json.loads(card.read_text())["approval_key"])
            if name == "hot-address":
                return self.announced(rf"hot wallet\s+({ADDRESS})", "hot wallet address")
            if name == "safe-address":
                return self.announced(rf"Safe ({ADDRESS})", "Safe address")
            if name == "batch-file":
                return self.announced(r"(?m)^\s*file\s+(\S+\.json)\s*$", "batch file")
            if name == "backend-public-key":
                out = next(v for k, v in self.last_output.items() if "apikey keygen" in k)
                return str(re.findall(HEX64, out)[-1])
            raise AssertionError(f"the page has a placeholder <{name}> the test does not know")

        return re.sub(r"<([a-z][a-z0-9-]*)>", value, text)

    def script(self, line: str) -> str:
        return f"source {shlex.quote(str(self.state))}\n{line}\n"

    def run(self, line: str) -> str:
        line = self.fill(line)
        if line.endswith("&"):
            command = line.removesuffix("&").strip()
            process = subprocess.Popen(
                ["bash", "-c", self.script("exec " + command)], cwd=self.work, env=self.env, start_new_session=True
            )
            self.background.append(process)
            port = re.search(r"--port (\d+)", command)
            if port:
                wait_for_port(int(port.group(1)))
            assert process.poll() is None, f"{command} stopped at once"
            return ""
        answer = ""
        for prefix, pattern in CONFIRMATIONS.items():
            if line.startswith(prefix + " "):
                answer = self.announced(pattern, f"hash for `{prefix}`")[:8] + "\n"
        script = self.script(line) + f"rc=$?\nexport -p > {shlex.quote(str(self.state))}\nexit $rc\n"
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=self.work,
            env=self.env,
            input=answer,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"`{line}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        self.last_output[line] = done.stdout
        if line.startswith("custody "):
            self.daemon_output += done.stdout
        return done.stdout

    def stop(self) -> None:
        for process in self.background:
            process.terminate()
        for process in self.background:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def test_the_quick_start_runs_as_written(tmp_path):
    text = DOC.read_text()
    for port in ("8545", "8700"):
        text = re.sub(rf"\b{port}\b", str(free_port()), text)
    work = tmp_path / "quickstart"
    work.mkdir()
    reader = Reader(work)
    outputs: dict[str, str] = {}
    try:
        for kind, name, body in steps(text):
            if kind == "file":
                (work / name).write_text(reader.fill(body))
            else:
                outputs[body] = reader.run(body)
    finally:
        reader.stop()

    assert "confirmed in transaction 0x" in outputs["python withdraw.py"]
    assert "queued_cold" in outputs["python withdraw.py"]
    checked = outputs["python check.py"].splitlines()
    assert {line.split()[0] for line in checked} == {"order-1", "order-2"}
    assert all(line.split()[3] == "confirmed" for line in checked), checked
    assert "executed" in outputs["custody batch import alice.batch.sig carol.batch.sig"]


def test_the_page_is_extracted_as_expected():
    """The extraction itself: nothing the page means to run is missed (a typo in a fence or a marker would skip
    steps silently)."""
    found = steps(DOC.read_text())
    files = [name for kind, name, _ in found if kind == "file"]
    lines = [body for kind, _, body in found if kind == "run"]
    assert files == ["policy.toml", "withdraw.py", "check.py"]
    commands = ("anvil", "custody init", "eth_sendTransaction", "custody dev safe-contracts", "custody cold create")
    for command in commands:
        assert any(command in line for line in lines), command
    assert not any(line.startswith("kill") for line in lines)
    assert sum(line.endswith("&") for line in lines) == 3


def test_the_shipped_example_policy_is_accepted_today_and_later(tmp_path):
    """`custody policy propose` accepts policies/examples/policy.toml as a first bundle with the default 24 h
    activation delay, now and for years: its whitelist never dates itself out."""
    pw = tmp_path / "pass.txt"
    pw.write_text("example passphrase\n")
    data = tmp_path / "daemon"
    admin = "alice:" + SigningKey(bytes([0x11]) * 32).verify_key.encode().hex()
    custody("init", "--data-dir", data, "--admin", admin, "--quorum", 1, "--passphrase-file", pw)
    config = data / "custody.toml"
    result = custody("policy", "propose", EXAMPLE, "--out", tmp_path / "bundle.json", "--config", config)
    assert "bundle version 1" in result.output

    store = Store(load_settings(config).database_url)
    try:
        for years in (1, 10, 50):
            later = int(time.time()) + years * 366 * 86400
            assert policy_service.propose(store, EXAMPLE.read_text(), later).version == 1
    finally:
        store.dispose()
