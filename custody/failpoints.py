"""Failpoints for fault tests: a process told to stop itself at a named point does so, with SIGSTOP, as a
paused VM, a long GC pause or a swapped-out process would, holding whatever it holds there.

    CUSTODY_STOP_AT=audit.appended@/tmp/arm   stop at the next ``audit.appended`` after /tmp/arm exists
                                              (the file is removed: one stop per arming)
    CUSTODY_STOP_AT=audit.appended            stop the first time it is reached

The test sends SIGCONT when it has seen what it wanted. Unset (always, outside tests) a point costs one
comparison. The hot worker's crash points (``custody.hot.sender.failpoint``, SIGKILL) are separate.
"""

from __future__ import annotations

import os
import signal

STOP_ENV = "CUSTODY_STOP_AT"
_SPEC = os.environ.get(STOP_ENV, "")
_fired: set[str] = set()


def reached(point: str) -> None:
    if not _SPEC:
        return
    name, _, arm = _SPEC.partition("@")
    if name != point:
        return
    if arm:
        try:
            os.unlink(arm)  # whoever removes the file stops: one stop per arming, even across threads
        except FileNotFoundError:
            return
    elif point in _fired:
        return
    _fired.add(point)
    os.kill(os.getpid(), signal.SIGSTOP)
