"""The worked examples of docs/api.md (a signed request) and docs/webhooks.md (a signed event), read from the
pages themselves and recomputed twice: by an implementation written here from the pages' own description
(hashlib and nacl only), and by the daemon's code. A page that drifts from the code fails here."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from nacl.signing import SigningKey, VerifyKey

from custody.intake.signatures import request_message, sign_request
from custody.ops.webhooks import signed_headers

DOCS = Path(__file__).resolve().parents[2] / "docs"


def worked_example(page: str) -> dict[str, str]:
    """The ``name: value`` lines of the first ``text`` block under the page's "### Worked example" heading;
    each value is the rest of its line, exactly."""
    text = (DOCS / page).read_text(encoding="utf-8")
    section = text.split("### Worked example", 1)[1]
    block = re.search(r"```text\n(.*?)\n```", section, re.S)
    assert block is not None, f"{page}: no text block in the worked example"
    values = {}
    for line in block.group(1).split("\n"):
        name, sep, value = line.partition(": ")
        assert sep, f"{page}: not a 'name: value' line: {line!r}"
        values[name] = value
    return values


# -- the request signature ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def request_vector() -> dict[str, str]:
    return worked_example("api.md")


def message_from_the_doc(v: dict[str, str]) -> bytes:
    """docs/api.md, "Signing a request": seven lines joined by LF, none after the last; the last is the
    lowercase hex SHA-256 of the exact body bytes."""
    lines = [
        "custody-request-v1",
        v["timestamp"],
        v["nonce"],
        v["method"].upper(),
        v["path"],
        v["idempotency key"],
        hashlib.sha256(v["body"].encode("utf-8")).hexdigest(),
    ]
    return "\n".join(lines).encode("utf-8")


def test_the_request_example_recomputes_from_the_description(request_vector):
    v = request_vector
    key = SigningKey(bytes.fromhex(v["private key (seed, hex)"]))
    assert key.verify_key.encode().hex() == v["public key (hex)"]
    assert hashlib.sha256(v["body"].encode()).hexdigest() == v["body SHA-256 (hex)"]
    message = message_from_the_doc(v)
    assert message == json.loads(v["message (JSON string)"]).encode("utf-8")
    assert key.sign(message).signature.hex() == v["signature (hex)"]
    VerifyKey(bytes.fromhex(v["public key (hex)"])).verify(message, bytes.fromhex(v["signature (hex)"]))


def test_the_request_example_is_what_custody_signs(request_vector):
    v = request_vector
    key = SigningKey(bytes.fromhex(v["private key (seed, hex)"]))
    body = v["body"].encode()
    headers = sign_request(
        key, v["key name"], int(v["timestamp"]), v["method"], v["path"], body, v["idempotency key"], nonce=v["nonce"]
    )
    assert headers == {
        "X-Custody-Key": v["key name"],
        "X-Custody-Timestamp": v["timestamp"],
        "X-Custody-Nonce": v["nonce"],
        "X-Custody-Signature": v["signature (hex)"],
        "Idempotency-Key": v["idempotency key"],
    }
    message = request_message(v["timestamp"], v["nonce"], v["method"], v["path"], v["idempotency key"], body)
    assert message == json.loads(v["message (JSON string)"]).encode()


def test_the_example_request_on_the_page_carries_the_same_headers(request_vector):
    v = request_vector
    text = (DOCS / "api.md").read_text(encoding="utf-8").split("### Worked example", 1)[1]
    http = re.search(r"```http\n(.*?)\n```", text, re.S)
    assert http is not None
    head, _, body = http.group(1).partition("\n\n")
    fields = dict(line.split(": ", 1) for line in head.split("\n")[1:])
    assert head.split("\n")[0] == f"{v['method']} {v['path']} HTTP/1.1"
    assert fields["X-Custody-Key"] == v["key name"]
    assert fields["X-Custody-Timestamp"] == v["timestamp"]
    assert fields["X-Custody-Nonce"] == v["nonce"]
    assert fields["X-Custody-Signature"] == v["signature (hex)"]
    assert fields["Idempotency-Key"] == v["idempotency key"]
    assert body == v["body"]


def test_the_request_example_sizes_on_the_page(request_vector):
    v = request_vector
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    body, message = len(v["body"].encode()), len(json.loads(v["message (JSON string)"]).encode())
    assert f"The body is the {body} bytes after `body: `" in page
    assert f"the message is {message} bytes" in page


# -- the webhook signature ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def webhook_vector() -> dict[str, str]:
    return worked_example("webhooks.md")


def test_the_webhook_example_recomputes_from_the_description(webhook_vector):
    v = webhook_vector
    key = SigningKey(bytes.fromhex(v["identity key (seed, hex)"]))
    assert key.verify_key.encode().hex() == v["identity.pub (hex)"]
    body = v["body"].encode("utf-8")
    assert hashlib.sha256(body).hexdigest() == v["body SHA-256 (hex)"]
    # docs/webhooks.md, "The signature": four lines joined by LF, none after the last
    message = b"\n".join(
        [
            b"custody-webhook-v1",
            v["X-Custody-Delivery"].encode(),
            v["X-Custody-Timestamp"].encode(),
            hashlib.sha256(body).hexdigest().encode(),
        ]
    )
    assert message == json.loads(v["message (JSON string)"]).encode("utf-8")
    assert key.sign(message).signature.hex() == v["X-Custody-Signature"]
    VerifyKey(bytes.fromhex(v["identity.pub (hex)"])).verify(message, bytes.fromhex(v["X-Custody-Signature"]))
    event = json.loads(body)
    assert event["id"] == v["X-Custody-Delivery"]
    assert set(event) == {"id", "seq", "type", "subject", "at", "data"}


def test_the_webhook_example_is_what_custody_sends(webhook_vector):
    v = webhook_vector
    key = SigningKey(bytes.fromhex(v["identity key (seed, hex)"]))
    body = v["body"].encode()
    assert json.dumps(json.loads(body), sort_keys=True).encode() == body  # the body's form, as the page says
    headers = signed_headers(key, v["X-Custody-Delivery"], body, int(v["X-Custody-Timestamp"]))
    assert headers == {
        "Content-Type": "application/json",
        "X-Custody-Delivery": v["X-Custody-Delivery"],
        "X-Custody-Timestamp": v["X-Custody-Timestamp"],
        "X-Custody-Signature": v["X-Custody-Signature"],
    }


def test_the_verifier_printed_on_the_webhooks_page_accepts_the_example(webhook_vector):
    """The page's Python verifier, run as printed, on the example."""
    v = webhook_vector
    page = (DOCS / "webhooks.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)\n```", page, re.S)
    assert code is not None
    scope: dict[str, object] = {}
    exec(compile(code.group(1), "docs/webhooks.md", "exec"), scope)  # the page's own snippet
    headers = {k: v[k] for k in ("X-Custody-Delivery", "X-Custody-Timestamp", "X-Custody-Signature")}
    scope["verify"](headers, v["body"].encode(), v["identity.pub (hex)"])  # type: ignore[operator]


