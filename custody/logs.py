"""Structured logs: one JSON object per line on standard error, each with the request id it belongs to.

The API takes the client's ``X-Request-Id`` (or makes one), sends it back, and every line logged while
serving that request carries it; the worker gives each of its passes an id of its own. Secrets are never
passed to a logger: lines say which withdrawal, batch or key, never a key's bytes, a seed or a passphrase
(``tests/integration/test_logs.py`` drives a whole flow and searches every line for them).
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import re
import secrets
import sys
import time
from typing import Any

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


_PROCESS = secrets.token_hex(4)  # unique per process, so ids from replicas never collide
_COUNTER = itertools.count(1)


def new_id(prefix: str = "") -> str:
    return f"{prefix}{_PROCESS}{next(_COUNTER):08x}"


def accept_id(given: str | None) -> str:
    """The client's request id if it is a sensible token, else a new one (never echo arbitrary bytes)."""
    return given if given and _VALID_ID.fullmatch(given) else new_id()


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "process": self.process,
            "logger": record.name,
            "request_id": REQUEST_ID.get(),
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, sort_keys=True)


def setup(process: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore", "web3", "urllib3", "alembic"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(max(level, logging.WARNING))
