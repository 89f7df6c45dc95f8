"""The operators' console in a real headless chromium, over data from a real flow on anvil: withdrawals through
the API, one paid hot on chain, one queued for the cold wallet, a customer payout held for review. One browser
session signs in through the one-time URL `custody console login`
printed, visits every page, verifies the audit chain, freezes through the form (the overview then shows it),
and is refused the same link again, an expired one, and every page once signed out."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from selenium.webdriver.common.by import By
from sqlalchemy import select

from custody.api.client import CustodyClient
from custody.clock import FixedClock
from custody.console.auth import issue_token
from custody.console.deps import ConsoleSettings
from custody.store.models import Withdrawal
from policies.model import Backend, HoldRules, Limits, Operator, Policy, Window
from tests.browser import browser_log, chromium, click, console_sign_in  # noqa: F401  (chromium: the module's browser)
from tests.browser import page_text as text
from tests.cli_helpers import custody
from tests.conftest import DAY, running_server
from tests.custody.test_console import running_console
from tests.integration.conftest import make_cold, make_daemon, recipients, sign_as
from tests.integration.test_hot_wallet import wait_until

OPERATORS = {name: SigningKey(bytes([0x61 + i]) * 32) for i, name in enumerate(["olga", "piet"])}
LIABILITIES = "account_id,ETH,TOK\nalice,100.5,2500\nbob,250,0.000001\n"


def console_policy(policy: Policy, backend_key: str) -> Policy:
    """The integration policy, plus two operators, the client as a backend, unlisted ETH payouts, and a hold on
    a customer's first payout to an address."""
    eth = replace(policy.assets["ETH"], unlisted=Limits(policy.assets["ETH"].max_per_transfer, (Window(DAY, 10**30),)))
    return replace(
        policy,
        assets={**policy.assets, "ETH": eth},
        operators=tuple(Operator(n, k.verify_key.encode().hex()) for n, k in OPERATORS.items()),
        backends=(Backend("backend", backend_key),),
        holds=HoldRules(first_payout=True),
    )


