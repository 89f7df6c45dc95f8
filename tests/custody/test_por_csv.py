"""The columnar liabilities reader: every refusal with its line, and the same answers as the row-by-row
reference (``_read_liabilities_rows``) on random files, valid and not."""

from __future__ import annotations

import codecs
import itertools
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custody.errors import LiabilitiesInvalid
from custody.por.csvcolumns import WHITESPACE, account_ids_ok, decimal_column, fingerprints, first_duplicate
from custody.por.liabilities import _read_liabilities_rows, read_liabilities
from custody.por.liabilityrows import ACCOUNT_ID, first_bad_utf8
from policies.errors import AmountError
from policies.units import parse_amount

DECIMALS = {"ETH": 9, "USDC": 6, "WBTC": 8}
ID = "the account id must be 1 to 128 printable characters"

REFUSALS = [
    ("account_id,ETH\nalice,1\nbob,-1\n", "line 3: ETH: negative balance '-1'"),
    ("account_id,ETH\nalice,0.0000000001\n", "line 2: ETH: amount '0.0000000001' has more than 9 decimal places"),
    ("account_id,USDC\na,1\nb,18446744073709.551616\n", "line 3: USDC: 18446744073709.551616 is 2^64 base units"),
    (
        "account_id,USDC\na,18446744073709.551615\nb,99999999999999999999\n",
        "line 3: USDC: 99999999999999999999 is 2^64",
    ),
    ("account_id,ETH\nalice,1\nbob,2\nalice,3\n", "line 4: duplicate account id 'alice' (first on line 2)"),
    ("account_id,ETH\nalice,1\nalice,-3\n", "line 3: duplicate account id 'alice' (first on line 2)"),
    ('account_id,ETH\nalice,1\nalice,"1,5"\n', "line 3: duplicate account id 'alice' (first on line 2)"),
    ("account_id,ETH,USDC\nalice,1,2\nbob,1\n", "line 3: 2 fields, the header has 3"),
    ("account_id,ETH\nalice,1\nbob,1,2\n", "line 3: 3 fields, the header has 2"),
    ("account_id,ETH\nalice,1\n\nbob,1\n", "line 3: 0 fields, the header has 2"),
    ("account_id,DOGE\nalice,1\n", "line 1: unknown asset 'DOGE'"),
    ("account_id,ETH,ETH\nalice,1,1\n", "line 1: an asset appears twice"),
    ("id,ETH\nalice,1\n", "line 1: the header must be account_id"),
    ("account_id\nalice\n", "line 1: the header must be account_id"),
    ("", "line 1: a header account_id,<ASSET>,… is required"),
    ("account_id,ETH\n", "no accounts after the header"),
    ("account_id,ETH\n alice,1\n", f"line 2: {ID}"),
    ("account_id,ETH\nalice\u3000,1\n", f"line 2: {ID}"),
    ("account_id,ETH\na\x01b,1\n", f"line 2: {ID}"),
    ("account_id,ETH\n,1\n", f"line 2: {ID}"),
    ("account_id,ETH\n" + "é" * 129 + ",1\n", f"line 2: {ID}"),
    ('account_id,ETH\nok,1\n"a,b",1\n', f"line 3: {ID}"),
    ('account_id,ETH\nok,1\n"a\nb",1\n', f"line 4: {ID}"),  # the reference counts the record's last line
    ('account_id,ETH\nok,1\n"a"b,1\n', "line 3: ',' expected after '\"'"),
    ("account_id,ETH\nalice,1e3\n", "line 2: ETH: amount '1e3' is not a plain decimal number"),
    ("account_id,ETH\nalice,+1\n", "line 2: ETH: amount '+1' is not a plain decimal number"),
    ("account_id,ETH\nalice, 1\n", "line 2: ETH: amount ' 1' is not a plain decimal number"),
    ("account_id,ETH\nalice,\n", "line 2: ETH: amount '' is not a plain decimal number"),
    ("account_id,ETH\nalice,1.\n", "line 2: ETH: amount '1.' is not a plain decimal number"),
    ("account_id,ETH\nalice,.5\n", "line 2: ETH: amount '.5' is not a plain decimal number"),
    ("account_id,ETH\nalice,1.2.3\n", "line 2: ETH: amount '1.2.3' is not a plain decimal number"),
    ("account_id,ETH\nalice,١\n", "line 2: ETH: amount '١' is not a plain decimal number"),
    ("account_id,ETH\r\nalice,1\r\nbob,x\r\n", "line 3: ETH: amount 'x' is not a plain decimal number"),
    ("account_id,ETH\ralice,1\rbob,x\r", "line 3: ETH: amount 'x' is not a plain decimal number"),
]


