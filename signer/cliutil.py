"""What both command-line tools share: one place that turns project errors into a line and an exit code,
``--version``, and one way to ask for a passphrase."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from policies.errors import CustodyError
from policies.text import escape

DISTRIBUTION = "custody"  # both tools ship in this one distribution, so they share its version
# What a command that writes into a closed pipe (`custody audit export | head`) exits with: the shell's
# status for a process ended by SIGPIPE, as `yes | head` gives, and no message.
BROKEN_PIPE_EXIT = 128 + signal.SIGPIPE


def version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class Group(click.Group):
    """A click group that reports ``CustodyError`` as ``error [code]: message`` on stderr and exits 1, and
    that has ``--version``.

    Only each tool's top group (``custody``, ``signer``) is one: an error raised by any command below it
    propagates up to it, so errors are translated once, at the edge; sub-groups are plain click groups. A
    reader that goes away (``| head``) ends the command quietly, as SIGPIPE ends other command-line tools."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the tool's name is its package's (custody, signer), whatever the name it was run under
        tool = (self.callback.__module__ if self.callback else "custody").split(".")[0]
        click.version_option(version(), "--version", message=f"{tool} %(version)s")(self)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            quiet_broken_pipe()
        except CustodyError as exc:
            # a message can quote a file (an unknown key, a name): never let it move the cursor or recolour
            click.echo(f"error [{exc.code}]: {escape(exc.message)}", err=True)
            sys.exit(1)
        except OSError as exc:
            click.echo(f"error [io]: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            sys.exit(1)


def quiet_broken_pipe() -> NoReturn:
    """Exit after the reader of standard output went away: point stdout at /dev/null first, so the flush at
    interpreter exit does not fail again and print "Exception ignored … BrokenPipeError"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a test runner's buffer): nothing to flush later
        pass
    sys.exit(BROKEN_PIPE_EXIT)


def passphrase(file: Path | None, env: str, prompt: str, *, confirm: bool = False) -> str:
    """From a file (first line), else the environment variable ``env``, else a hidden prompt (``ask_passphrase``)."""
    if file is not None:
        lines = file.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    if os.environ.get(env):
        return os.environ[env]
    return ask_passphrase(prompt, confirm=confirm)


def ask_passphrase(text: str, *, confirm: bool = False) -> str:
    """A hidden prompt that says why it asks again: nothing is ever sealed with an empty passphrase
    (``signer.sealed``), so an empty one is never right, and with ``confirm`` the two typings must match. End of
    input aborts."""
    while True:
        first = str(click.prompt(text, hide_input=True, default="", show_default=False))
        if not first:
            click.echo("The passphrase may not be empty; type it again.", err=True)
            continue
        if not confirm:
            return first
        again = str(click.prompt("Repeat for confirmation", hide_input=True, default="", show_default=False))
        if again == first:
            return first
        click.echo("The two passphrases do not match; type it again.", err=True)


def read_file(path: Path, limit: int = 16 * 1024 * 1024) -> bytes:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise CustodyError(f"{path} is larger than {limit} bytes")
    return data
