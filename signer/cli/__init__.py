"""`signer`: the air-gapped operator's tool. Each command is a thin wrapper over named, tested steps.

The group, the registration of every command, and the one error handler: ``Group`` turns any project error
raised below it into one line, ``error [code]: message``, and exit 1. The commands live with their group in
``keys`` (``signer key …``), ``policy``, ``cold``, ``batch`` (``signer review`` and ``signer sign``; a Bitcoin
batch in ``btc``) and ``por``;
what several of them share is in ``common``.
"""

from __future__ import annotations

import click

from signer.cli.batch import review_cmd, sign_cmd
from signer.cli.cold import cold
from signer.cli.keys import key
from signer.cli.policy import policy
from signer.cli.por import por
from signer.cliutil import Group


@click.group(cls=Group)
def main() -> None:
    """Air-gapped signer for custody: keys, policy approvals, cold wallet batches."""


main.add_command(key)
main.add_command(policy)
main.add_command(cold)
main.add_command(review_cmd, "review")
main.add_command(sign_cmd, "sign")
main.add_command(por)

__all__ = ["main"]
