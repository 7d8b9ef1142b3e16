"""Trials on this machine, each in its own process.

LocalExecutor starts `python -m trainer run` in its own process (a crash or a leak in one trial
cannot touch the next), keeps its log, enforces a timeout, and reads the trainer's per-step
JSON lines for the live display.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from research_agents.execution.base import BaseExecutor, Outcome, ProgressFn, TrialInterrupted
from research_agents.records import read_metrics
from trainer.spec import TrialSpec


class LocalExecutor(BaseExecutor):
    """One trial at a time on this machine; `gpu` pins it to one device when CUDA is present."""

    name = "local"

    def __init__(self, python: str = sys.executable, gpu: int | None = None):
        self.python = python
        self.gpu = gpu

    def run(self, spec: TrialSpec, run_dir: Path, timeout_s: float,
            on_progress: ProgressFn | None = None) -> Outcome:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").unlink(missing_ok=True)  # a re-run never reads a stale result
        spec_path = run_dir / "spec.json"
        spec_path.write_text(spec.model_dump_json(indent=1))
        log_path = run_dir / "trainer.log"
        env = dict(os.environ)
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        # Small CPU models train fastest on one thread, and a second thread that has to wait for
        # a busy core slows a step down many times over (measured: 6 s vs 123 s for the tiny
        # preset on 2 loaded cores). Users who want more set OMP_NUM_THREADS themselves.
        env.setdefault("OMP_NUM_THREADS", "1")
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [self.python, "-m", "trainer", "run", "--spec", str(spec_path), "--out", str(run_dir)]
        started = time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=env, start_new_session=True, preexec_fn=_die_with_parent)
            reader = threading.Thread(target=_pump, args=(proc, log, on_progress), daemon=True)
            reader.start()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill(proc)
                reader.join(5)
                return Outcome(status="timeout", metrics=read_metrics(run_dir),
                               reason=f"no result after {timeout_s:.0f} s", log_path=log_path,
                               wall_time_s=time.perf_counter() - started)
            except KeyboardInterrupt:
                _kill(proc)
                reader.join(5)
                raise TrialInterrupted() from None
            reader.join(5)
        wall = time.perf_counter() - started
        metrics = read_metrics(run_dir)
        if proc.returncode == 0 and metrics is not None and metrics.status in ("completed", "diverged"):
            return Outcome(status=metrics.status, metrics=metrics, reason=metrics.reason, log_path=log_path,
                           wall_time_s=wall)
        reason = _killed_by(proc.returncode) or (metrics.reason if metrics is not None else None) \
            or _last_error(log_path) or f"exit code {proc.returncode}"
        return Outcome(status="failed", metrics=metrics, reason=reason, log_path=log_path, wall_time_s=wall)


def _die_with_parent() -> None:
    """Linux: the trial gets SIGKILL if the loop dies (SIGKILL included), so no orphan trains on."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _pump(proc: subprocess.Popen, log, on_progress: ProgressFn | None) -> None:
    for line in proc.stdout:
        log.write(line)
        log.flush()
        if on_progress and line.startswith("{"):
            try:
                on_progress(json.loads(line))
            except (json.JSONDecodeError, Exception):  # the display must never break a trial
                pass


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


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