def _write(tmp_path: Path, body: str | bytes) -> Path:
    path = tmp_path / "balances.csv"
    path.write_bytes(body.encode() if isinstance(body, str) else body)
    return path


def _outcome(reader, path: Path) -> tuple:  # type: ignore[no-untyped-def]
    try:
        assets, acc = reader(path, DECIMALS, bytes(32))
    except LiabilitiesInvalid as exc:
        return ("refused", exc.message)
    assert len(acc.salts) == 32 * acc.count and acc.balances.dtype == np.uint64 and acc.offsets.dtype == np.int64
    return ("read", assets, acc.ids, acc.offsets.tolist(), acc.balances.tolist())


@pytest.mark.parametrize(("body", "fragment"), REFUSALS)
def test_every_refusal_names_its_line(tmp_path, body, fragment):
    path = _write(tmp_path, body)
    with pytest.raises(LiabilitiesInvalid) as info:
        read_liabilities(path, DECIMALS, bytes(32))
    assert fragment in info.value.message
    assert _outcome(_read_liabilities_rows, path) == ("refused", info.value.message)


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        (b"account_id,ETH\nalice,1\nb\xffb,2\n", 3),
        (b"account_id,ETH\r\nalice,1\r\nbob,2\r\n\xe2\x82", 4),  # a character cut off at the end
        (b"\xef\xbb\xbfaccount_id,DOGE\nalice,1\n\xed\xa0\x80,1\n", 3),  # a surrogate; before the header's mistake
    ],
)
def test_bytes_that_are_not_utf8_are_refused_with_their_line(tmp_path, raw, line):
    path = _write(tmp_path, raw)
    with pytest.raises(LiabilitiesInvalid, match=f"line {line}: cannot be read as UTF-8 text") as info:
        read_liabilities(path, DECIMALS, bytes(32))
    assert _outcome(_read_liabilities_rows, path) == ("refused", info.value.message)


def test_byte_order_mark_quotes_and_line_ends_are_read_as_before(tmp_path):
    path = _write(tmp_path, '\ufeff"account_id",ETH,USDC\r\n"al""ice",1.50,2500\rbob,0,012.000001000\n"é",1,"2"')
    assets, acc = read_liabilities(path, DECIMALS, bytes(32))
    assert assets == ["ETH", "USDC"] and acc.ids == 'al"icebobé'.encode()
    assert acc.offsets.tolist() == [0, 6, 9, 11]
    assert acc.balances.tolist() == [[1_500_000_000, 2_500_000_000], [0, 12_000_001], [1_000_000_000, 2_000_000]]
    assert _outcome(_read_liabilities_rows, path) == _outcome(read_liabilities, path)


def test_a_file_with_every_field_quoted_is_read_as_before(tmp_path):
    rows = [f'"cust-{i}","{i}.25","{i % 7}"' for i in range(2000)] + ['"a""b","1",""""', '"","1","2"', '"c""","0","0"']
    path = _write(tmp_path, '"account_id","ETH","USDC"\n' + "\n".join(rows[:2000]) + "\n")
    _, acc = read_liabilities(path, DECIMALS, bytes(32))
    assert acc.account_id(1999) == "cust-1999" and acc.balances[1999].tolist() == [1999_250_000_000, 4_000_000]
    assert _outcome(_read_liabilities_rows, path) == _outcome(read_liabilities, path)
    for extra in rows[2000:]:
        path = _write(tmp_path, '"account_id","ETH","USDC"\n' + "\n".join([*rows[:5], extra]) + "\n")
        assert _outcome(_read_liabilities_rows, path) == _outcome(read_liabilities, path)


