"""Fuzzing the proof-of-reserves inputs: the liabilities CSV and a customer's proof file. The answer is always
the parsed input or one of the project's own errors."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custody.por.liabilities import read_liabilities
from custody.por.proofs import AccountProof, parse_proof
from custody.por.tree import Sibling
from policies.errors import CustodyError
from tests.fuzzing import mutated, only_our_errors

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
CSV = "account_id,ETH,USDC\nalice,1.5,2500\nbob,0,12.000001\n"
ASSETS = ["ETH", "USDC"]
PROOF = AccountProof(bytes(32), "alice", 1, bytes(32), (5, 6), (Sibling(bytes(32), (1, 2)),)).to_bytes(ASSETS)
CELLS = st.sampled_from(
    ["", "-1", "1e5", "0.0000001", "18446744073709551616", "x,y", '"q', "\x00", " a", "1" * 90, "ü"]
)


@st.composite
def edited_csv(draw: st.DrawFn) -> str:
    rows = [line.split(",") for line in CSV.splitlines()]
    r = draw(st.integers(0, len(rows) - 1))
    c = draw(st.integers(0, len(rows[r]) - 1))
    rows[r][c] = draw(st.one_of(CELLS, st.text(max_size=8)))
    if draw(st.booleans()):
        rows.append(draw(st.lists(st.one_of(CELLS, st.text(max_size=5)), max_size=4)))
    return "\n".join(",".join(row) for row in rows) + draw(st.sampled_from(["", "\n", "\r\n", ","]))


@FUZZ
@given(st.one_of(st.text(max_size=200), edited_csv()))
def test_liabilities_reader(tmp_path, text):
    path = tmp_path / "balances.csv"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))  # lone surrogates make bytes that are not UTF-8
    try:
        read_liabilities(path, {"ETH": 9, "USDC": 6}, bytes(32))
    except CustodyError as exc:
        assert (exc.code == "liabilities_invalid" and "line" in exc.message) or "no accounts" in exc.message


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(PROOF)))
def test_proof_reader(raw):
    only_our_errors(lambda value: parse_proof(value, ASSETS), raw)
