"""`make bench`: every benchmark, each printing its figures and its ratio to a baseline from the same run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_intake, bench_policy, bench_por

if __name__ == "__main__":
    bench_policy.run()
    bench_intake.run()
    bench_por.run()
