"""Trials on this machine, each in its own process.

LocalExecutor runs each trial in its own process (a crash, a leak or an OOM kill in one trial
cannot touch another), keeps its log, enforces a timeout, and reads the trainer's per-step JSON
lines for the live display. Warm (the default), a fork server that has imported torch and the
trainer once forks one child per trial (trainer/worker.py); cold, each trial is a fresh
`python -m trainer run`. Several trials may run at once (one per calling thread); on CUDA each
takes a GPU of its own from `gpus` (CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from research_agents.execution.base import BaseExecutor, Outcome, ProgressFn, TrialInterrupted
from research_agents.records import read_metrics
from trainer.spec import TrialSpec
from trainer.worker import PRELOAD, die_with_parent, run_trial


class LocalExecutor(BaseExecutor):
    """Trials on this machine. `gpus`: the CUDA devices trials are pinned to, one trial per device
    at a time (None: no pinning). `warm`: fork each trial from a fork server (see the module)."""

    name = "local"

    def __init__(self, python: str = sys.executable, gpus: list[str] | None = None, warm: bool = True):
        _trial_env()  # ValueError (one line) on a bad OMP_NUM_THREADS, before anything runs
        self.python = python
        self.warm = warm and python == sys.executable  # the fork server is this interpreter
        self.gpus = list(gpus) if gpus else None
        self._free_gpus: queue.Queue[str] = queue.Queue()
        for gpu in self.gpus or []:
            self._free_gpus.put(gpu)
        self._live: dict = {}  # running trial process (Popen or multiprocessing.Process) -> its run_dir
        self._lock = threading.Lock()
        self._cancelled = False
        self._stopped: set[Path] = set()  # run_dirs cancelled, perhaps before their process started
        if warm:  # started now, from the thread that makes the executor (the driver's main thread), since
            _fork_context()  # the server dies with the thread that started it (trainer/forkserver.py)

    def default_workers(self) -> int:
        """One trial per GPU on CUDA; on CPU, the cores divided by the threads each trial uses."""
        if self.gpus:
            return len(self.gpus)
        threads = int(_trial_env()["OMP_NUM_THREADS"])
        return max(1, (os.cpu_count() or 1) // max(1, threads))

    def describe(self) -> str:
        how = "warm fork server" if self.warm else "one new interpreter per trial"
        return f"local ({how}{f', GPUs {self.gpus}' if self.gpus else ''})"

    def cancel(self, run_dir: Path | None = None) -> None:
        """Stop one running trial (its run_dir), or every one now (Ctrl-C in the driver)."""
        with self._lock:
            self._cancelled = self._cancelled or run_dir is None
            if run_dir is not None:
                self._stopped.add(run_dir)
            live = [proc for proc, d in self._live.items() if run_dir is None or d == run_dir]
        for proc in live:
            _kill(proc)

    def run(self, spec: TrialSpec, run_dir: Path, timeout_s: float,
            on_progress: ProgressFn | None = None) -> Outcome:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").unlink(missing_ok=True)  # a re-run never reads a stale result
        spec_path = run_dir / "spec.json"
        spec_path.write_text(spec.model_dump_json(indent=1))
        log_path = run_dir / "trainer.log"
        log_path.write_text("")
        argv = ["run", "--spec", str(spec_path), "--out", str(run_dir)]
        started = time.perf_counter()
        with self._gpu() as gpu:
            env = {"CUDA_VISIBLE_DEVICES": str(gpu)} if gpu is not None else {}
            start = self._fork if self.warm else self._spawn
            proc = start(argv, log_path, env)
            with self._lock:
                self._live[proc] = run_dir
                if self._cancelled or run_dir in self._stopped:  # cancelled while it was starting
                    _kill(proc)
            try:
                returncode = _wait(proc, log_path, timeout_s, on_progress)
            except KeyboardInterrupt:
                _kill(proc)
                raise TrialInterrupted() from None
            finally:
                with self._lock:
                    self._live.pop(proc, None)
                    self._stopped.discard(run_dir)
        wall = time.perf_counter() - started
        metrics = read_metrics(run_dir)
        if returncode is None:
            return Outcome(status="timeout", metrics=metrics, reason=f"no result after {timeout_s:.0f} s",
                           log_path=log_path, wall_time_s=wall)
        if returncode == 0 and metrics is not None and metrics.status in ("completed", "diverged", "stopped"):
            return Outcome(status=metrics.status, metrics=metrics, reason=metrics.reason, log_path=log_path,
                           wall_time_s=wall)
        reason = _killed_by(returncode) or (metrics.reason if metrics is not None else None) \
            or _last_error(log_path) or f"exit code {returncode}"
        return Outcome(status="failed", metrics=metrics, reason=reason, log_path=log_path, wall_time_s=wall)

    @contextmanager
    def _gpu(self):
        if self.gpus is None:
            yield None
            return
        gpu = self._free_gpus.get()
        try:
            yield gpu
        finally:
            self._free_gpus.put(gpu)

    def _spawn(self, argv: list[str], log_path: Path, env: dict) -> subprocess.Popen:
        """Cold: a fresh `python -m trainer run`."""
        full = {**os.environ, **_trial_env(), **env}
        root = str(Path(__file__).resolve().parents[2])
        full["PYTHONPATH"] = root + os.pathsep + full.get("PYTHONPATH", "")
        with open(log_path, "a") as log:
            return subprocess.Popen([self.python, "-m", "trainer", *argv], stdout=log, stderr=subprocess.STDOUT,
                                    env=full, start_new_session=True, preexec_fn=die_with_parent)

    def _fork(self, argv: list[str], log_path: Path, env: dict):
        """Warm: a child of the fork server (trainer/worker.py)."""
        proc = _fork_context().Process(target=run_trial, args=(argv, str(log_path), {**_trial_env(), **env}),
                                       daemon=False)
        proc.start()
        return proc


def visible_gpus() -> list[str]:
    """The CUDA devices trials may be pinned to, without importing torch where there is no NVIDIA
    driver: $CUDA_VISIBLE_DEVICES's entries when set, else every device torch sees."""
    if not Path("/proc/driver/nvidia/gpus").is_dir() and sys.platform.startswith("linux"):
        return []  # no NVIDIA driver: no GPU, whatever $CUDA_VISIBLE_DEVICES says
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [x.strip() for x in env.split(",") if x.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:
        return []


def _trial_env() -> dict[str, str]:
    """Small CPU models train fastest on one thread, and a second thread that has to wait for a busy
    core slows a step down many times over (measured: 6 s vs 123 s for the tiny preset on 2 loaded
    cores). Users who want more set OMP_NUM_THREADS themselves."""
    threads = os.environ.get("OMP_NUM_THREADS", "").strip() or "1"  # (set but empty: unset)
    if not threads.isdigit() or int(threads) < 1:  # libgomp would only warn, and run on its default threads
        raise ValueError(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']!r}: expected a whole number of threads "
                         "per trial, at least 1 (or unset it: 1)")
    return {"OMP_NUM_THREADS": threads}


_FORK_LOCK = threading.Lock()
_FORK_CONTEXT = None


def _fork_context():
    """The fork server, started once per driver with torch and the trainer imported. It inherits
    the environment now, so torch's thread count is set before torch is imported."""
    global _FORK_CONTEXT
    with _FORK_LOCK:
        if _FORK_CONTEXT is None:
            os.environ["OMP_NUM_THREADS"] = _trial_env()["OMP_NUM_THREADS"]
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            from multiprocessing import forkserver

            forkserver.ensure_running()
            _FORK_CONTEXT = ctx
        return _FORK_CONTEXT


def _wait(proc, log_path: Path, timeout_s: float, on_progress: ProgressFn | None) -> int | None:
    """Wait for a trial process, feeding its log's JSON lines to `on_progress`; its exit code (a
    negative signal number when a signal ended it), or None after killing it at the timeout."""
    deadline = time.monotonic() + timeout_s
    offset = 0
    while True:
        code = _poll(proc, 0.2)
        offset = _follow(log_path, offset, on_progress)
        if code is not None:
            return code
        if time.monotonic() > deadline:
            _kill(proc)
            _follow(log_path, offset, on_progress)
            return None


def _poll(proc, seconds: float) -> int | None:
    if isinstance(proc, subprocess.Popen):
        try:
            return proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None
    proc.join(seconds)
    return proc.exitcode


def _follow(log_path: Path, offset: int, on_progress: ProgressFn | None) -> int:
    """Hand the complete lines the log gained since `offset` to `on_progress`; the new offset."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except OSError:
        return offset
    end = chunk.rfind(b"\n") + 1
    if on_progress is not None:
        for line in chunk[:end].decode(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    on_progress(json.loads(line))
                except Exception:  # the display must never break a trial
                    pass
    return offset + end


def _kill(proc) -> None:
    """SIGKILL a trial process (its whole session for a cold one) and reap it."""
    try:
        if isinstance(proc, subprocess.Popen):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        else:
            proc.kill()
            proc.join()
    except (ProcessLookupError, ValueError, AssertionError):  # already gone / not started
        pass


def _killed_by(returncode: int) -> str | None:
    """"killed by signal 9 (SIGKILL)" for a child a signal ended (the OOM killer, a user), else None."""
    if returncode >= 0:
        return None
    try:
        name = f" ({signal.Signals(-returncode).name})"
    except ValueError:
        name = ""
    return f"killed by signal {-returncode}{name}"


def _last_error(log_path: Path) -> str | None:
    """The log's last error line, else its last line that is not a progress record."""
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("{")]  # the trainer's JSON progress lines
    errors = [ln for ln in lines if ln.startswith("error:") or "Error" in ln]
    return (errors or lines or [None])[-1]