ROWS = 400_000  # about 10 MB: more than one of Arrow's blocks, so lines are counted across batches


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("cust-0000000007,1,2", "line 300002: duplicate account id 'cust-0000000007' (first on line 9)"),
        ("x,1", "line 300002: 2 fields, the header has 3"),
        ("x,1,2,3", "line 300002: 4 fields, the header has 3"),
        ("x,1,0.0000001", "line 300002: USDC: amount '0.0000001' has more than 6 decimal places"),
        ("x,1,2\nx,2,3", "line 300003: duplicate account id 'x' (first on line 300002)"),
    ],
)
def test_a_mistake_deep_in_a_large_file_is_found_on_its_line(tmp_path, bad, fragment):
    rows = [f"cust-{i:010d},{i}.5,{i % 1000}" for i in range(ROWS)]
    rows[300_000] = bad
    path = _write(tmp_path, "account_id,ETH,USDC\n" + "\n".join(rows) + "\n")
    with pytest.raises(LiabilitiesInvalid) as info:
        read_liabilities(path, DECIMALS, bytes(32))
    assert fragment in info.value.message


def test_a_large_file_is_read_whole_with_progress(tmp_path):
    rows = [f"cust-{i:010d},{i}.5,{i % 1000}" for i in range(ROWS)]
    path = _write(tmp_path, "account_id,ETH,USDC\n" + "\n".join(rows) + "\n")
    calls: list[tuple[int, int]] = []
    _, acc = read_liabilities(path, DECIMALS, bytes(32), progress=lambda done, total: calls.append((done, total)))
    size = path.stat().st_size
    assert acc.count == ROWS and acc.account_id(ROWS - 1) == f"cust-{ROWS - 1:010d}"
    assert acc.balances[12345].tolist() == [12345_500_000_000, 345_000_000]
    assert calls[-1] == (size, size) and all(a[0] <= b[0] for a, b in itertools.pairwise(calls))
    assert len(set(acc.salts[i * 32 : i * 32 + 32] for i in range(1000))) == 1000


def test_a_fingerprint_depends_on_the_cell_alone():
    alone = fingerprints(pa.array(["0", "abcdefghij"], type=pa.large_string()))
    among_longer = fingerprints(pa.array(["0", "x" * 300, "abcdefghij"], type=pa.large_string()))
    assert alone.tolist() == among_longer[[0, 2]].tolist()


def test_whitespace_is_exactly_what_python_re_calls_whitespace():
    assert "".join(c for c in map(chr, range(0x110000)) if re.match(r"\s", c)) == WHITESPACE


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64])
@pytest.mark.parametrize(
    "raw", [b"abc\xe2\x82\xacd\xff", b"\xe2\x82", b"ab\xe2\x82x", b"\xf0\x9f\x98\x80\xf0\x9f\x98", b"\xc0\xaf", b"ok"]
)
def test_the_first_bad_utf8_byte_is_found_across_chunk_boundaries(tmp_path, raw, chunk):
    path = _write(tmp_path, raw)
    try:
        raw.decode()
        expected = None
    except UnicodeDecodeError as exc:
        expected = (exc.start, exc.reason)
    assert first_bad_utf8(path, chunk) == expected


# -- the columns against the reference rules, cell by cell ---------------------------------------------------
def _reference_amount(text: str, places: int) -> int | None:
    if text.startswith("-"):
        return None
    try:
        value = parse_amount(text, places, allow_zero=True)
    except AmountError:
        return None
    return value if value < 2**64 else None


DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=24)
AMOUNTS = st.one_of(
    DIGITS,
    st.builds(lambda a, b: f"{a}.{b}", DIGITS, DIGITS),
    st.builds(lambda a, b, z: f"{a}.{b}{'0' * z}", DIGITS, DIGITS, st.integers(0, 40)),
    st.builds(lambda z, v: "0" * z + str(v), st.integers(0, 60), st.integers(0, 2**70)),
    st.integers(2**64 - 1000, 2**64 + 1000).map(str),
    st.text(alphabet="0123456789.-+e ,\x00١", max_size=12),
    st.text(max_size=6),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(AMOUNTS, max_size=40), st.integers(0, 45))
def test_decimal_column_is_parse_amount(cells, places):
    values, ok = decimal_column(pa.array(cells, type=pa.large_string()), places)
    expected = [_reference_amount(c, places) for c in cells]
    assert ok.tolist() == [e is not None for e in expected]
    assert values.tolist() == [0 if e is None else e for e in expected]


