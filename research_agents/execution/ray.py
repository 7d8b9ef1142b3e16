"""Trials as Ray tasks: one machine's cores or GPUs, or a whole cluster's.

`--executor ray [--ray-address auto|ADDRESS]`. Each trial is a Ray task that asks for one GPU on
CUDA (Ray sets CUDA_VISIBLE_DEVICES for it) or `cpus_per_trial` CPUs otherwise. On whichever node
it lands, the task trains the trial exactly as the local executor does (a fresh `python -m trainer
run` in its own process). Where the node sees the driver's run directory (a local Ray, or a cluster
on a shared filesystem: the task finds the token the driver wrote there), it trains in that
directory, so periodic checkpoints land where the loop finds them when the trial is interrupted;
elsewhere it trains in a scratch directory of its node and sends back the trial's files, which the
driver writes into the run directory (nodes need no shared filesystem; an interrupted trial's
checkpoints are then lost with the scratch directory). A re-run of an interrupted trial resumes
from the checkpoint the loop moved into its directory either way: the task gets it with the spec.
The driver stays the only writer of the store. The same spec and seed give the same numbers as the
local executor. Needs the optional extra: `pip install research-agents[ray]`.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from research_agents.execution.base import BaseExecutor, Outcome, ProgressFn, TrialInterrupted
from research_agents.records import read_metrics
from trainer.spec import TrialSpec

CHECKPOINT = "checkpoint.pt"  # trainer.checkpoint.CHECKPOINT_FILE (that module imports torch)
MAX_FILE_BYTES = 2 << 30  # a trial's files come back whole; a checkpoint may be large, not unbounded
SHARED_MARK = ".ray-shared"  # + "." + the run's token, in its directory: a task that sees it trains in place
FINISHED = ("completed", "diverged", "stopped")


class RayExecutor(BaseExecutor):
    name = "ray"

    def __init__(self, address: str | None = None, gpus_per_trial: float = 0.0, cpus_per_trial: float = 1.0,
                 init_kwargs: dict | None = None, in_place: bool = True):
        try:
            import ray
        except ImportError:
            raise ValueError("--executor ray needs Ray: pip install 'research-agents[ray]' (or pip install ray)") \
                from None
        self.ray = ray
        self.address = address
        self.gpus_per_trial = gpus_per_trial
        self.cpus_per_trial = cpus_per_trial
        self.init_kwargs = dict(init_kwargs or {})
        self.in_place = in_place  # False: every task trains in scratch, as on nodes without the run directory
        self._refs: dict = {}  # running task -> its run_dir
        self._task = None

    def connect(self) -> None:
        self._connect()

    def _connect(self):
        if self._task is None:
            if not self.ray.is_initialized():
                kwargs = {"address": self.address, "include_dashboard": False, "log_to_driver": False,
                          "configure_logging": False, **self.init_kwargs}
                try:
                    _reachable(self.address)
                    self.ray.init(**{k: v for k, v in kwargs.items() if v is not None})
                except Exception as err:  # ConnectionError, a bad address, ...
                    raise RuntimeError(f"cannot start or reach Ray at {self.address or 'a new local cluster'}: "
                                       f"{' '.join(str(err).split())}") from None
            self._task = self.ray.remote(_train_remote).options(
                num_cpus=self.cpus_per_trial, num_gpus=self.gpus_per_trial, max_retries=0)
        return self._task

    def _local(self) -> bool:
        """Every live node of the cluster is this driver's node, so every task sees the run directory
        (False when Ray cannot say)."""
        try:
            here = self.ray.util.get_node_ip_address()
            return all(n.get("NodeManagerAddress") == here for n in self.ray.nodes() if n.get("Alive"))
        except Exception:  # an older or remote API that does not answer: send the checkpoint
            return False

    def default_workers(self) -> int:
        """As many trials at once as the cluster has GPUs (GPU trials) or CPUs per trial."""
        self._connect()
        res = self.ray.cluster_resources()
        if self.gpus_per_trial:
            return max(1, int(res.get("GPU", 0) // self.gpus_per_trial))
        return max(1, int(res.get("CPU", 1) // self.cpus_per_trial))

    def describe(self) -> str:
        where = self.address or "a local Ray cluster"
        each = f"{self.gpus_per_trial:g} GPU" if self.gpus_per_trial else f"{self.cpus_per_trial:g} CPU"
        return f"ray ({where}; {each} per trial)"

    def cancel(self, run_dir: Path | None = None) -> None:
        for ref in [ref for ref, d in list(self._refs.items()) if run_dir is None or d == run_dir]:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:
                pass

    def run(self, spec: TrialSpec, run_dir: Path, timeout_s: float,
            on_progress: ProgressFn | None = None) -> Outcome:
        started = time.perf_counter()
        try:
            task = self._connect()
        except RuntimeError as err:
            return Outcome(status="failed", metrics=None, reason=str(err), log_path=None,
                           wall_time_s=time.perf_counter() - started)
        run_dir = run_dir.resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        mark = run_dir / f"{SHARED_MARK}.{token}"
        ref = None
        try:
            # a checkpoint travels only where a task may train in scratch: not on a cluster of this node
            # alone (asked only when there is one: most trials carry none)
            path = _checkpoint(spec, run_dir)
            carried = None if path is None or (self.in_place and self._local()) else path.read_bytes()
            if self.in_place:
                mark.touch()
            # the checkpoint goes by reference (in a list, so Ray does not resolve it): fetched only
            # by a task that trains in scratch
            ref = task.remote(spec.model_dump(mode="json"), timeout_s, str(run_dir), token,
                              None if carried is None else [self.ray.put(carried)])
            self._refs[ref] = run_dir
            status, reason, files = self.ray.get(ref, timeout=timeout_s + 120)
        except KeyboardInterrupt:
            if ref is not None:
                self.ray.cancel(ref, force=True)
            raise TrialInterrupted() from None
        except self.ray.exceptions.GetTimeoutError:
            self.ray.cancel(ref, force=True)
            return Outcome(status="timeout", metrics=None, reason=f"no result from Ray after {timeout_s:.0f} s",
                           log_path=None, wall_time_s=time.perf_counter() - started)
        except self.ray.exceptions.TaskCancelledError:
            return Outcome(status="failed", metrics=None, reason="cancelled", log_path=None,
                           wall_time_s=time.perf_counter() - started)
        # the worker died (OOM, a crash), a node was lost, ...; or the checkpoint could not be read or sent
        except (self.ray.exceptions.RayError, OSError, ValueError, TypeError) as err:
            return Outcome(status="failed", metrics=None, reason=f"ray: {' '.join(str(err).split())[:300]}",
                           log_path=None, wall_time_s=time.perf_counter() - started)
        finally:
            self._refs.pop(ref, None)
            mark.unlink(missing_ok=True)
        for name, data in files.items():
            (run_dir / name).write_bytes(data)
        if status in FINISHED and carried is not None and CHECKPOINT not in files:
            (run_dir / CHECKPOINT).unlink(missing_ok=True)  # the trial is done: its moved checkpoint goes too
        metrics = read_metrics(run_dir)
        log_path = run_dir / "trainer.log"
        return Outcome(status=status, metrics=metrics, reason=reason, log_path=log_path if log_path.exists() else None,
                       wall_time_s=time.perf_counter() - started)


def _reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A HOST:PORT address must accept a connection within seconds (Ray itself retries for minutes)."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected auto or HOST:PORT, got {address!r}")
    import socket

    with socket.create_connection((host, int(port)), timeout=timeout_s):
        pass


def _checkpoint(spec: TrialSpec, run_dir: Path) -> Path | None:
    """The checkpoint the loop moved into a re-run's directory (None: none, the spec saves none, or
    it is larger than a file that may travel)."""
    path = run_dir / CHECKPOINT
    if spec.save_checkpoint_every is None or not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
        return None
    return path


def _shared(run_dir: Path, token: str) -> bool:
    """This node sees the driver's run directory (the mark with this run's token is there)."""
    try:
        return (run_dir / f"{SHARED_MARK}.{token}").is_file()
    except OSError:
        return False


def _train_remote(spec_json: dict, timeout_s: float, driver_dir: str | None = None, token: str | None = None,
                  checkpoint: list | None = None) -> tuple[str, str | None, dict[str, bytes]]:
    """The Ray task: train with the local executor (cold: a Ray worker is already a warm, reused
    process) in the driver's run directory where this node sees it (only metrics.json goes back,
    so the driver need not trust a shared filesystem's caching), else in a scratch directory of
    this node, started from the checkpoint in `checkpoint` ([bytes, or a Ray reference to them])
    when the driver sent one; return the outcome and the trial's files."""
    import tempfile

    from research_agents.execution.local import LocalExecutor

    spec = TrialSpec.model_validate(spec_json)
    if driver_dir is not None and token is not None and _shared(Path(driver_dir), token):
        outcome = LocalExecutor(warm=False).run(spec, Path(driver_dir), timeout_s)
        metrics = Path(driver_dir) / "metrics.json"
        return outcome.status, outcome.reason, {metrics.name: metrics.read_bytes()} if metrics.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="research-agents-trial-") as tmp:
        run_dir = Path(tmp) / "trial"
        if checkpoint:
            data = checkpoint[0]
            if not isinstance(data, bytes):  # a Ray reference
                import ray

                data = ray.get(data)
            run_dir.mkdir(parents=True)
            (run_dir / CHECKPOINT).write_bytes(data)
        outcome = LocalExecutor(warm=False).run(spec, run_dir, timeout_s)
        files = {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())
                 if p.is_file() and os.path.getsize(p) <= MAX_FILE_BYTES}
    return outcome.status, outcome.reason, files
