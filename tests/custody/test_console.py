"""The operators' console (``custody.console``) served by a real uvicorn on SQLite, read with httpx: one-time
login tokens (single use, expiry on an injected clock, unknown), sessions (redirect without one, expiry), the
CSRF token on the freeze and sign-out forms, the freeze itself (the overview shows it, the audit log has it),
the security headers, every page rendered with data, refusals of malformed filters, the Host check (DNS
rebinding), the sign-in confirmation (login CSRF), and `custody console login` (the operator and their key
checked against the policy, the URL's shape)."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from nacl.signing import SigningKey
from sqlalchemy import func, select

from custody.clock import FixedClock, SystemClock
from custody.config import render_config
from custody.console.app import create_console_app
from custody.console.auth import COOKIE, LOGIN_COOKIE, csrf_token, issue_token
from custody.console.deps import ConsoleSettings
from custody.console.hosts import allowed_hosts, hostname
from custody.console.overview import band
from custody.console.reserves import coverage_bars
from custody.intake.withdrawals import Intake, NewWithdrawal, Withdrawals
from custody.ledger import audit
from custody.ledger import policy as policy_service
from custody.ledger.policy import PolicyCache
from custody.ledger.positions import HotPosition
from custody.ledger.states import State
from custody.ops.balances import AssetPosition
from custody.store.db import Store
from custody.store.models import AuditEntry, Freeze
from policies.bundle import make_bundle, sign_bundle
from policies.loader import load_policy_toml
from policies.model import AssetRule
from tests.cli_helpers import custody
from tests.conftest import ADMINS, DAY, DENIED, OMNIBUS, serving
from tests.custody.test_customer_intake import OPERATORS, UNLISTED_ADDRESSES, WHO, customer_policy_toml, install

HOLDS = "first_payout = true"
PAGES = ("/", "/withdrawals", "/review", "/batches", "/policy", "/audit", "/reserves")


@dataclass
class Console:
    url: str


@contextmanager
def running_console(store: Store, clock: object = None, settings: ConsoleSettings | None = None) -> Iterator[Console]:
    """The console app for ``store`` served by a real uvicorn on a free loopback port, in a thread
    (``tests.conftest.serving``)."""
    app = create_console_app(store, clock or SystemClock(), settings)  # type: ignore[arg-type]
    with serving(app) as url:
        yield Console(url)


def confirm_page(c: httpx.Client, token: str) -> str:
    """Open a sign-in link as a browser does; the confirmation field its form carries (its nonce cookie is now
    in ``c``)."""
    r = c.get("/login", params={"token": token})
    assert r.status_code == 200, r.text
    found = re.search(r'name="confirm" value="([0-9a-f]{64})"', r.text)
    assert found is not None
    return found.group(1)


def sign_in(c: httpx.Client, token: str) -> httpx.Response:
    """Sign ``c`` in with a one-time token through the link's page and its button, as a browser does."""
    return c.post("/login", data={"token": token, "confirm": confirm_page(c, token)})


@dataclass
class World:
    store: Store
    clock: FixedClock
    url: str
    held: str  # a held withdrawal's id
    queued: str  # a whitelisted one, queued for the cold wallet
    rejected: str  # one to a denied address
    tmp: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=10)

    @contextmanager
    def signed_in(self, operator: str = "olga") -> Iterator[httpx.Client]:
        with self.client() as c:
            token = issue_token(self.store, operator, self.clock.now())
            assert sign_in(c, token).status_code == 303
            yield c


