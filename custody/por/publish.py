"""``custody por publish``: the public verifier page, a self-contained static folder an exchange puts on its
website, where a customer checks their own proof against the published statement in the browser.

    index.html     the page: the statement's figures (readable without JavaScript) and the statement itself,
                   embedded as a <script type="application/json"> data element, because a page opened from a
                   file cannot fetch() its sibling files; a strict Content-Security-Policy (nothing but this
                   folder's own script and style sheet, no other host, no inline script)
    verifier.js    the checks, hand-written, no library: WebCrypto SHA-256 and BigInt sums (docs/verifier-page.md)
    verifier.css   its looks
    statement.json the published statement, byte for byte, for auditors (``custody por verify``)

The static sources are package data in ``custody/por/verifier/``. Only a statement that verifies offline is
published (strict parse, figures that add up, every signature of proof of control present and valid): the
page cannot check signatures itself, so an unsigned statement must never reach it. Nothing is written until
the page is built, and only into a new or empty directory.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape
from importlib import resources
from pathlib import Path
from string import Template

from custody.errors import ConfigError
from custody.por.snapshot import STATEMENT
from custody.por.verify import verify
from policies.units import format_amount
from signer.porstatement import Statement, parse_statement

INDEX, SCRIPT, STYLE = "index.html", "verifier.js", "verifier.css"
FILES = (INDEX, SCRIPT, STYLE, STATEMENT)
SOURCES = "verifier"  # the package-data folder beside this module


@dataclass(frozen=True)
class Published:
    out_dir: Path
    files: tuple[str, ...]
    statement: Statement


def publish(statement_dir: Path, out_dir: Path) -> Published:
    """Write the verifier page for the statement in ``statement_dir`` (a snapshot directory) into ``out_dir``."""
    source = statement_dir / STATEMENT
    if not source.is_file():
        raise ConfigError(f"{statement_dir} has no {STATEMENT}: give the directory `custody por snapshot` wrote")
    raw = source.read_bytes()
    # the reference verifier's offline checks: a strict parse, figures that add up, and every proof of control
    # (each wallet's signatures, each Bitcoin wallet's reserve PSBT), which the page cannot check itself
    verify(raw)
    statement = parse_statement(raw)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir} is not an empty directory: the page goes into a new one")
    contents = {
        INDEX: render_page(statement, raw).encode(),
        SCRIPT: static(SCRIPT),
        STYLE: static(STYLE),
        STATEMENT: raw,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (out_dir / name).write_bytes(contents[name])
    return Published(out_dir, FILES, statement)


def static(name: str) -> bytes:
    return (resources.files("custody.por") / SOURCES / name).read_bytes()


def embedded_json(raw: bytes) -> str:
    """The statement as the text of a <script type="application/json"> element. ``<``, ``>`` and ``&`` become
    JSON escapes (the same string to JSON.parse), so no content can end the element or open a comment in it;
    a canonical statement has none of them, but the page must not depend on that."""
    return raw.decode().replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render_page(statement: Statement, raw: bytes) -> str:
    c = statement.claims
    rows = []
    for a in c["assets"]:
        symbol, places = a["symbol"], a["decimals"]
        owed, held = int(c["liabilities"]["totals"][symbol]), int(c["reserves"][symbol])
        ratio = c["coverage"][symbol]
        rows.append(
            f"<tr><td>{escape(symbol)}</td><td>{format_amount(owed, places)}</td>"
            f"<td>{format_amount(held, places)}</td><td>{escape(ratio or '-')}"
            f"{'' if ratio is None or held >= owed else ' (NOT covered)'}</td></tr>"
        )
    created = dt.datetime.fromtimestamp(c["created_at"], dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    bitcoin = ""
    if "bitcoin" in c:  # statement format 4: the Bitcoin wallets' coins, at a block of their own chain
        b = c["bitcoin"]
        bitcoin = (
            f" {escape(b['asset'])} reserves read at Bitcoin {escape(b['network'])} block {int(b['block']['height'])}"
            f" (<code>{escape(b['block']['hash'])}</code>)."
        )
    template = Template(static(INDEX).decode())
    return template.substitute(
        snapshot_id=escape(c["snapshot_id"]),
        created=escape(created),
        block_number=int(c["block"]["number"]),
        block_hash=escape(c["block"]["hash"]),
        chain_id=int(c["chain_id"]),
        bitcoin=bitcoin,
        accounts=int(c["liabilities"]["accounts"]),
        height=int(c["liabilities"]["height"]),
        root=escape(c["liabilities"]["root"]),
        asset_rows="\n".join(rows),
        statement_hash=statement.hash.hex(),
        statement_json=embedded_json(raw),
    )
