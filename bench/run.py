"""`make bench`: every benchmark, each printing its figures and its ratio to a baseline from the same run.

The proof-of-reserves benchmark runs 1 million accounts by default, a couple of minutes on a developer's
machine; the issue's 10 million with ``.venv/bin/python bench/run.py --por-accounts 10000000`` (or
``BENCH_POR_ACCOUNTS=10000000 make bench``; BENCH_DIR picks the disk for its ~25 GB of files)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_console, bench_intake, bench_policy, bench_por

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="every benchmark")
    parser.add_argument("--por-accounts", type=int, default=None, help="accounts of the proof-of-reserves run")
    args = parser.parse_args()
    bench_policy.run()
    bench_intake.run()
    bench_por.run(args.por_accounts)
    bench_console.run()
