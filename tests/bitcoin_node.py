"""The session's real bitcoind -regtest (``bitcoind`` fixture), registered in tests/conftest.py.

Nothing is skipped: without bitcoind the tests that ask for it fail and say how to get it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from custody.chain.bitcoindev import Regtest, find_bitcoind


@pytest.fixture(scope="session")
def bitcoind() -> Iterator[Regtest]:
    """``.node()``, ``.url``, ``.user``, ``.password``, ``.datadir``, ``.mine(blocks, address=None)`` (to the
    faucet wallet by default) and ``.funded_wallet(name)``: a new descriptor wallet with 10 confirmed BTC."""
    if find_bitcoind() is None:
        pytest.fail("bitcoind is not installed: run make test (it fetches bitcoind)")
    with Regtest() as node:
        yield node
