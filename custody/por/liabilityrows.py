"""The liabilities file's rules row by row, as the reference reader applies them (see custody/por/liabilities.py
for the file's format and the columnar reader that the daemon uses): every refusal's message is written here."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from custody.errors import LiabilitiesInvalid
from custody.por.tree import U64, Accounts, new_salts
from policies.errors import AmountError
from policies.units import parse_amount

ACCOUNT_ID = re.compile(r"[^\x00-\x1f\x7f,\s][^\x00-\x1f\x7f,]{0,126}[^\x00-\x1f\x7f,\s]|[^\x00-\x1f\x7f,\s]")


def header_row(first_line: str) -> list[str]:
    """The header's fields as the reference reads them, when line 1 holds the whole header record."""
    if not first_line:  # an empty file: Python's csv reads no record at all
        raise csv.Error("no header")
    return next(csv.reader([first_line], strict=True))


def first_bad_utf8(path: Path, chunk: int = 16 << 20) -> tuple[int, str] | None:
    """The offset of the first byte that is not UTF-8 and the decoder's reason, reading ``chunk`` bytes at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    done = 0
    with path.open("rb") as raw:
        while True:
            data = raw.read(chunk)
            carried = len(decoder.getstate()[0])  # bytes of a character begun in the previous chunk
            try:
                decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                return done - carried + exc.start, exc.reason
            if not data:
                return None
            done += len(data)


def utf8_refusal(path: Path, bad: tuple[int, str]) -> LiabilitiesInvalid:
    offset, reason = bad
    line = 1
    with path.open("rb") as raw:
        prefix = raw.read(offset)
    line += prefix.count(b"\n") + prefix.count(b"\r") - prefix.count(b"\r\n")
    return LiabilitiesInvalid(f"{path}: line {line}: cannot be read as UTF-8 text ({reason} at byte {offset})")


def read_rows(path: Path, decimals: dict[str, int], snapshot_id: bytes) -> tuple[list[str], Accounts]:
    """The reference reader, row by row in Python (about 3 µs a cell): the same answers as ``read_liabilities``
    in custody/por/liabilities.py, slowly. Kept until the team retires it; the tests compare the two."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LiabilitiesInvalid(f"{path}: cannot be read as UTF-8 text: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise utf8_refusal(path, (exc.start, exc.reason)) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")  # what read_text() does
    rows = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(rows)
    except (StopIteration, csv.Error):
        raise LiabilitiesInvalid(f"{path}: line 1: a header account_id,<ASSET>,… is required") from None
    assets = check_header(path, header, decimals)
    places = [decimals[a] for a in assets]
    ids: list[bytes] = []
    seen: dict[str, int] = {}
    balances: list[list[int]] = []
    try:
        for row in rows:
            line = rows.line_num
            balances.append(check_row(path, line, row, len(header), assets, places, seen))
            seen[row[0]] = line
            ids.append(row[0].encode())
    except csv.Error as exc:
        raise LiabilitiesInvalid(f"{path}: line {rows.line_num}: {exc}") from None
    if not ids:
        raise LiabilitiesInvalid(f"{path}: no accounts after the header")
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(i) for i in ids], out=offsets[1:])
    accounts = Accounts(snapshot_id, b"".join(ids), offsets, new_salts(len(ids)), np.array(balances, dtype=np.uint64))
    return assets, accounts


def check_header(path: Path, header: list[str], decimals: Mapping[str, int]) -> list[str]:
    if len(header) < 2 or header[0] != "account_id":
        raise LiabilitiesInvalid(f"{path}: line 1: the header must be account_id followed by the asset symbols")
    assets = header[1:]
    for symbol in assets:
        if symbol not in decimals:
            raise LiabilitiesInvalid(f"{path}: line 1: unknown asset {symbol!r} (known: {', '.join(sorted(decimals))})")
    if len(set(assets)) != len(assets):
        raise LiabilitiesInvalid(f"{path}: line 1: an asset appears twice")
    return assets


def check_row(
    path: Path, line: int, row: list[str], width: int, assets: list[str], places: list[int], seen: Mapping[str, int]
) -> list[int]:
    if len(row) != width:
        raise LiabilitiesInvalid(f"{path}: line {line}: {len(row)} fields, the header has {width}")
    account = row[0]
    if ACCOUNT_ID.fullmatch(account) is None:
        raise LiabilitiesInvalid(
            f"{path}: line {line}: the account id must be 1 to 128 printable characters, no comma, no "
            "surrounding spaces"
        )
    if account in seen:
        raise LiabilitiesInvalid(
            f"{path}: line {line}: duplicate account id {account!r} (first on line {seen[account]})"
        )
    return [_balance(path, line, a, v, d) for a, v, d in zip(assets, row[1:], places, strict=True)]


def _balance(path: Path, line: int, asset: str, text: str, places: int) -> int:
    where = f"{path}: line {line}: {asset}"
    if text.startswith("-"):
        raise LiabilitiesInvalid(f"{where}: negative balance {text!r}")
    try:
        value = parse_amount(text, places, allow_zero=True)
    except AmountError as exc:
        raise LiabilitiesInvalid(f"{where}: {exc.message}") from None
    if value >= U64:
        raise LiabilitiesInvalid(
            f"{where}: {text} is 2^64 base units or more at {places} decimals; use fewer decimals for "
            f"{asset} (--decimals {asset}=N)"
        )
    return value
