"""The `custody` command: one file per command group, shared options and one error handler."""

from custody.cli.main import main

__all__ = ["main"]
