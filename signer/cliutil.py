"""What both command-line tools share: one place that turns project errors into a line and an exit code,
and one way to ask for a passphrase."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from policies.errors import CustodyError
from policies.text import escape


class Group(click.Group):
    """A click group that reports ``CustodyError`` as ``error [code]: message`` on stderr and exits 1.

    Only each tool's top group (``custody``, ``signer``) is one: an error raised by any command below it
    propagates up to it, so errors are translated once, at the edge; sub-groups are plain click groups."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CustodyError as exc:
            # a message can quote a file (an unknown key, a name): never let it move the cursor or recolour
            click.echo(f"error [{exc.code}]: {escape(exc.message)}", err=True)
            sys.exit(1)
        except OSError as exc:
            click.echo(f"error [io]: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            sys.exit(1)


def passphrase(file: Path | None, env: str, prompt: str, *, confirm: bool = False) -> str:
    """From a file (first line), else the environment variable ``env``, else a hidden prompt."""
    if file is not None:
        lines = file.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    if os.environ.get(env):
        return os.environ[env]
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))


def read_file(path: Path, limit: int = 16 * 1024 * 1024) -> bytes:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise CustodyError(f"{path} is larger than {limit} bytes")
    return data