IDS = st.one_of(
    st.text(min_size=0, max_size=130),
    st.text(alphabet=" \u3000\x85a,é\x7f\t", max_size=5),
    st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(IDS, max_size=30))
def test_account_ids_follow_the_reference_pattern(ids):
    column = pa.array(ids, type=pa.large_string())
    assert account_ids_ok(column).tolist() == [ACCOUNT_ID.fullmatch(i) is not None for i in ids]
    hashes = fingerprints(column)
    seen: dict[str, int] = {}
    expected = None
    for row, i in enumerate(ids):
        if i in seen:
            expected = (row, seen[i])
            break
        seen[i] = row
    assert first_duplicate(column, hashes) == expected
    assert first_duplicate(column) == expected


# -- whole files: the same answer as the reference -------------------------------------------------------------
SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
GOOD_IDS = st.one_of(
    st.from_regex(r"[A-Za-z0-9_@.\-]{1,16}", fullmatch=True),
    st.text(min_size=1, max_size=8).filter(lambda i: ACCOUNT_ID.fullmatch(i) is not None),
)


def _amount(draw: st.DrawFn, places: int) -> str:
    units = draw(st.one_of(st.integers(0, 10**12), st.integers(0, 2**64 - 1), st.just(0)))
    whole, frac = divmod(units, 10**places)
    text = f"{whole}.{frac:0{places}d}".rstrip("0").rstrip(".") if places else str(whole)
    text = "0" * draw(st.integers(0, 2)) + text
    if "." in text and draw(st.booleans()):
        text += "0" * draw(st.integers(1, 12))
    return text


def _field(draw: st.DrawFn, text: str) -> str:
    if draw(st.integers(0, 5)) == 0 or any(c in text for c in ',"\r\n') or text[:1] == '"':
        return '"' + text.replace('"', '""') + '"'
    return text


@st.composite
def files(draw: st.DrawFn, *, spoil: bool) -> bytes:
    assets = draw(st.lists(st.sampled_from(list(DECIMALS)), min_size=1, max_size=3, unique=True))
    ids = draw(st.lists(GOOD_IDS, min_size=1, max_size=25, unique=True))
    lines = [",".join(_field(draw, c) for c in ["account_id", *assets])]
    for account in ids:
        lines.append(",".join(_field(draw, c) for c in [account, *(_amount(draw, DECIMALS[a]) for a in assets)]))
    if spoil:
        where = draw(st.integers(0, len(lines)))
        mistake = draw(
            st.one_of(
                st.sampled_from(["", ",", "x,1", '"', 'a,"1', "-1", "1e3", "0.0000000001", str(2**64), " a,1"]),
                st.text(max_size=10),
            )
        )
        kind = draw(st.integers(0, 2))
        if kind == 0 or where == len(lines):
            lines.insert(where, mistake)
        elif kind == 1:
            lines[where] = lines[where] + mistake
        else:
            cells = lines[where].split(",")
            cells[draw(st.integers(0, len(cells) - 1))] = mistake
            lines[where] = ",".join(cells)
        if draw(st.booleans()):
            lines.append(lines[draw(st.integers(1, len(lines) - 1))] if len(lines) > 1 else "dup,1")
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = end.join(lines) + draw(st.sampled_from(["", end]))
    raw = (codecs.BOM_UTF8 if draw(st.booleans()) else b"") + text.encode("utf-8", "surrogatepass")
    if spoil and draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xe2\x82", b"\xed\xa0\x80", b"\x00"])) + raw[at:]
    return raw


@SETTINGS
@given(files(spoil=False))
def test_valid_files_read_as_the_reference_reads_them(tmp_path, raw):
    path = _write(tmp_path, raw)
    expected = _outcome(_read_liabilities_rows, path)
    assert _outcome(read_liabilities, path) == expected


@SETTINGS
@given(files(spoil=True))
def test_spoiled_files_get_the_reference_answer(tmp_path, raw):
    path = _write(tmp_path, raw)
    expected = _outcome(_read_liabilities_rows, path)
    assert _outcome(read_liabilities, path) == expected
