"""`custody audit …`: verify and export the hash-chained audit log."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from custody.cli.common import config_option, open_store
from custody.errors import AuditBroken
from custody.ledger.audit import export_log, verify_log


@click.group()
def audit() -> None:
    """Verify and export the hash-chained audit log."""


@audit.command("verify")
@config_option
def audit_verify(config_path: Path) -> None:
    """Exit 0 if the chain is intact; otherwise name the first broken entry and exit 1."""
    _, store = open_store(config_path)
    verdict = verify_log(store)
    if not verdict.ok:
        raise AuditBroken(f"first broken entry: {verdict.first_broken}: {verdict.reason}")
    click.echo(f"audit log intact: {verdict.entries} entries")


@audit.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl")
@config_option
def audit_export(fmt: str, config_path: Path) -> None:
    """Write every entry to standard output, one JSON object per line."""
    _, store = open_store(config_path)
    for line in export_log(store):
        sys.stdout.write(line + "\n")
