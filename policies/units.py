"""Amounts: integers in the asset's smallest unit inside, decimal strings only at the edges."""

from __future__ import annotations

import re

from policies.errors import AmountError

_DECIMAL = re.compile(r"(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]+))?")
# Large enough for any uint256 token balance; bounds work done on hostile input.
MAX_DIGITS = 78


def parse_amount(text: str, decimals: int, *, allow_zero: bool = False) -> int:
    """Parse a decimal string in the asset's units ("1.5") into base units (1500000000000000000)."""
    if not isinstance(text, str):
        raise AmountError('amount must be a decimal string, such as "1.25"')
    match = _DECIMAL.fullmatch(text)
    if match is None or len(text) > MAX_DIGITS + 1:
        raise AmountError(f"amount {text[:40]!r} is not a plain decimal number")
    frac = (match["frac"] or "").rstrip("0")
    if len(frac) > decimals:
        raise AmountError(f"amount {text!r} has more than {decimals} decimal places")
    value: int = int(match["int"]) * 10**decimals + int(frac.ljust(decimals, "0") or "0")
    if value == 0 and not allow_zero:
        raise AmountError("amount must be greater than zero")
    if value >= 2**256:
        raise AmountError("amount is too large")
    return value


def format_amount(value: int, decimals: int) -> str:
    """Base units to the shortest exact decimal string in the asset's units."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**decimals)
    text = f"{whole}.{frac:0{decimals}d}".rstrip("0").rstrip(".") if decimals else str(whole)
    return sign + text


def parse_base_units(text: object) -> int:
    """A canonical amount: a string of decimal digits in base units, no sign, no leading zeros."""
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > MAX_DIGITS:
        raise AmountError(f"{text!r} is not an amount in base units")
    if len(text) > 1 and text[0] == "0":
        raise AmountError(f"{text!r} has leading zeros")
    return int(text)
