"""A load process: signed requests from N threads, each with its own keep-alive connection.

    python bench/load.py URL[,URL…] KEY_NAME KEY_HEX KIND TOTAL THREADS      (KIND: intake or ping)

With several URLs (replicas), thread i talks to URL i mod their number.

Prints one JSON object: requests, seconds, requests/s, p50 and p99 latency in ms, and status counts.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections import Counter

from custody.client import CustodyClient

DESTINATION = "0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"


def main(url: str, name: str, key: str, kind: str, total: int, threads: int) -> None:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    per_thread = total // threads

    urls = url.split(",")

    def worker(i: int) -> None:
        mine, codes = [], Counter()
        with CustodyClient(urls[i % len(urls)], name, key) as c:
            for _ in range(per_thread):
                start = time.perf_counter()
                if kind == "intake":
                    r = c.request(
                        "POST",
                        "/v1/withdrawals",
                        {"asset": "ETH", "amount": "0.001", "destination": DESTINATION},
                        {"Idempotency-Key": uuid.uuid4().hex},
                    )
                else:
                    r = c.request("GET", "/v1/ping")
                mine.append(time.perf_counter() - start)
                codes[r.status_code] += 1
        with lock:
            latencies.extend(mine)
            statuses.update(codes)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    print(
        json.dumps(
            {
                "requests": len(latencies),
                "seconds": elapsed,
                "rps": len(latencies) / elapsed,
                "p50_ms": latencies[len(latencies) // 2] * 1000,
                "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
                "statuses": dict(statuses),
            }
        )
    )


if __name__ == "__main__":
    u, n, k, kind, total, threads = sys.argv[1:7]
    main(u, n, k, kind, int(total), int(threads))
