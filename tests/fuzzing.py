"""What the fuzz tests share: their settings, a mutator of valid canonical files, and the one property they all
check (an answer, or one of the project's own errors)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from policies.errors import CustodyError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """A valid file with a few bytes flipped, cut, or inserted, or one JSON value swapped for another."""
    how = draw(st.sampled_from(["flip", "cut", "insert", "value"]))
    if how == "value":
        doc = json.loads(valid)
        node, path = doc, []
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
            path.append(key)
            node = node[key]
        target = doc
        for key in path[:-1]:
            target = target[key]
        if path:
            target[path[-1]] = draw(JSON_VALUES)
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    at = draw(st.integers(0, len(valid) - 1))
    if how == "flip":
        return valid[:at] + bytes([valid[at] ^ draw(st.integers(1, 255))]) + valid[at + 1 :]
    if how == "cut":
        return valid[:at] + valid[at + draw(st.integers(1, 40)) :]
    return valid[:at] + draw(st.binary(min_size=1, max_size=20)) + valid[at:]


def only_our_errors(parse: Callable[[Any], object], value: Any) -> None:
    try:
        parse(value)
    except CustodyError as exc:
        assert exc.code and exc.message
