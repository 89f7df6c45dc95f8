"""Fuzzing the policy TOML loader and the canonical reader: a policy or a PolicyFileError, nothing else."""

from __future__ import annotations

import json
from importlib.resources import files

from hypothesis import given
from hypothesis import strategies as st

from policies.loader import load_policy_toml, policy_from_canonical, policy_to_canonical
from tests.fuzzing import FUZZ, only_our_errors

EXAMPLE = files("policies").joinpath("examples/policy.toml").read_text()
CANONICAL = json.dumps(policy_to_canonical(load_policy_toml(EXAMPLE)))


@st.composite
def edited(draw: st.DrawFn, text: str) -> str:
    """The shipped example with a line dropped, duplicated or rewritten, or a stretch of characters replaced."""
    lines = text.splitlines()
    i = draw(st.integers(0, len(lines) - 1))
    how = draw(st.sampled_from(["drop", "dup", "line", "chars"]))
    if how == "drop":
        del lines[i]
    elif how == "dup":
        lines.insert(i, lines[i])
    elif how == "line":
        key = lines[i].split("=")[0] if "=" in lines[i] else lines[i]
        lines[i] = (
            key
            + "= "
            + draw(
                st.sampled_from(
                    [
                        '"-1"',
                        '"1e3"',
                        "1.5",
                        '""',
                        "[]",
                        "{}",
                        '"99999999999999999999999999999999999999999999999999999999999999999999999999999999"',
                        '"0"',
                        "true",
                        '"1h"',
                        '"0x00"',
                    ]
                )
            )
        )
    else:
        at = draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:at] + draw(st.text(max_size=6)) + lines[i][at + draw(st.integers(0, 6)) :]
    return "\n".join(lines)


@FUZZ
@given(st.one_of(st.text(max_size=300), edited(EXAMPLE)))
def test_toml_loader(text):
    only_our_errors(load_policy_toml, text)


@FUZZ
@given(edited(CANONICAL.replace(",", ",\n")))
def test_canonical_reader(text):
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return
    only_our_errors(policy_from_canonical, data)
