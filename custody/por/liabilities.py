"""The exchange's balances file: one row per account, one column per asset, decimal balances.

    account_id,ETH,USDC
    alice,1.5,2500
    bob,0,12.000001

Every mistake is refused with its line number, and nothing is written: bytes that are not UTF-8; a header that
is not ``account_id`` then known, distinct assets; a balance that is negative, has more decimal places than the
snapshot's decimals for its asset, or is 2^64 base units or more (never clamped or rounded); an account id that
is not 1 to 128 printable characters without surrounding spaces; a duplicate account id; a row with the wrong
number of fields; a file without accounts. A UTF-8 byte-order mark at the start (as spreadsheets write) is
accepted and ignored. Lines end with LF, CRLF or CR; a blank line is a row of 0 fields.

Two readers apply these rules. ``_read_liabilities_rows`` goes row by row in Python (about 3 µs a cell): it is
the reference, and it writes every message. ``read_liabilities`` reads the same file in columns with Arrow's
CSV reader, in blocks, and checks and converts whole columns at once (custody/por/csvcolumns.py) on two threads
while Arrow parses the next block: 10 million rows × 4 assets in seconds. It accepts exactly the files the
reference accepts, with the same results (tests/custody/test_por_csv.py compares them on random files). It
finds the first line it refuses and hands that line to the reference's rules for the message, so the wording
is the same; the file is never read into Python objects row by row.

Line numbers and quoting. Arrow splits rows and fields with quoting off, so one physical line is always one row
and the row after the header numbered k (from 0) is line k + 2 until a line of the wrong width is skipped (Arrow
numbers those itself). The reference reads quotes as Python's csv does (excel dialect, strict), so a row with a
``"`` is tokenised again, on its own line, by Python's csv. A quoted field that holds a comma or a line break
can never be valid here (neither an account id nor a decimal has one), so such a file is always refused; when
the first refused line has a ``"``, the message comes from the reference reading the whole file (slow, rare,
and only for the message: if the reference accepted a file the columns refused, that is an internal error,
never an accepted file).
"""

from __future__ import annotations

import codecs
import csv
import ctypes
import io
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from custody.errors import LiabilitiesInvalid
from custody.por.csvcolumns import account_ids_ok, buffers, decimal_column, fingerprints, first_duplicate
from custody.por.liabilityrows import check_header, check_row, first_bad_utf8, header_row, read_rows, utf8_refusal
from custody.por.tree import Accounts, new_salts

_read_liabilities_rows = read_rows  # the reference, under the name the tests compare against until it goes

_BLOCK = 8 << 20  # bytes Arrow parses at a time: large enough for vectorised work, small enough to overlap it
_PROGRESS_EVERY = 0.25  # seconds
Progress = Callable[[int, int], None]


def read_liabilities(
    path: Path, decimals: dict[str, int], snapshot_id: bytes, progress: Progress | None = None
) -> tuple[list[str], Accounts]:
    """The assets in the file's column order, and every account with a fresh salt. ``decimals`` gives each
    asset's decimals for this snapshot (the unit liabilities are counted in). ``progress(bytes read, file
    size)``, if given, is called from this thread a few times a second while the file is read, and at the end."""
    try:
        size = path.stat().st_size
        header = _first_line(path)
    except OSError as exc:
        raise LiabilitiesInvalid(f"{path}: cannot be read as UTF-8 text: {exc}") from None
    except UnicodeDecodeError:
        raise _refusal(path, decimals, None, {}) from None
    try:
        row = header_row(header)
        assets = check_header(path, row, decimals)
    except (csv.Error, LiabilitiesInvalid):
        raise _refusal(path, decimals, 1, {}) from None
    places = [decimals[a] for a in assets]
    with path.open("rb") as raw:
        source = _Source(raw)
        try:
            kept, first_invalid, bad_row = _read_columns(source, len(row), places, size, progress)
        except pa.ArrowInvalid:  # not expected (rows of the wrong width are skipped and counted): ask the reference
            raise _refusal(path, decimals, None, {}) from None
        if source.bad:
            raise _refusal(path, decimals, None, {})
    if first_invalid == 0:
        raise _refusal(path, decimals, None, {})
    # The first refused line: a row Arrow skipped (wrong field count), or a kept row that failed a check. Kept
    # row k is on line k + 2 as long as no row before it was skipped.
    line, before = first_invalid, None if first_invalid is None else first_invalid - 2
    if bad_row is not None and (line is None or bad_row + 2 < line):
        line, before = bad_row + 2, bad_row + 1  # its id is checked for a duplicate before its balances
    ids = pa.chunked_array([c.ids for c in kept], type=pa.large_string())
    before = len(ids) if before is None else before
    accounts = None
    if line is None and len(ids):  # most likely a good file: build the result while duplicates are looked for
        hashes = np.concatenate([c.hashes for c in kept])
        with ThreadPoolExecutor(2) as pool:  # os.urandom and the sort let go of the GIL
            salts = pool.submit(new_salts, len(ids))
            looking = pool.submit(first_duplicate, ids, hashes)
            accounts = _accounts(snapshot_id, kept, salts)
            duplicate = looking.result()
    else:
        kept.clear()  # only the ids are needed from here on
        duplicate = first_duplicate(ids.slice(0, before))
    if duplicate is not None:
        again, first = duplicate
        raise _refusal(path, decimals, again + 2, {ids[again].as_py(): first + 2})
    if line is not None:
        raise _refusal(path, decimals, line, {})
    if accounts is None:
        raise LiabilitiesInvalid(f"{path}: no accounts after the header")
    del kept, ids
    _give_back_memory()
    return assets, accounts


