"""The primitives of every reader of a policy, bundle or file of the project: one value at a time, each mistake
a ``PolicyFileError`` naming its location. ``human`` selects the spelling: decimal amounts, "1h" periods and
TOML datetimes in a file people edit; base-unit strings and integer seconds in the canonical form.

``policies.loader.Reader`` builds the policy's sections on top of these; the signer's and the daemon's file
readers use them directly.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any, TypeVar

from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
from nacl.exceptions import ValueError as NaclValueError

from policies.addresses import checksum_address
from policies.errors import AddressError, AmountError, PolicyFileError
from policies.text import label_problem
from policies.units import parse_amount, parse_base_units

_PERIOD = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_PERIOD = 10 * 365 * 86400  # the longest period either spelling accepts, so every file makes a valid bundle
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # admins, operators, backends and API keys
_ED25519_HEX = re.compile(r"[0-9a-f]{64}")
LAST_INSTANT = 253402300799  # 9999-12-31T23:59:59Z, the last second a calendar date can display
T = TypeVar("T")


class BaseReader:
    def __init__(self, *, human: bool) -> None:
        self.human = human

    def table(self, value: Any, path: str, required: set[str], optional: set[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise PolicyFileError(path, "must be a table")
        unknown = sorted(set(value) - required - (optional or set()))
        if unknown:
            raise PolicyFileError(join(path, unknown[0]), "unknown key")
        missing = sorted(required - set(value))
        if missing:
            raise PolicyFileError(join(path, missing[0]), "is required")
        return value

    def typed(self, value: Any, kind: type[T], path: str) -> T:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise PolicyFileError(path, f"must be {kind.__name__}, not {type(value).__name__}")
        return value

    def array(self, value: Any, path: str) -> list[Any]:
        return self.typed(value, list, path)

    def count(self, value: Any, path: str, low: int, high: int) -> int:
        number = self.typed(value, int, path)
        if not low <= number <= high:
            raise PolicyFileError(path, f"must be between {low} and {high}")
        return number

    def amount(self, value: Any, decimals: int, path: str, *, allow_zero: bool = False) -> int:
        try:
            if self.human:
                return parse_amount(value, decimals, allow_zero=allow_zero)
            number = parse_base_units(value)
        except AmountError as exc:
            raise PolicyFileError(path, exc.message) from None
        if number == 0 and not allow_zero:
            raise PolicyFileError(path, "must be greater than zero")
        return number

    def share(self, value: Any, path: str) -> int | None:
        """A percentage ("7.5", meaning 7.5 %) in the file; basis points (750) in the canonical form."""
        if value is None:
            return None
        if not self.human:
            return self.count(value, path, 0, 10_000)
        try:
            points = parse_amount(value, 2, allow_zero=True)
        except AmountError as exc:
            raise PolicyFileError(path, f'{exc.message} (a percentage such as "7.5")') from None
        if points > 10_000:
            raise PolicyFileError(path, "must be at most 100 (per cent)")
        return points

    def period(self, value: Any, path: str, *, allow_zero: bool = False) -> int:
        if not self.human:
            return self.count(value, path, 0 if allow_zero else 1, MAX_PERIOD)
        if allow_zero and value in ("0", "0s"):
            return 0
        match = _PERIOD.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise PolicyFileError(path, f'{value!r} is not a period such as "90s", "30m", "1h" or "7d"')
        seconds = int(match[1]) * _PERIOD_UNITS[match[2]]
        if seconds > MAX_PERIOD:  # the canonical form would refuse it: the bundle could never be read back
            raise PolicyFileError(path, f"must be at most {MAX_PERIOD // 86400}d")
        return seconds

    def instant(self, value: Any, path: str) -> int:
        if not self.human:
            # up to 9999-12-31 23:59:59 UTC: every instant read from a file can be shown to a person
            return self.count(value, path, 0, LAST_INSTANT)
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise PolicyFileError(path, "must be a date and time with a time zone, such as 2026-12-01T00:00:00Z")
        stamp = int(value.timestamp())
        if not 0 <= stamp <= LAST_INSTANT:
            raise PolicyFileError(path, "must be between 1970 and 9999")
        return stamp

    def address(self, value: Any, path: str) -> str:
        try:
            return checksum_address(value)
        except AddressError as exc:
            raise PolicyFileError(path, exc.message) from None

    def text(self, value: Any, path: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        string = self.typed(value, str, path)
        if pattern is not None and pattern.fullmatch(string) is None:
            raise PolicyFileError(path, f"{string!r} is not a valid {what}")
        if len(string) > 200 or any(ord(c) < 32 for c in string):
            raise PolicyFileError(path, "must be at most 200 printable characters")
        return string

    def label(self, value: Any, path: str) -> str:
        """Text shown to a person next to what it describes: a conservative character set (policies.text)."""
        string = self.text(value, path)
        problem = label_problem(string)
        if problem is not None:
            raise PolicyFileError(path, f"{problem} (labels and notes take letters, digits, spaces and punctuation)")
        return string

    def public_key(self, value: Any, path: str) -> str:
        """An Ed25519 public key: 64 lowercase hex digits that decode to a point of the curve's prime-order
        subgroup (libsodium refuses to convert anything else: off-curve and small-order points, which no key
        pair produces and with which a signature could verify for more than one message)."""
        key = self.text(value, path, _ED25519_HEX, "Ed25519 public key (64 hex digits)")
        try:
            crypto_sign_ed25519_pk_to_curve25519(bytes.fromhex(key))
        except (NaclValueError, RuntimeError):  # libsodium's -1 surfaces as RuntimeError
            raise PolicyFileError(path, "is not an Ed25519 public key (not a point of the curve)") from None
        return key

    def unique(self, items: list[T], key: Callable[[T], object], path: str, what: str) -> None:
        seen: set[object] = set()
        for i, item in enumerate(items):
            k = key(item)
            if k in seen:
                raise PolicyFileError(f"{path}[{i}]", f"duplicate {what} {k}")
            seen.add(k)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
