"""The operators' console over an integration test's daemon, for a test that already has the data a page shows
(a Safe batch, a proof-of-reserves statement): name an operator in a new policy version, serve the console on
the daemon's store and sign the module's chromium in through a one-time link. Costs about a second."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from nacl.signing import SigningKey
from selenium import webdriver

from custody.clock import SystemClock
from custody.console.auth import issue_token
from custody.ledger import policy as policy_service
from custody.store.db import Store
from policies.bundle import make_bundle, sign_bundle
from policies.model import Operator
from tests.browser import console_sign_in
from tests.conftest import ADMINS
from tests.custody.test_console import running_console

OPERATOR = "olga"
OPERATOR_KEY = SigningKey(b"\x6f" * 32)


def name_operator(store: Store, name: str = OPERATOR, key: SigningKey = OPERATOR_KEY) -> None:
    """The active policy plus ``name`` under [[operators]], applied as the next version by two admins (only a
    policy's operators may sign in)."""
    now = int(time.time())
    head, bundle = policy_service.current(store)
    assert bundle is not None, "the daemon has no policy yet"
    policy = bundle.policy
    operators = (*(o for o in policy.operators if o.name != name), Operator(name, key.verify_key.encode().hex()))
    new = make_bundle(replace(policy, operators=operators), head, max(now - 60, bundle.created_at))
    policy_service.apply(store, new.raw, [sign_bundle(new.hash, k).to_bytes() for k in ADMINS[:2]], now)


@contextmanager
def console_signed_in(store: Store, driver: webdriver.Chrome, name: str = OPERATOR) -> Iterator[str]:
    """The console on ``store``, ``driver`` signed in as operator ``name``; yields the console's base URL."""
    name_operator(store, name)
    with running_console(store, SystemClock()) as console:
        link = f"{console.url}/login?token={issue_token(store, name, int(time.time()))}"
        console_sign_in(driver, console.url, link)
        yield console.url
