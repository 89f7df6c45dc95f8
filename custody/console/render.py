"""The Jinja2 environment of the console (autoescape on for everything, undefined names are errors) and the
formatting its templates share. Every string from the database is escaped by Jinja; amounts are integers in
base units until ``amount`` formats them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse

from policies.units import format_amount

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# The navigation bar: (path, label), in the order operators read them.
NAV = (
    ("/", "Overview"),
    ("/withdrawals", "Withdrawals"),
    ("/review", "Review queue"),
    ("/batches", "Batches"),
    ("/policy", "Policy"),
    ("/audit", "Audit log"),
    ("/reserves", "Proof of reserves"),
)


def when(ts: int | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def amount(value: int | None, decimals: int) -> str:
    return "-" if value is None else format_amount(value, decimals)


def share(bp: int | None) -> str:
    return "-" if bp is None else f"{bp / 100:.2f} %"


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, amount=amount, share=share)
    return env


ENV = make_environment()


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A rendered page. ``context`` carries ``signed`` (the session, or None on the sign-in pages)."""
    context.setdefault("signed", None)
    context.setdefault("refresh", None)
    context.setdefault("nav", NAV)
    context.setdefault("here", "")
    return HTMLResponse(ENV.get_template(template).render(**context), status_code=status)
