"""Every code the signer can refuse with is documented, and drawn in its ``errors.py``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import signer.errors
from policies.errors import BundleError, CustodyError
from signer.errors import SignerError

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _subclasses(root: type[CustodyError]) -> set[type[CustodyError]]:
    found = {root}
    for sub in root.__subclasses__():
        found |= _subclasses(sub)
    return found


SIGNER_ERRORS = sorted(_subclasses(SignerError) | _subclasses(BundleError), key=lambda c: c.code)


@pytest.mark.parametrize("error", SIGNER_ERRORS, ids=lambda c: c.code)
def test_every_signer_code_is_documented(error: type[CustodyError]) -> None:
    text = (DOCS / "batch-protocol.md").read_text() + (DOCS / "policy.md").read_text()
    assert f"`{error.code}`" in text


def test_each_code_is_one_class_drawn_in_its_errors_docstring() -> None:
    module = signer.errors
    own = [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, CustodyError) and c.__module__ == getattr(module, "__name__")
    ]
    codes = [c.code for c in own]
    assert len(codes) == len(set(codes)), "two classes share a code"
    doc = getattr(module, "__doc__") or ""
    for c in own:
        assert re.search(rf"\b{c.__name__}\s+{c.code}\b", doc), f"{c.__name__} {c.code} is not drawn"
