"""Reading the liabilities CSV: a generated file of rows × assets on disk, read by
``custody.por.liabilities.read_liabilities`` into the tree's input (ids, salts, uint64 balances).

The file looks like an exchange's export: ids ``cust-0000012345``, about a third of the balances zero, the
others spread over twelve orders of magnitude with up to the asset's decimals (trailing zeros trimmed, as a
spreadsheet writes them). Prints the file size, the read time, rows/s and the peak memory of this process.
Target: well under 15 s for 10 million rows × 4 assets (the whole CSV-to-exported-proofs pipeline has 60 s).

    PYTHONPATH=. .venv/bin/python bench/bench_por_csv.py --rows 10000000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from custody.por.liabilities import read_liabilities

DECIMALS = {"ETH": 9, "USDC": 6, "USDT": 6, "WBTC": 8, "DAI": 9, "LINK": 9, "UNI": 9, "AAVE": 9}
_CHUNK = 1_000_000


def _decimal_column(rng: np.random.Generator, rows: int, places: int) -> pa.Array:
    """Exact decimal strings of random base-unit balances: a third zero, the rest log-uniform up to 10^12 units."""
    high = np.uint64(10) ** rng.integers(0, 13, size=rows).astype(np.uint64)
    units = rng.integers(0, high, dtype=np.uint64)
    units[rng.integers(0, 3, size=rows) == 0] = 0
    scale = np.uint64(10**places)
    whole = pc.cast(pa.array(units // scale), pa.string())
    frac = pc.utf8_rtrim(pc.utf8_lpad(pc.cast(pa.array(units % scale), pa.string()), places, "0"), "0")
    dotted = pc.binary_join_element_wise(whole, frac, ".")
    return pc.if_else(pc.equal(frac, ""), whole, dotted)


def write_csv(path: Path, rows: int, assets: int, seed: int = 7) -> list[str]:
    """A liabilities file of ``rows`` accounts; returns the asset columns (taken from DECIMALS, in order)."""
    symbols = list(DECIMALS)[:assets]
    rng = np.random.default_rng(seed)
    width = max(10, len(str(rows)))
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    schema = pa.schema([("account_id", pa.string())] + [(s, pa.string()) for s in symbols])
    with path.open("wb") as sink, pacsv.CSVWriter(sink, schema, write_options=options) as writer:
        sink.write(",".join(schema.names).encode() + b"\n")  # Arrow would quote the header's names
        for start in range(0, rows, _CHUNK):
            count = min(_CHUNK, rows - start)
            numbers = pc.cast(pa.array(np.arange(start, start + count, dtype=np.int64)), pa.string())
            ids = pc.binary_join_element_wise("cust-", pc.utf8_lpad(numbers, width, "0"), "")
            columns = [ids] + [_decimal_column(rng, count, DECIMALS[s]) for s in symbols]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
    return symbols


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_csv(rows: int, assets: int, tmp: Path) -> dict[str, float]:
    """Write a rows × assets file under ``tmp``, read it, and return the figures (seconds, bytes, MiB)."""
    path = tmp / "liabilities.csv"
    t = time.perf_counter()
    symbols = write_csv(path, rows, assets)
    written = time.perf_counter() - t
    before = peak_mib()
    t = time.perf_counter()
    got, accounts = read_liabilities(path, {s: DECIMALS[s] for s in symbols}, os.urandom(32))
    elapsed = time.perf_counter() - t
    assert got == symbols and accounts.count == rows
    size = path.stat().st_size
    path.unlink()
    return {
        "rows": rows,
        "assets": assets,
        "bytes": size,
        "write_s": written,
        "read_s": elapsed,
        "rows_per_s": rows / elapsed,
        "peak_mib": peak_mib(),
        "peak_mib_before_read": before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--assets", type=int, default=4, choices=range(1, len(DECIMALS) + 1))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        r = bench_csv(args.rows, args.assets, Path(tmp))
    print(f"== liabilities CSV: {r['rows']:,} rows × {r['assets']} assets, {r['bytes'] / 2**20:,.0f} MiB on disk")
    print(f"   read in {r['read_s']:.2f} s ({r['rows_per_s']:,.0f} rows/s); written in {r['write_s']:.1f} s")
    print(
        f"   peak memory {r['peak_mib']:,.0f} MiB (this process; {r['peak_mib_before_read']:,.0f} MiB before the read)"
    )


if __name__ == "__main__":
    main()
