"""The exchange's balances file: one row per account, one column per asset, decimal balances.

    account_id,ETH,USDC
    alice,1.5,2500
    bob,0,12.000001

Every mistake is refused with its line number, and nothing is written: a balance that is negative, has more
decimal places than the snapshot's decimals for its asset, or is 2^64 base units or more (never clamped or
rounded); a duplicate account id; a row with the wrong number of fields; an unknown asset. A UTF-8 byte-order
mark at the start (as spreadsheets write) is accepted and ignored.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from custody.errors import LiabilitiesInvalid
from custody.por.tree import U64, Accounts, new_salts
from policies.errors import AmountError
from policies.units import parse_amount

_ACCOUNT = re.compile(r"[^\x00-\x1f\x7f,\s][^\x00-\x1f\x7f,]{0,126}[^\x00-\x1f\x7f,\s]|[^\x00-\x1f\x7f,\s]")


def read_liabilities(path: Path, decimals: dict[str, int], snapshot_id: bytes) -> tuple[list[str], Accounts]:
    """The assets in the file's column order, and every account with a fresh salt. ``decimals`` gives each
    asset's decimals for this snapshot (the unit liabilities are counted in)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheets often save UTF-8 with a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        raise LiabilitiesInvalid(f"{path}: cannot be read as UTF-8 text: {exc}") from None
    rows = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(rows)
    except (StopIteration, csv.Error):
        raise LiabilitiesInvalid(f"{path}: line 1: a header account_id,<ASSET>,… is required") from None
    if len(header) < 2 or header[0] != "account_id":
        raise LiabilitiesInvalid(f"{path}: line 1: the header must be account_id followed by the asset symbols")
    assets = header[1:]
    for symbol in assets:
        if symbol not in decimals:
            raise LiabilitiesInvalid(f"{path}: line 1: unknown asset {symbol!r} (known: {', '.join(sorted(decimals))})")
    if len(set(assets)) != len(assets):
        raise LiabilitiesInvalid(f"{path}: line 1: an asset appears twice")
    places = [decimals[a] for a in assets]
    ids: list[bytes] = []
    seen: dict[str, int] = {}
    balances: list[list[int]] = []
    try:
        for row in rows:
            line = rows.line_num
            if len(row) != len(header):
                raise LiabilitiesInvalid(f"{path}: line {line}: {len(row)} fields, the header has {len(header)}")
            account = row[0]
            if _ACCOUNT.fullmatch(account) is None:
                raise LiabilitiesInvalid(
                    f"{path}: line {line}: the account id must be 1 to 128 printable characters, no comma, no "
                    "surrounding spaces"
                )
            if account in seen:
                raise LiabilitiesInvalid(
                    f"{path}: line {line}: duplicate account id {account!r} (first on line {seen[account]})"
                )
            seen[account] = line
            ids.append(account.encode())
            balances.append([_balance(path, line, a, v, d) for a, v, d in zip(assets, row[1:], places, strict=True)])
    except csv.Error as exc:
        raise LiabilitiesInvalid(f"{path}: line {rows.line_num}: {exc}") from None
    if not ids:
        raise LiabilitiesInvalid(f"{path}: no accounts after the header")
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(i) for i in ids], out=offsets[1:])
    accounts = Accounts(snapshot_id, b"".join(ids), offsets, new_salts(len(ids)), np.array(balances, dtype=np.uint64))
    return assets, accounts


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