def second_version(store: Store, now: int, backend: str) -> None:
    """Policy version 2: ETH's per-transfer maximum lowered, applied by two admins."""
    text = customer_policy_toml(now, backend, holds=HOLDS).replace(
        'max_per_transfer = "100"', 'max_per_transfer = "90"'
    )
    with store.read() as s:
        head, _ = policy_service.head(s)
    bundle = make_bundle(load_policy_toml(text), head, now - 2 * DAY)
    policy_service.apply(store, bundle.raw, [sign_bundle(bundle.hash, k).to_bytes() for k in ADMINS[:2]], now)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("console")
    now = int(time.time())
    store, client = install(f"sqlite:///{tmp / 'custody.db'}", now, holds=HOLDS)
    second_version(store, now, client.key.verify_key.encode().hex())
    clock = FixedClock(now)
    intake = Withdrawals(store, PolicyCache(), clock)
    held, _ = intake.create(WHO, "k-held", NewWithdrawal("ETH", "0.5", UNLISTED_ADDRESSES[0], customer="alice"))
    queued, _ = intake.create(WHO, "k-queued", NewWithdrawal("ETH", "2", OMNIBUS, client_reference="order-<b>7</b>"))
    rejected, _ = intake.create(WHO, "k-rejected", NewWithdrawal("ETH", "1", DENIED))
    many = [Intake(WHO, f"k-{i}", NewWithdrawal("USDC", f"{i + 1}", OMNIBUS)) for i in range(60)]  # over a page
    assert all(isinstance(r, tuple) for r in intake.create_many(many))
    assert (held.state, queued.state, rejected.state) == (State.HELD, State.QUEUED_COLD, State.REJECTED)
    with store.transaction() as s:
        audit.append(
            s,
            now,
            "por.snapshot",
            "ab" * 32,
            {
                "statement_hash": "cd" * 32,
                "block": 7,
                "root": "ef" * 32,
                "accounts": 3,
                "coverage": {"ETH": "1.0250", "TOK": "0.9000", "USDC": None},
            },
        )
    try:
        with running_console(store, clock) as console:
            yield World(store, clock, console.url, held.id, queued.id, rejected.id, tmp)
    finally:
        store.dispose()


def test_a_page_without_a_session_redirects_to_sign_in(world):
    with world.client() as c:
        for path in (*PAGES, f"/withdrawals/{world.held}", "/audit/verify"):
            r = c.get(path)
            assert (r.status_code, r.headers["location"]) == (303, "/signin"), path
        r = c.get("/", headers={"cookie": f"{COOKIE}=not-a-session"})
        assert r.status_code == 303
        assert "custody console login" in c.get("/signin").text


