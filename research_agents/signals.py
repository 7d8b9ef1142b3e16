"""Stop signals: Ctrl-C (SIGINT), a scheduler's SIGTERM and a closed terminal's SIGHUP all ask a
run to stop the same way.

`deferred_stop(owner)`: while inside, the first of these signals sets `owner._stop` (the loop
stops at its next safe point: the running trials are stopped and recorded as interrupted, the
report is written, exit 1, and the same command resumes); a second one raises KeyboardInterrupt
at once. Outside the main thread (signals are delivered only there) it does nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def deferred_stop(owner: Any, flag: str = "_stop") -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if getattr(owner, flag):
            raise KeyboardInterrupt
        setattr(owner, flag, True)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = ["STOP_SIGNALS", "deferred_stop"]