def flow(
    tmp_path: Path, db_url: str, chain, *, cold: bool = False, edit: Callable[[Policy, str], Policy] = console_policy
) -> tuple[object, dict[str, str], tuple[str, ...]]:
    """The data the pages show; returns the daemon, the withdrawals' ids by kind, and the config arguments.
    ``cold``: with a 2-of-3 Safe, a batch one owner has signed and a proof-of-reserves snapshot too (the
    screenshots show them; the batches page with a real Safe batch and the reserves page with a real statement
    are tested at the end of the cold wallet's and the reserves' own tests, which have them already, for time:
    ``tests.integration.console_helpers``)."""
    if cold:
        daemon, ops, _, cfg, _ = make_cold(tmp_path, db_url, chain, edit)
    else:
        daemon, ops = make_daemon(tmp_path, db_url, chain, n_recipients=3, edit_policy=edit), []
        cfg = ("--config", daemon.config, "--passphrase-file", daemon.passphrase_file)
    worker = daemon.worker(chain)
    worker.step()  # registers the wallet and reads its balances, so intake can route hot
    people = daemon.recipients
    with (
        running_server(daemon.store, tmp_path) as srv,
        CustodyClient(srv.url, daemon.client_key.name, daemon.client_key.key) as client,
    ):
        ids = {
            "hot": client.create_withdrawal("ETH", "0.5", people[0], idempotency_key=str(uuid.uuid4()))["id"],
            "cold": client.create_withdrawal("ETH", "7", people[1], idempotency_key=str(uuid.uuid4()))["id"],
            "held": client.create_withdrawal(
                "ETH", "0.2", recipients(1, "cust")[0], idempotency_key=str(uuid.uuid4()), customer="cust-1"
            )["id"],
        }

    def paid() -> bool:
        worker.step()
        with daemon.store.read() as s:
            return s.execute(select(Withdrawal.state).where(Withdrawal.id == ids["hot"])).scalar_one() == "confirmed"

    wait_until(paid, timeout=60, every=0.05)
    if not cold:
        return daemon, ids, cfg
    outbox = tmp_path / "outbox"
    custody("batch", "export", "--out", outbox, *cfg)
    batch_file = next(outbox.glob("batch-*.json"))
    sign_as(ops[0], batch_file, tmp_path / "op0.sig", daemon.passphrase_file)
    custody("batch", "import", tmp_path / "op0.sig", *cfg)
    (tmp_path / "balances.csv").write_text(LIABILITIES)
    custody(
        "por",
        "snapshot",
        "--liabilities",
        tmp_path / "balances.csv",
        "--out",
        tmp_path / "snap",
        "--decimals",
        "ETH=9",
        *cfg,
    )
    return daemon, ids, cfg


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_console_in_a_browser(tmp_path, db_url, chain, chromium):  # noqa: F811
    started = time.monotonic()
    daemon, ids, cfg = flow(tmp_path, db_url, chain)
    prepared = time.monotonic()
    key = tmp_path / "olga.review.key"
    key.write_text(bytes(OPERATORS["olga"]).hex() + "\n")
    clock = FixedClock(int(time.time()))
    settings = ConsoleSettings(rpc_url=chain.anvil.url, chain_id=31337)
    driver = chromium
    with running_console(daemon.store, clock, settings) as console:
        url = custody("console", "login", *cfg[:2], "--operator", "olga", "--key", key, "--url", console.url)
        link = url.stdout.strip().splitlines()[0]

        driver.get(f"{console.url}/batches")  # no session yet
        assert driver.current_url == f"{console.url}/signin" and "custody console login" in text(driver)

        console_sign_in(driver, console.url, link)
        home = text(driver)
        assert "Payments are running" in home and "answers" in home and "olga" in home
        assert driver.find_elements(By.CSS_SELECTOR, "svg.band")  # the hot share against its band

        driver.get(f"{console.url}/withdrawals")
        rows = driver.find_elements(By.CSS_SELECTOR, "#withdrawals tbody tr")
        assert len(rows) == 3
        click(driver, By.CSS_SELECTOR, f'a[href="/withdrawals/{ids["hot"]}"]')
        page = text(driver)
        assert "confirmed" in page and "withdrawal.confirmed" in page and "0x" in driver.find_element(By.ID, "tx").text

        driver.get(f"{console.url}/review")
        assert ids["held"][:8] in text(driver) and "hold:first_payout" in text(driver)

        driver.get(f"{console.url}/batches")
        assert "No Safe batch yet" in driver.find_element(By.ID, "safe-batches").text

        driver.get(f"{console.url}/policy?a=0&b=1")
        assert "+ operators." in driver.find_element(By.ID, "diff").text

        driver.get(f"{console.url}/audit?subject={ids['cold']}")
        assert "withdrawal.queued_cold" in text(driver)
        click(driver, By.ID, "verify")
        assert "The chain verifies" in driver.find_element(By.ID, "verdict").text

        driver.get(f"{console.url}/reserves")
        assert "custody por snapshot" in text(driver)

        driver.get(f"{console.url}/")
        driver.find_element(By.ID, "reason").send_keys("browser test: freeze")
        click(driver, By.ID, "freeze")
        assert driver.current_url == f"{console.url}/"
        frozen = driver.find_element(By.ID, "frozen").text
        assert "FROZEN" in frozen and "browser test: freeze" in frozen and "console:olga" in frozen

        severe = [e for e in browser_log(driver) if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
        assert severe == []  # no Content-Security-Policy violation, no blocked load, no script error on any page

        driver.get(link)  # the same link again
        assert "login_token_used" in text(driver)
        late = issue_token(daemon.store, "piet", clock.now(), ttl=60)
        clock.advance(60)
        driver.get(f"{console.url}/login?token={late}")
        assert "login_token_expired" in text(driver)

        driver.get(f"{console.url}/audit")
        click(driver, By.CSS_SELECTOR, "form.signout button")
        assert driver.current_url == f"{console.url}/signin"
        driver.get(f"{console.url}/withdrawals")
        assert driver.current_url == f"{console.url}/signin"
    print(f"flow {prepared - started:.1f} s, browser {time.monotonic() - prepared:.1f} s")
