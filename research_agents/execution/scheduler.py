"""The trial scheduler: trains a batch of runs `workers` at a time and records each in the store.

Runs start in the batch's order (so trial numbers and directories do not depend on timing); the
driver thread is the only writer of the store (start, then finish with the outcome). With several
workers and an executor whose trials are worth it, a worker the batch leaves idle trains a run the
next round will likely make (execution/speculation.py); a batch that makes the same trial spec
adopts it instead of training it again. Ctrl-C (`stopping`, or an executor that saw it): every
running trial is stopped and recorded as interrupted, and TrialInterrupted is raised.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from research_agents.actions import Run
from research_agents.config.space import config_id
from research_agents.execution.base import BaseExecutor, TrialInterrupted
from research_agents.execution.speculation import Ahead, Speculation
from research_agents.records import TrialRecord
from research_agents.safefs import check_inside, write_failure
from research_agents.store.base import BaseStore
from trainer.spec import TrialSpec


def trial_dir(out: Path, number: int, arm: str, params: dict, seed: int) -> str:
    """trials/NNNN-ARM-CONFIG-sSEED, NNNN the trial's number; never a directory that exists (a
    trial of a lost store, or one killed before its record was written): that gets a suffix."""
    base = f"trials/{number:04d}-{arm}-{config_id(arm, params)}-s{seed}"
    name, n = base, 1
    while os.path.lexists(out / name):  # (a dangling symlink too)
        n += 1
        name = f"{base}-{n}"
    return name


@dataclass
class TrialScheduler:
    executor: BaseExecutor
    store: BaseStore
    out: Path
    timeout_s: float
    spec: Callable[[Run], TrialSpec]  # a run's trial spec
    predict: Callable[[], list[Run]]  # the next round's likely runs (for idle workers)
    stopping: Callable[[], bool]  # Ctrl-C seen: start nothing more, stop at the next safe point
    hooks: Any  # on_trial_start, on_progress, on_trial_end, on_message (the loop's LoopHooks)
    workers: int = 1
    speculate: bool = True
    before_start: Callable[[Run, TrialSpec, Path], None] | None = None  # (run, spec, its new trial dir)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _ahead: Speculation | None = field(default=None, init=False, repr=False)
    _predicted: tuple[int, list] = field(default=(-1, []), init=False, repr=False)  # (trials ended, specs)

    def check_stop(self) -> None:
        if self.stopping():
            raise TrialInterrupted()

    def run(self, runs: list[Run]) -> list[TrialRecord]:
        """Train `runs`, up to `workers` at once, started in the given order; returns their records
        in that order."""
        done: dict[int, TrialRecord] = {}
        todo = [(i, run, self.spec(run)) for i, run in enumerate(runs)]
        running: dict[Future, tuple[int, TrialRecord, Ahead | None]] = {}
        pool, ahead = self._workers()
        if ahead is not None:  # this round's runs first: stop runs trained ahead that it does not make
            keep = {ahead.key(spec) for _, _, spec in todo}
            ahead.make_room(sum(1 for _, _, spec in todo if not ahead.has(spec)), keep, self.workers, 0)
        try:
            while todo or running:
                while todo and not self.stopping():
                    i, run, spec = todo[0]
                    record = None
                    if ahead is not None and ahead.has(spec):
                        record, future, taken = self._adopt(run, spec, ahead)
                    elif len(running) + (ahead.busy() if ahead else 0) < self.workers:
                        record, future, taken = self._start(run, spec, pool)
                    if record is None:
                        break
                    todo.pop(0)
                    running[future] = (i, record, taken)
                if ahead is not None and not todo and not self.stopping():
                    self._fill_idle(pool, ahead, len(running))
                self.check_stop()
                pending = list(running) + ([a.future for a in ahead.runs.values() if not a.future.done()]
                                           if ahead else [])
                finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                if ahead is not None:
                    ahead.reap()
                for future in sorted((f for f in finished if f in running), key=lambda f: running[f][0]):
                    i, record, taken = running.pop(future)
                    done[i] = self._finish(record, future, taken)
        except (TrialInterrupted, KeyboardInterrupt):  # Ctrl-C here, or an executor that saw it
            self.executor.cancel()
            for future, (_, record, _taken) in running.items():
                wait([future])
                self.store.finish(record, "interrupted", None, "interrupted by the user (Ctrl-C)")
            self.close()
            raise TrialInterrupted() from None
        except Exception:  # e.g. the disk full: the run stops, so do its trials (recorded as the caller decides)
            self.executor.cancel()
            raise
        return [done[i] for i in sorted(done)]

    def _workers(self) -> tuple[ThreadPoolExecutor, Speculation | None]:
        """The threads that wait on running trials (one per worker), and the runs trained ahead
        (with several workers, when the executor's trials take long enough to be worth it)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(1, self.workers), thread_name_prefix="trial")
            if self.speculate and self.workers > 1 and self.executor.worth_speculating:
                self._ahead = Speculation(self.executor, self.out, self.timeout_s)
        return self._pool, self._ahead

    def close(self) -> None:
        """Stop what was trained ahead and never adopted, and the worker threads."""
        if self._ahead is not None:
            self._ahead.close()
            if self._ahead.started:  # (added to a resumed run's earlier counts)
                before = self.store.get_meta("speculation") or {}
                self.store.set_meta("speculation", {k: before.get(k, 0) + v for k, v in self._ahead.summary().items()})
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._ahead = None

    # -- one trial: its record starts in the batch's order, its outcome finishes it
    def _start(self, run: Run, spec: TrialSpec, pool: ThreadPoolExecutor) -> tuple[TrialRecord, Future, None]:
        record = self._record_start(run)
        if self.before_start is not None:  # e.g. the loop moves an interrupted trial's checkpoint in
            self.before_start(run, spec, self.out / record.run_dir)
        future = pool.submit(self.executor.run, spec, self.out / record.run_dir, self.timeout_s,
                             functools.partial(self.hooks.on_progress, record))
        return record, future, None

    def _adopt(self, run: Run, spec: TrialSpec, ahead: Speculation) -> tuple[TrialRecord, Future, Ahead]:
        record = self._record_start(run)
        taken = ahead.take(spec, functools.partial(self.hooks.on_progress, record))
        return record, taken.future, taken

    def _record_start(self, run: Run) -> TrialRecord:
        run_dir = trial_dir(self.out, len(self.store.records()) + 1, run.arm, run.params, run.seed)
        check_inside(self.out / run_dir, self.out)  # (a trials/ now a symlink out of OUT: UnsafePath, the run stops)
        record = self.store.start(run.arm, run.params, run.seed, run.origin, run.phase, run.round, run.rationale,
                                  run_dir, point=run.point, expected=run.expected, swap=run.swap,
                                  stop_above=run.stop_above)
        self.hooks.on_trial_start(record)
        return record

    def _finish(self, record: TrialRecord, future: Future, taken: Ahead | None = None) -> TrialRecord:
        try:
            outcome = future.result() if taken is None else self._ahead.land(taken, self.out / record.run_dir)
        except (TrialInterrupted, KeyboardInterrupt):
            self.store.finish(record, "interrupted", None, "interrupted by the user (Ctrl-C)")
            raise TrialInterrupted() from None
        except Exception as err:  # an executor's own failure is this trial's recorded failure...
            if (why := write_failure(err)) is not None:  # ...but not its run directory refusing a write
                self.store.finish(record, "interrupted", None, why)  # (re-run on resume, never counted)
                raise
            record = self.store.finish(record, "failed", None, f"executor error: {type(err).__name__}: {err}")
        else:
            record = self.store.finish(record, outcome.status, outcome.metrics, outcome.reason)
        self.hooks.on_trial_end(record)
        return record

    # -- speculation: idle workers train what the next round will likely make
    def _fill_idle(self, pool: ThreadPoolExecutor, ahead: Speculation, running: int) -> None:
        free = self.workers - running - ahead.busy()
        if free <= 0 or not self.speculate:
            return
        ended = sum(1 for r in self.store.records() if r.status != "running")
        if ended != self._predicted[0]:  # predicted again only once another trial has ended
            try:
                self._predicted = (ended, [self.spec(run) for run in self.predict()])
            except Exception as err:  # a guess must never stop the study: no more guessing
                self.speculate = False
                self.hooks.on_message(f"no more runs trained ahead: predicting the next round failed: "
                                      f"{type(err).__name__}: {err}")
                return
        later = []  # each predicted run is started once
        for spec in self._predicted[1]:
            if ahead.key(spec) in ahead.runs:
                continue
            if free > 0:
                ahead.start(spec, pool)
                free -= 1
            else:
                later.append(spec)
        self._predicted = (ended, later)


__all__ = ["TrialScheduler", "trial_dir"]
