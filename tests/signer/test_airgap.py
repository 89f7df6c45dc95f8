"""The signer imports no network or database library, and works with sockets made impossible."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BANNED = {
    "web3",
    "sqlalchemy",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "requests",
    "aiohttp",
    "urllib3",
    "psycopg",
    "socket",
}


def test_signer_cli_imports_no_network_or_database_library():
    code = "import sys, signer.cli; print(','.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(out.strip().split(","))
    assert not (loaded & (BANNED - {"socket"})), loaded & BANNED


def test_key_new_and_policy_flow_with_sockets_disabled(tmp_path):
    script = textwrap.dedent(f"""
        import socket
        def refuse(*a, **k):
            raise RuntimeError("the signer tried to open a socket")
        socket.socket = refuse
        socket.create_connection = refuse
        from click.testing import CliRunner
        from signer.cli import main
        pw = {str(tmp_path / "pw")!r}
        open(pw, "w").write("pass phrase\\n")
        r = CliRunner().invoke(main, ["key", "new", "--name", "a", "--out", {str(tmp_path / "k")!r},
                                      "--passphrase-file", pw], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(main, ["key", "card", {str(tmp_path / "k")!r}, "--out", {str(tmp_path / "c")!r}])
        assert r.exit_code == 0, r.output
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
