"""A warm trial worker: a fork server imports torch and the trainer once (PRELOAD), then forks
one child per trial that runs `run_trial`, so a trial pays neither the interpreter start nor the
torch import.

Each child is its own process, as with `python -m trainer run`: a crash, an OOM kill or a timeout
ends that trial only. It runs `python -m trainer run`'s own code, writes its stdout and stderr
(the per-step JSON lines included) to the trial's log, and exits with that command's exit code.
"""

from __future__ import annotations

import os
import signal
import sys

# what the fork server imports once; trainer.forkserver first: the server dies with the driver
PRELOAD = ["trainer.forkserver", "torch", "trainer.train", "trainer.__main__"]


def run_trial(argv: list[str], log_path: str, env: dict[str, str]) -> None:
    """The child's body: `python -m trainer <argv>` with `env` added, output to `log_path`."""
    os.setsid()  # like a fresh process in its own session: a terminal's Ctrl-C is the driver's to handle
    die_with_parent()
    os.environ.update(env)
    import torch

    from trainer.__main__ import main

    threads = env.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no atexit handlers of the fork server's modules run in a trial


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the thread that started it ends (its process dying
    included): a trial when the fork server or the driver thread that spawned it dies, the fork
    server when the driver's main thread does. So no orphan trains on."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
