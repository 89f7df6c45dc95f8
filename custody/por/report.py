"""The report a person reads: one self-contained HTML page (no script, nothing fetched) with a bar chart of
reserves against liabilities per asset and the figures beside it."""

from __future__ import annotations

import datetime as dt
from html import escape
from pathlib import Path

from policies.units import format_amount
from signer.porstatement import Statement

BAR_WIDTH = 420


def render(statement: Statement) -> str:
    c = statement.claims
    when = dt.datetime.fromtimestamp(c["created_at"], dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows, charts = [], []
    for a in c["assets"]:
        symbol, places = a["symbol"], a["decimals"]
        owed, held = int(c["liabilities"]["totals"][symbol]), int(c["reserves"][symbol])
        top = max(owed, held, 1)
        ratio = c["coverage"][symbol]
        status = "covered" if ratio is None or held >= owed else "NOT covered"
        charts.append(
            f"<figure><figcaption>{escape(symbol)}: {escape(ratio or 'no liabilities')} "
            f"({status})</figcaption>"
            f'<svg width="{BAR_WIDTH + 120}" height="56" role="img" '
            f'aria-label="{escape(symbol)} reserves and liabilities">'
            f'<text x="0" y="18">reserves</text><rect x="90" y="6" height="16" width="{BAR_WIDTH * held // top}" '
            f'fill="#2e7d32"/><text x="0" y="44">liabilities</text>'
            f'<rect x="90" y="32" height="16" width="{BAR_WIDTH * owed // top}" fill="#c62828"/></svg></figure>'
        )
        rows.append(
            f"<tr><td>{escape(symbol)}</td><td>{format_amount(owed, places)}</td><td>{format_amount(held, places)}</td>"
            f"<td>{escape(ratio or '-')}</td></tr>"
        )
    wallets = "".join(
        f"<tr><td>{escape(w['kind'])}</td><td><code>{escape(w['address'])}</code></td>"
        f"<td>{w['threshold']} of {len(w['owners'])}</td></tr>"
        for w in c["wallets"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Proof of reserves {escape(c["snapshot_id"][:16])}</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}td,th{{padding:.2rem .8rem;text-align:right}}
td:first-child,th:first-child{{text-align:left}}code{{font-size:.9em}}</style></head><body>
<h1>Proof of reserves</h1>
<p>Snapshot <code>{escape(c["snapshot_id"])}</code>, made {when}, reserves read at block {c["block"]["number"]}
(<code>{escape(c["block"]["hash"])}</code>) on chain {c["chain_id"]}. {c["liabilities"]["accounts"]} accounts in a
Merkle sum tree of height {c["liabilities"]["height"]}, root <code>{escape(c["liabilities"]["root"])}</code>.</p>
{"".join(charts)}
<table><tr><th>asset</th><th>liabilities</th><th>reserves</th><th>coverage</th></tr>{"".join(rows)}</table>
<h2>Wallets</h2><table><tr><th>kind</th><th>address</th><th>signers</th></tr>{wallets}</table>
<p>Statement hash <code>{statement.hash.hex()}</code>. Check it, your own balance and the signatures with
<code>custody por verify statement.json --proof YOUR-PROOF.json --rpc URL</code>.</p>
</body></html>
"""


def write_report(statement: Statement, path: Path) -> None:
    path.write_text(render(statement), encoding="utf-8")
