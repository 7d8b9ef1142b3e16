"""Stop signals: Ctrl-C (SIGINT), a scheduler's SIGTERM and a closed terminal's SIGHUP all ask a
run to stop the same way.

`deferred_stop(owner)`: while inside, the first of these signals sets `owner._stop` (the loop
stops at its next safe point: the running trials are stopped and recorded as interrupted, the
report is written, exit 1, and the same command resumes); a second one raises KeyboardInterrupt
at once. Outside the main thread (signals are delivered only there) it does nothing.
`stop_raises()`: while inside (a run's clean-up: its report after the loop stopped), each of them
raises KeyboardInterrupt as Ctrl-C does, so a second stop there (or a scheduler's SIGTERM) ends
the command with one line, exit 1, never a traceback or a kill mid-write.
`held()`: while inside, they wait (delivered on leaving): a file is written whole or not at all
even when Ctrl-C comes in the middle.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _handled(handler: Any) -> Iterator[None]:
    """Every stop signal goes to `handler` while inside (in the main thread; elsewhere nothing
    changes: signals are delivered only there), the previous handlers restored on leaving."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def deferred_stop(owner: Any, flag: str = "_stop") -> contextlib.AbstractContextManager[None]:
    def handler(signum, frame):
        if getattr(owner, flag):
            raise KeyboardInterrupt
        setattr(owner, flag, True)

    return _handled(handler)


def stop_raises() -> contextlib.AbstractContextManager[None]:
    def handler(signum, frame):
        raise KeyboardInterrupt

    return _handled(handler)


@contextlib.contextmanager
def held() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # (only the main thread runs signal handlers: a write elsewhere is never cut by one)
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        for sig in dict.fromkeys(pending):  # delivered now, to the handlers they would have met
            signal.raise_signal(sig)


__all__ = ["STOP_SIGNALS", "deferred_stop", "held", "stop_raises"]
