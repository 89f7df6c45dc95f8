"""Text that a person reads before approving something: labels, notes and names from files.

A label is shown to an operator next to the address it vouches for, so it must not be able to change what
the screen shows: no control characters (C0 or C1), no format characters (which include every bidirectional
override and isolate, zero-width joiners and the like), no line or paragraph separators, no combining marks
that could stack over neighbouring text, nothing unassigned or private. What remains is letters, digits,
punctuation, symbols and the plain space, in NFC form.

``escape`` is for display: whatever a file holds, what reaches the terminal is printable and cannot move the
cursor or reorder text; a refused character shows as ``\\u202e`` (for example).
"""

from __future__ import annotations

import datetime as dt
import unicodedata

_ALLOWED_CATEGORIES = frozenset("LNPS")
# Letters and symbols that draw nothing: Hangul fillers and the blank Braille pattern.
_BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def allowed(char: str) -> bool:
    return char == " " or (unicodedata.category(char)[0] in _ALLOWED_CATEGORIES and char not in _BLANK)


def label_problem(text: str) -> str | None:
    """Why ``text`` is not a safe label, or None."""
    for char in text:
        if not allowed(char):
            return f"character U+{ord(char):04X} ({unicodedata.name(char, 'unnamed')}) is not allowed"
    if unicodedata.normalize("NFC", text) != text:
        return "must be in Unicode NFC form"
    if text != text.strip():
        return "must not start or end with a space"
    return None


def escape(text: str) -> str:
    """``text`` with every character that is not allowed written as a visible escape."""
    if all(allowed(c) for c in text) and "\\" not in text:
        return text
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif allowed(char):
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def when(ts: int) -> str:
    """A unix time as people read it, in UTC (every instant the parsers accept can be shown)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