def test_the_node_js_key_loading_on_the_page_signs_the_example(request_vector, tmp_path):
    """The page's Node.js expression for loading a key file, run as printed by node (which the project's setup
    needs anyway, for npm), signs the worked example's message into the page's signature."""
    v = request_vector
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    found = re.search(r"in Node\.js,\s*`(crypto\.createPrivateKey\(.*?\))`", page, re.S)
    assert found is not None, "api.md: no Node.js key-loading expression"
    key_file = tmp_path / "backend.key"
    key_file.write_text(v["private key (seed, hex)"] + "\n")  # the file format the page describes
    script = (
        "const crypto = require('crypto'); const fs = require('fs');\n"
        "const seed = Buffer.from(fs.readFileSync(process.argv[1], 'utf8').trim(), 'hex');\n"
        f"const key = {found.group(1)};\n"
        "process.stdout.write(crypto.sign(null, Buffer.from(process.argv[2], 'utf8'), key).toString('hex'));\n"
    )
    node = shutil.which("node")
    assert node is not None, "node is not installed: run make test (the project's setup needs Node.js for npm)"
    message = json.loads(v["message (JSON string)"])
    out = subprocess.run([node, "-e", script, "--", str(key_file), message], capture_output=True, text=True, check=True)
    assert out.stdout == v["signature (hex)"]
