"""Every code the API can answer with is documented, with the status it is answered with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import custody.errors
import policies.errors
from custody.api.problems import API_CODES, STATUS, status_for
from policies.errors import CustodyError

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _subclasses(root: type[CustodyError]) -> set[type[CustodyError]]:
    found = {root}
    for sub in root.__subclasses__():
        found |= _subclasses(sub)
    return found


# Errors the daemon's request handling can raise: those of the daemon and of the policy engine (the signer's
# own errors are raised on the air-gapped machine only).
API_ERRORS = sorted(
    (c for c in _subclasses(CustodyError) if c.__module__ in (custody.errors.__name__, policies.errors.__name__)),
    key=lambda c: c.code,
)


def _documented() -> dict[str, set[str]]:
    """code -> the statuses the error table of docs/api.md gives it."""
    table = API_DOC.read_text().split("## Error codes", 1)[1]
    statuses: dict[str, set[str]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and (cells[0].isdigit() or cells[0] == "any"):
            for code in re.findall(r"`(\w+)`", cells[1]):
                statuses.setdefault(code, set()).add(cells[0])
    return statuses


def test_every_mapped_class_is_an_error_of_the_api():
    assert all(c in API_ERRORS for c in STATUS)


@pytest.mark.parametrize("error", API_ERRORS, ids=lambda c: c.code)
def test_every_error_code_is_in_the_api_doc_with_its_status(error: type[CustodyError]) -> None:
    assert _documented().get(error.code) == {str(status_for(error))}


@pytest.mark.parametrize("code", API_CODES)
def test_the_api_own_codes_are_in_the_api_doc(code: str) -> None:
    assert code in _documented()


@pytest.mark.parametrize("module", [custody.errors, policies.errors])
def test_each_code_is_one_class_drawn_in_its_errors_docstring(module: object) -> None:
    classes = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, CustodyError)]
    own = [c for c in classes if c.__module__ == getattr(module, "__name__")]
    codes = [c.code for c in own]
    assert len(codes) == len(set(codes)), "two classes share a code"
    doc = getattr(module, "__doc__") or ""
    for c in own:
        assert re.search(rf"\b{c.__name__}\s+{c.code}\b", doc), f"{c.__name__} {c.code} is not drawn"