def _give_back_memory() -> None:
    """Hand the reader's freed memory back to the system: Arrow's pool keeps the batches it freed, and glibc keeps
    what the checking threads freed in their arenas. At 10 million rows that is about 0.85 GiB (measured), which
    the tree phase would otherwise sit on top of."""
    pa.default_memory_pool().release_unused()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc; elsewhere nothing to do
    if trim is not None:
        trim(0)


def _accounts(snapshot_id: bytes, kept: list[_Checked], salts: Future[bytes]) -> Accounts:
    """The batches joined (each copied once, then let go) into the tree's input."""
    count = sum(len(c.ok) for c in kept)
    offsets = np.empty(count + 1, dtype=np.int64)
    balances = np.empty((count, kept[0].balances.shape[1]), dtype=np.uint64)
    parts: list[memoryview] = []
    row = offset = 0
    offsets[0] = 0
    while kept:
        checked = kept.pop(0)
        chunk_offsets, data = buffers(checked.ids)
        rows = len(checked.ok)
        offsets[row + 1 : row + rows + 1] = chunk_offsets[1:] + offset
        balances[row : row + rows] = checked.balances
        parts.append(data.data)
        row, offset = row + rows, offset + len(data)
    return Accounts(snapshot_id, b"".join(parts), offsets, salts.result(), balances)


@dataclass
class _Checked:
    ids: pa.Array  # large_string, quotes resolved
    balances: np.ndarray  # uint64 (rows, assets), 0 where refused
    ok: np.ndarray  # bool per row
    hashes: np.ndarray  # the ids' fingerprints, sorted, to look for duplicates


def _read_columns(
    source: _Source, width: int, places: list[int], size: int, progress: Progress | None
) -> tuple[list[_Checked], int | None, int | None]:
    """Every batch of rows checked (on two threads while Arrow parses the next); the first line Arrow skipped
    for its field count; the first kept row a check refused. Stops at the first refusal."""
    skipped: list[int] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        skipped.append(row.number or 0)  # numbered as the reader runs on one thread; 0: unknown, ask the reference
        return "skip"

    names = [f"c{i}" for i in range(width)]
    reader = pacsv.open_csv(
        pa.PythonFile(source, mode="r"),
        read_options=pacsv.ReadOptions(skip_rows=1, column_names=names, use_threads=False, block_size=_BLOCK),
        parse_options=pacsv.ParseOptions(
            quote_char=False,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.large_string() for n in names}, strings_can_be_null=False, check_utf8=False
        ),
    )
    kept: list[_Checked] = []
    rows, submitted, bad_row, shown = 0, 0, None, time.monotonic()
    pending: deque[Future[_Checked]] = deque()

    def collect() -> None:
        nonlocal rows, bad_row
        checked = pending.popleft().result()
        if bad_row is None and not checked.ok.all():
            bad_row = rows + int(np.argmin(checked.ok))
        kept.append(checked)
        rows += len(checked.ok)

    with ThreadPoolExecutor(2) as pool:
        for batch in reader:
            if source.bad:  # Arrow was not asked to check UTF-8: nothing it read past a bad byte is used
                break
            pending.append(pool.submit(_check_batch, batch, places))
            submitted += batch.num_rows
            while len(pending) > 2 or (pending and pending[0].done()):
                collect()
            if progress is not None and time.monotonic() - shown >= _PROGRESS_EVERY:
                progress(source.done, size)
                shown = time.monotonic()
            # Kept rows before the first skipped line L are the L - 2 first: they all need checking.
            if bad_row is not None or (skipped and submitted >= min(skipped) - 2):
                break
        while pending:
            collect()
    if progress is not None:
        progress(source.done, size)
    return kept, min(skipped, default=None), bad_row


def _check_batch(batch: pa.RecordBatch, places: list[int]) -> _Checked:
    columns, ok = _unquote([batch.column(i) for i in range(batch.num_columns)])
    ok &= account_ids_ok(columns[0])
    balances = np.empty((batch.num_rows, len(places)), dtype=np.uint64)
    for j, d in enumerate(places):
        balances[:, j], good = decimal_column(columns[j + 1], d)
        ok &= good
    return _Checked(columns[0], balances, ok, np.sort(fingerprints(columns[0])))


