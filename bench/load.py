"""A load process: signed requests over N keep-alive connections, from one asyncio loop.

    python bench/load.py URL[,URL…] KEY_NAME KEY_HEX KIND TOTAL CONNECTIONS      (KIND: intake or ping)

Each request is signed just before it is sent (its own nonce and Idempotency-Key, a fresh timestamp) and
written as raw HTTP/1.1, so this process costs little of the machine the server shares. Connection i talks
to URL i mod their number; the connections draw from one shared count, so a slow replica gets fewer.

Prints one JSON object: requests, seconds, requests/s, p50 and p99 latency in ms, and status counts.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

from nacl.signing import SigningKey

from custody.intake.signatures import sign_request

DESTINATION = "0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"


def build(name: str, key: SigningKey, kind: str, host: str) -> bytes:
    if kind == "intake":
        method, path = "POST", "/v1/withdrawals"
        body = json.dumps({"asset": "ETH", "amount": "0.001", "destination": DESTINATION}).encode()
        headers = sign_request(key, name, int(time.time()), method, path, body, uuid.uuid4().hex)
        headers["Content-Type"] = "application/json"
    else:
        method, path, body = "GET", "/v1/ping", b""
        headers = sign_request(key, name, int(time.time()), method, path, body)
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


async def connection(url: str, make: Callable[[], bytes], left: list[int], out: list[tuple[float, int]]) -> None:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        while left[0] > 0:
            left[0] -= 1
            request = make()
            start = time.perf_counter()
            writer.write(request)
            status_line = await reader.readuntil(b"\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            out.append((time.perf_counter() - start, int(status_line.split()[1])))
    finally:
        writer.close()


async def run(
    urls: list[str], make: Callable[[], bytes], total: int, connections: int
) -> tuple[list[tuple[float, int]], float]:
    out: list[tuple[float, int]] = []
    left = [total]
    start = time.perf_counter()
    await asyncio.gather(*(connection(urls[i % len(urls)], make, left, out) for i in range(connections)))
    return out, time.perf_counter() - start


def main(url: str, name: str, key_hex: str, kind: str, total: int, connections: int) -> None:
    urls = url.split(",")
    key = SigningKey(bytes.fromhex(key_hex))
    host = urlsplit(urls[0]).netloc
    out, elapsed = asyncio.run(run(urls, lambda: build(name, key, kind, host), total, connections))
    latencies = sorted(t for t, _ in out)
    print(
        json.dumps(
            {
                "requests": len(out),
                "seconds": elapsed,
                "rps": len(out) / elapsed,
                "p50_ms": latencies[len(latencies) // 2] * 1000,
                "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
                "statuses": dict(Counter(status for _, status in out)),
            }
        )
    )


if __name__ == "__main__":
    u, n, k, kind, total, connections = sys.argv[1:7]
    main(u, n, k, kind, int(total), int(connections))