def test_a_login_token_signs_in_once(world):
    token = issue_token(world.store, "olga", world.clock.now())
    with world.client() as c, world.client() as other:
        page = c.get("/login", params={"token": token})
        assert page.status_code == 200 and "Sign in as olga" in page.text  # opening the link spends nothing
        confirm = confirm_page(c, token)
        later = confirm_page(other, token)  # a second browser opened the link too, before it was used
        r = c.post("/login", data={"token": token, "confirm": confirm})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith(f"{COOKIE}="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie  # plain http
        assert c.get("/").status_code == 200
        # the same link again: refused, and no cookie
        r = other.post("/login", data={"token": token, "confirm": later})
        assert r.status_code == 403 and "login_token_used" in r.text and "set-cookie" not in r.headers
        assert "login_token_used" in other.get("/login", params={"token": token}).text
        for bad in ("", "x" * 200, "made-up"):
            r = other.post("/login", data={"token": bad, "confirm": later})
            assert r.status_code == 403 and "login_token_invalid" in r.text
    with world.store.read() as s:
        kinds = list(s.execute(select(AuditEntry.kind).where(AuditEntry.subject == "olga")).scalars())
    assert "console.login_issued" in kinds and "console.signin" in kinds
    assert token not in str(world.store.url)  # (nothing below stores it: only its hash)


def test_a_login_token_expires_and_so_does_a_session(world):
    token = issue_token(world.store, "piet", world.clock.now(), ttl=300)
    with world.signed_in("olga") as c:
        try:
            world.clock.advance(299)
            assert c.get("/").status_code == 200
            with world.client() as late:
                confirm = confirm_page(late, token)  # opened in its last second, pressed a second later
                world.clock.advance(1)
                r = late.post("/login", data={"token": token, "confirm": confirm})
                assert r.status_code == 403 and "login_token_expired" in r.text
            world.clock.advance(8 * 3600 - 300)
            assert c.get("/").status_code == 303  # the session has ended too
        finally:
            world.clock.value -= 8 * 3600


def test_security_headers_on_every_response(world):
    with world.signed_in() as c:
        for path in (*PAGES, "/signin", "/static/console.css", "/no-such-page"):
            r = c.get(path)
            csp = r.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
            assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["cache-control"] == ("no-cache" if path.startswith("/static/") else "no-store")
            if path.endswith(".css"):
                assert r.status_code == 200
            else:
                assert "<script" not in r.text and "style=" not in r.text


def test_every_page_renders_with_data(world):
    with world.signed_in() as c:
        texts = {path: c.get(path) for path in PAGES}
        assert all(r.status_code == 200 for r in texts.values())
        assert "Payments are running" in texts["/"].text or "FROZEN" in texts["/"].text
        assert "queued_cold" in texts["/"].text and "<svg" in texts["/"].text
        assert world.held[:8] in texts["/review"].text and "hold:first_payout" in texts["/review"].text
        assert '<meta http-equiv="refresh" content="15">' in texts["/review"].text
        assert "No Safe batch yet" in texts["/batches"].text
        policy = texts["/policy"].text
        assert "Policy version 2" in policy and "~ assets.ETH.max_per_transfer: 100 ETH -&gt; 90 ETH" in policy
        assert "operators." in policy
        assert "por.snapshot" in texts["/audit"].text and "ab" * 32 in texts["/reserves"].text
        reserves = texts["/reserves"].text
        assert "1.0250x" in reserves and "0.9000x" in reserves and "no liabilities" in reserves
        one = c.get(f"/withdrawals/{world.queued}")
        assert one.status_code == 200 and "withdrawal.queued_cold" in one.text and "whitelist" in one.text
        assert "order-&lt;b&gt;7&lt;/b&gt;" in one.text and "<b>7" not in one.text  # escaped
        assert "NO" in c.get(f"/withdrawals/{world.rejected}").text  # the rule that failed
        assert c.get("/withdrawals/nope").status_code == 404


def test_withdrawals_filter_and_keyset_pages(world):
    with world.signed_in() as c:
        first = c.get("/withdrawals", params={"asset": "USDC"}).text
        ids = re.findall(r'href="/withdrawals/([0-9a-f-]{36})"', first)
        assert len(ids) == 50 and 'id="older"' in first and 'id="newer"' not in first
        older = re.search(r'id="older" href="/withdrawals\?([^"]+)"|href="/withdrawals\?([^"]+)" id="older"', first)
        assert older is not None
        query = (older.group(1) or older.group(2)).replace("&amp;", "&")
        second = c.get(f"/withdrawals?{query}").text
        rest = re.findall(r'href="/withdrawals/([0-9a-f-]{36})"', second)
        assert len(rest) == 10 and not set(rest) & set(ids) and 'id="newer"' in second
        assert len(re.findall(r'href="/withdrawals/[0-9a-f-]{36}"', c.get("/withdrawals?state=held").text)) == 1
        assert world.held in c.get("/withdrawals", params={"customer": "alice"}).text
        tomorrow = time.strftime("%Y-%m-%d", time.gmtime(world.clock.now() + DAY))
        assert "No withdrawal matches" in c.get("/withdrawals", params={"since": tomorrow}).text
        for bad, code in (
            ({"state": "paid"}, "state must be"),
            ({"since": "yesterday"}, "since must be"),
            ({"asset": "E TH"}, "asset must be"),
            ({"before": "-1"}, "before must be"),
        ):
            r = c.get("/withdrawals", params=bad)
            assert r.status_code == 400 and "invalid_field" in r.text and code in r.text


def test_audit_log_search_and_verify(world):
    with world.signed_in() as c:
        found = c.get("/audit", params={"subject": world.held}).text
        assert "withdrawal.held" in found and "withdrawal.queued_cold" not in found
        assert "The chain verifies" in c.get("/audit/verify").text
        assert c.get("/audit", params={"kind": "DROP TABLE"}).status_code == 400


def test_policy_diff_between_any_two_versions(world):
    with world.signed_in() as c:
        r = c.get("/policy", params={"a": "0", "b": "2"}).text
        assert "Policy bundle version 2" in r and "+ assets.ETH.max_per_transfer: 90 ETH" in r
        assert c.get("/policy", params={"a": "9"}).status_code == 400


def test_freeze_needs_this_sessions_csrf_token_and_shows_on_the_overview(world):
    with world.signed_in("piet") as c, world.signed_in("olga") as other:

        def count() -> int:
            with world.store.read() as s:
                return s.scalar(select(func.count()).select_from(Freeze)) or 0

        before = count()
        for csrf in ("", "0" * 64, re.search(r'name="csrf" value="([0-9a-f]+)"', other.get("/").text).group(1)):
            r = c.post("/freeze", data={"reason": "suspicious", "csrf": csrf})
            assert r.status_code == 403 and "csrf_refused" in r.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', c.get("/").text).group(1)
        assert c.post("/freeze", data={"reason": " ", "csrf": csrf}).status_code == 400
        assert count() == before
        r = c.post("/freeze", data={"reason": "console test: <script>", "csrf": csrf})
        assert r.status_code == 303 and count() == before + 1
        home = c.get("/").text
        assert "Payments are FROZEN" in home and "console:piet" in home and "&lt;script&gt;" in home
        assert "unfreeze = " in home and "<script>" not in home
        with world.store.read() as s:
            entry = s.execute(select(AuditEntry).where(AuditEntry.kind == "freeze.on")).scalars().all()[-1]
        assert '"by":"console:piet"' in entry.data
        r = c.post("/signout", data={"csrf": csrf})
        assert r.status_code == 303 and c.get("/").status_code == 303


def test_csrf_token_is_bound_to_the_session():
    assert csrf_token("a") != csrf_token("b") and len(csrf_token("a")) == 64


def test_band_drawing_is_a_pure_decision():
    rule = AssetRule("ETH", True, 18, 100, 5, (), hot_min_share=500, hot_max_share=2000)

    def at(hot: int, cold: int) -> str:
        p = AssetPosition("ETH", 18, HotPosition("ETH", hot, 1, 0), cold, hot * 10_000 // (hot + cold))
        return band(p, rule).verdict

    assert (at(1, 99), at(10, 90), at(30, 70)) == ("below the band", "within the band", "above the band")
    unread = AssetPosition("ETH", 18, HotPosition("ETH", 0, None, 0), None, None)
    assert band(unread, rule).verdict == "unknown" and band(unread, None).hot_x is None
    assert band(dataclasses.replace(unread, hot_share_bp=100), None).verdict == "no band"


def test_custody_console_login_checks_the_operator_and_their_key(world):
    config = world.tmp / "custody.toml"
    config.write_text(render_config(world.tmp, world.store.url))
    olga = world.tmp / "olga.review.key"
    olga.write_text(bytes(OPERATORS["olga"]).hex() + "\n")
    stranger = world.tmp / "stranger.review.key"
    stranger.write_text(bytes(SigningKey.generate()).hex() + "\n")
    out = custody("console", "login", "--config", config, "--operator", "olga", "--key", olga, "--url", world.url)
    url = out.stdout.strip().splitlines()[0]
    assert url.startswith(f"{world.url}/login?token=")
    with world.client() as c:
        assert sign_in(c, url.partition("token=")[2]).status_code == 303
    for bad in ("127.0.0.1:8787", "ftp://127.0.0.1", "http://127.0.0.1:8787/?x=1", "http://user@127.0.0.1"):
        refused = custody(
            "console", "login", "--config", config, "--operator", "olga", "--key", olga, "--url", bad, ok=False
        )
        assert refused.exit_code == 1 and "--url must be the console's address" in refused.output
    elsewhere = custody(
        "console", "login", "--config", config, "--operator", "olga", "--key", olga, "--url", "https://console.example/"
    )
    assert elsewhere.stdout.startswith("https://console.example/login?token=") and "--allowed-host" in elsewhere.stderr
    for bad in ("http://console.example", "console.example/x", "a b"):
        refused = custody("console", "serve", "--config", config, "--allowed-host", bad, ok=False)
        assert refused.exit_code == 1 and "--allowed-host takes a host name" in refused.output, refused.output
    wrong = custody("console", "login", "--config", config, "--operator", "olga", "--key", stranger, ok=False)
    assert wrong.exit_code == 1 and "operator_key_mismatch" in wrong.output
    nobody = custody("console", "login", "--config", config, "--operator", "mallory", "--key", olga, ok=False)
    assert nobody.exit_code == 1 and "unknown_operator" in nobody.output and "olga" in nobody.output


def test_a_request_for_another_host_is_refused_even_signed_in(world):
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 reaches the console with
    Host: evil.example (and, were the cookie sent, a valid session): refused before any route."""
    port = world.url.rsplit(":", 1)[1]
    with world.signed_in() as c:
        assert c.get("/batches").status_code == 200  # the normal host works
        assert c.get("/batches", headers={"host": f"localhost:{port}"}).status_code == 200
        for host in (f"evil.example:{port}", "evil.example", "127.0.0.1.evil.example", f"[::2]:{port}", "a:b:c"):
            for method, path in (("GET", "/batches"), ("GET", "/static/console.css"), ("POST", "/freeze")):
                r = c.request(method, path, headers={"host": host}, data={"reason": "x", "csrf": "y"})
                assert r.status_code == 400 and "host_refused" in r.text, (host, path)
                assert r.headers["x-frame-options"] == "DENY" and "set-cookie" not in r.headers
                assert "ab" * 32 not in r.text and "olga" not in r.text
        token = issue_token(world.store, "olga", world.clock.now())
        r = c.get("/login", params={"token": token}, headers={"host": "evil.example"})
        assert r.status_code == 400 and token not in r.text


def test_the_operator_names_other_hosts():
    assert allowed_hosts() == ("localhost", "127.0.0.1", "::1")
    assert allowed_hosts("0.0.0.0", ["Console.Example", "[fd00::1]:443"]) == (
        "localhost",
        "127.0.0.1",
        "::1",
        "console.example",
        "fd00::1",
    )
    assert "10.0.0.5" in allowed_hosts("10.0.0.5")
    assert [hostname(h) for h in ("LOCALHOST:80", "[::1]", "[::1]:8787", "x:y", "[::1]z", "", "::1")] == [
        "localhost",
        "::1",
        "::1",
        None,
        None,
        None,
        "::1",
    ]


def test_a_console_behind_a_proxy_answers_to_its_configured_name(world):
    settings = ConsoleSettings(allowed_hosts=allowed_hosts("127.0.0.1", ["console.example"]))
    with running_console(world.store, world.clock, settings) as console, httpx.Client(base_url=console.url) as c:
        assert c.get("/signin", headers={"host": "console.example"}).status_code == 200
        assert c.get("/signin", headers={"host": "evil.example"}).status_code == 400
        assert c.get("/signin").status_code == 200


def test_signing_in_needs_the_links_own_page(world):
    """Login CSRF: another site's form posting a valid token (the attacker's own) to /login gets neither the
    page's nonce cookie (SameSite=Strict) nor its confirmation field: refused, and the token is not spent."""
    token = issue_token(world.store, "piet", world.clock.now())
    with world.client() as victim, world.client() as attacker:
        foreign = confirm_page(attacker, token)  # what the attacker's own page says
        for data in ({"token": token}, {"token": token, "confirm": foreign}, {"token": token, "confirm": "0" * 64}):
            r = victim.post("/login", data=data)
            assert r.status_code == 403 and "csrf_refused" in r.text and "set-cookie" not in r.headers
        victim.cookies.set(LOGIN_COOKIE, "made-up", domain="127.0.0.1", path="/login")
        r = victim.post("/login", data={"token": token, "confirm": foreign})
        assert r.status_code == 403 and "csrf_refused" in r.text
        assert victim.get("/").status_code == 303  # not signed in
        assert sign_in(attacker, token).status_code == 303  # the token was never spent


def test_coverage_bars_are_a_pure_decision():
    bars = coverage_bars({"ETH": "4.1365", "TOK": "1.0000", "USDC": "0.5000", "DAI": None, "BAD": "x"})
    assert [(b.asset, b.ratio, b.width, b.covered) for b in bars] == [
        ("ETH", "4.1365", 160, True),
        ("TOK", "1.0000", 80, True),
        ("USDC", "0.5000", 40, False),
        ("DAI", None, 0, True),
    ]
    assert coverage_bars(None) == () and coverage_bars(["ETH"]) == ()