def _unquote(columns: list[pa.Array]) -> tuple[list[pa.Array], np.ndarray]:
    """The fields of rows with a ``"`` as Python's csv reads the line (Arrow read it with quoting off); a row
    whose quotes do not close on its line or that has another field count is refused.

    A cell that is just ``"…"`` with no other quote (as tools that quote every field write) is unquoted in place,
    for the whole column at once: Python's csv reads exactly its inside, since Arrow cut it at commas already.
    A row with any other quote goes through Python's csv, row by row."""
    rows = len(columns[0])
    ok = np.ones(rows, dtype=bool)
    other = np.zeros(rows, dtype=bool)  # rows with a quote that is not simply around a cell
    resolved = []
    for column in columns:
        column = column.cast(pa.large_string())
        offsets, data = buffers(column)
        quotes = np.flatnonzero(data == ord('"'))
        if not len(quotes):
            resolved.append(column)
            continue
        starts, lengths = offsets[:-1], np.diff(offsets)
        count = np.bincount(np.searchsorted(starts, quotes, side="right") - 1, minlength=rows)
        first = data[np.minimum(starts, len(data) - 1)] == ord('"')
        last = data[np.maximum(starts + lengths - 1, 0)] == ord('"')
        around = (count == 2) & (lengths >= 2) & first & last
        other |= (count > 0) & ~around
        resolved.append(pc.if_else(pa.array(around), pc.utf8_slice_codeunits(column, 1, -1), column))
    where = np.flatnonzero(other)
    if not len(where):
        return resolved, ok
    raw = [column.take(pa.array(where)).to_pylist() for column in columns]
    fields: list[list[str]] = [[] for _ in columns]
    for i, r in enumerate(where):
        cells = [c[i] for c in raw]
        try:
            parsed = next(csv.reader([",".join(cells)], strict=True), [])
        except csv.Error:
            parsed = []
        if len(parsed) != len(columns):
            ok[r], parsed = False, cells
        for j, value in enumerate(parsed):
            fields[j].append(value)
    mask = pa.array(other)
    return [
        pc.replace_with_mask(c, mask, pa.array(f, type=pa.large_string()))
        for c, f in zip(resolved, fields, strict=True)
    ], ok


class _Source(io.RawIOBase):
    """The file as Arrow reads it, decoded on the way as Python decodes it, and counted for progress. Arrow never
    sees a byte that is not UTF-8: at the first one (``bad``) the file seems to end there, and the bytes of a
    character cut by a read are held back until the rest of it arrives."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self.raw, self.done, self.bad = raw, 0, False
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._held = b""
        self._ended = True  # whether what Arrow got so far ends with a line break (or is nothing)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        while not self.bad:
            data = self.raw.read(-1 if size is None or size < 0 else max(size - len(self._held), 1))
            self.done += len(data)
            try:
                self._decoder.decode(data, final=not data)
            except UnicodeDecodeError:
                self.bad = True
                break
            if not data:
                break
            held = len(self._decoder.getstate()[0])  # the first bytes of a character the next read completes
            data, self._held = self._held + data, b""
            if held:
                data, self._held = data[:-held], data[-held:]
            if data:
                self._ended = data[-1:] in (b"\n", b"\r")
                return data
        if not self._ended and not self.bad:
            # Arrow fails the whole read on a last line of the wrong width when it has no line break: give it
            # one (the reference reads the same record either way).
            self._ended = True
            return b"\n"
        return b""

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _first_line(path: Path) -> str:
    with path.open(encoding="utf-8-sig", newline=None) as text:
        return text.readline()


def _refusal(path: Path, decimals: dict[str, int], line: int | None, seen: Mapping[str, int]) -> LiabilitiesInvalid:
    """The reference's message for the first refused line (``None``: the file is not UTF-8). Bytes that are not
    UTF-8 anywhere come first, as they do in the reference, which decodes the whole file before anything else."""
    bad = first_bad_utf8(path)
    if bad is not None or line is None:
        return utf8_refusal(path, bad) if bad is not None else _disagreement(path, decimals, line)
    with path.open(encoding="utf-8-sig", newline=None) as text:
        physical = next(islice(text, line - 1, None), "")
    if '"' in physical:
        # Arrow split this line without quoting, and may have found another field count or id than the
        # reference: let the reference read the file.
        return _disagreement(path, decimals, line)
    try:
        if line == 1:
            check_header(path, header_row(physical), decimals)
        else:
            header = header_row(_first_line(path))
            row = next(csv.reader([physical], strict=True))
            assets = header[1:]
            check_row(path, line, row, len(header), assets, [decimals[a] for a in assets], seen)
    except LiabilitiesInvalid as exc:
        return exc
    except csv.Error:
        pass
    return _disagreement(path, decimals, line)


def _disagreement(path: Path, decimals: dict[str, int], line: int | None) -> LiabilitiesInvalid:
    """The columnar reader refused a file and could not say why on its own: the reference reads it whole."""
    try:
        read_rows(path, decimals, bytes(32))
    except LiabilitiesInvalid as exc:
        return exc
    raise RuntimeError(f"{path}: the columnar reader refused line {line}, which the row reader accepts")
