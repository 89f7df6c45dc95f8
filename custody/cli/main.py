"""`custody`: the daemon's command line. The group, the registration of every command, and the one error
handler: ``Group`` (shared with the signer) turns any project error raised below it into one line,
``error [code]: message``, and exit 1.

Each command lives with its group in a module of its own (``init``, ``daemon``, ``apikey``, ``policy``,
``webhooks``, ``audit``, ``status``, ``cold``, ``por``, ``review``, ``dev``); each parses, calls one service, and
prints.
"""

from __future__ import annotations

import click

from custody.cli.apikey import apikey
from custody.cli.audit import audit
from custody.cli.cold import batch, cold
from custody.cli.console import console
from custody.cli.daemon import serve, worker
from custody.cli.dev import dev
from custody.cli.init import init
from custody.cli.policy import policy
from custody.cli.por import por
from custody.cli.review import review
from custody.cli.status import freeze, status
from custody.cli.webhooks import webhooks
from signer.cliutil import Group


@click.group(cls=Group)
def main() -> None:
    """The online custody daemon: withdrawal API, policy, audit log."""


for command in (
    init, serve, worker, webhooks, apikey, policy, audit, status, freeze, cold, batch, por, review, console, dev
):
    main.add_command(command)
