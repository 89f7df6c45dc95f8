"""The screenshots in docs/console.md: a demo-like dataset on a local anvil (a 2-of-3 Safe, withdrawals through
the API, one paid hot, a cold batch one owner has signed, a customer payout held for review, a
proof-of-reserves snapshot), the console served over it, and Debian's headless chromium (the browser
tests' own setup, ``tests.browser``) signed in through a one-time link, saving each page as a PNG in
docs/console/. Run: ``.venv/bin/python scripts/console-screenshots.py``."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402

from custody.api.client import CustodyClient  # noqa: E402
from custody.chain.devnode import Anvil, compile_contract  # noqa: E402
from custody.clock import SystemClock  # noqa: E402
from custody.console.auth import issue_token  # noqa: E402
from custody.console.deps import ConsoleSettings  # noqa: E402
from policies.model import Policy  # noqa: E402
from tests.browser import headless_chromium  # noqa: E402
from tests.conftest import running_server  # noqa: E402
from tests.custody.test_console import running_console  # noqa: E402
from tests.integration.conftest import TOKEN_SOURCE, deploy_token  # noqa: E402
from tests.integration.test_console_browser import click, console_policy, flow  # noqa: E402

OUT = ROOT / "docs" / "console"
SHOTS = (
    ("overview", "/"),
    ("withdrawals", "/withdrawals"),
    ("withdrawal", None),  # the hot withdrawal's page, filled in below
    ("review", "/review"),
    ("batches", "/batches"),
    ("policy", "/policy?a=0&b=1"),
    ("audit", "/audit/verify"),
    ("reserves", "/reserves"),
)


def demo_policy(policy: Policy, backend_key: str) -> Policy:
    """The browser test's policy, with a hot band for ETH (10 % to 40 % of its total) to draw."""
    policy = console_policy(policy, backend_key)
    eth = replace(policy.assets["ETH"], hot_min_share=1000, hot_max_share=4000)
    return replace(policy, assets={**policy.assets, "ETH": eth})


def more_withdrawals(daemon: object, tmp: Path) -> None:
    """A fuller list: a dozen more requests of both assets through the API, to whitelisted recipients."""
    people = daemon.recipients[2:14]  # type: ignore[attr-defined]
    with (
        running_server(daemon.store, tmp) as srv,  # type: ignore[attr-defined]
        CustodyClient(srv.url, daemon.client_key.name, daemon.client_key.key) as client,  # type: ignore[attr-defined]
    ):
        for i, person in enumerate(people):
            asset, amount = ("ETH", f"{(i % 4) * 3 + 0.25}") if i % 2 else ("TOK", f"{1000 + 250 * i}")
            client.create_withdrawal(
                asset, amount, person, idempotency_key=str(uuid.uuid4()), client_reference=f"T-{i}"
            )


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="console-shots-") as name:
        tmp = Path(name)
        os.environ["SIGNER_HOME"] = str(tmp / "signer-home")  # never the user's own signer state
        with Anvil(block_time=None) as anvil:
            chain = deploy_token(anvil, compile_contract(TOKEN_SOURCE, "TestToken"))
            daemon, ids, _ = flow(tmp, f"sqlite:///{tmp / 'custody.db'}", chain, cold=True, edit=demo_policy)
            more_withdrawals(daemon, tmp)
            store = daemon.store  # type: ignore[attr-defined]
            settings = ConsoleSettings(rpc_url=anvil.url, chain_id=31337)
            with running_console(store, SystemClock(), settings) as console, headless_chromium(1400, 1100) as driver:
                driver.get(f"{console.url}/login?token={issue_token(store, 'olga', int(time.time()))}")
                driver.save_screenshot(str(OUT / "signin.png"))
                click(driver, By.ID, "signin")
                for shot, path in SHOTS:
                    driver.get(f"{console.url}{path or '/withdrawals/' + ids['hot']}")
                    driver.save_screenshot(str(OUT / f"{shot}.png"))
                    print(f"docs/console/{shot}.png")
                driver.get(f"{console.url}/")
                driver.find_element(By.ID, "reason").send_keys("hot wallet key may have leaked: investigating")
                click(driver, By.ID, "freeze")
                driver.save_screenshot(str(OUT / "frozen.png"))
                print("docs/console/frozen.png")
            store.dispose()


if __name__ == "__main__":
    main()
