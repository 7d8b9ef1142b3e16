"""SIGTERM (a scheduler) and SIGHUP (a closed terminal) end a run as Ctrl-C does: the loop stops at
its next safe point, the report is written, one line says so, exit 1, and the same command resumes."""

from __future__ import annotations

import os
import signal

import pytest

from research_agents.cli import main
from research_agents.config import load_study
from research_agents.execution.replay import ReplayExecutor
from research_agents.records import COUNTED
from research_agents.store import OptunaStore
from tests.reliability.helpers import write_study


class SignalOnce(ReplayExecutor):
    """The replay executor, sending this process `sig` during its third trial."""

    sig = signal.SIGTERM
    calls = 0

    def run(self, spec, run_dir, timeout_s, on_progress=None):
        SignalOnce.calls += 1
        if SignalOnce.calls == 3:
            os.kill(os.getpid(), SignalOnce.sig)
        return super().run(spec, run_dir, timeout_s, on_progress)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_stop_signal_ends_the_run_as_ctrl_c_does(tmp_path, monkeypatch, table, capsys, name):
    sig = getattr(signal, name)
    unhandled = []
    # what reaches the test process when the run does not handle the signal (instead of killing pytest)
    previous = signal.signal(sig, lambda s, f: unhandled.append(s))
    try:
        SignalOnce.sig, SignalOnce.calls = sig, 0
        monkeypatch.setattr("research_agents.execution.make_executor", lambda n, **kw: SignalOnce(table))
        study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
        args = ["run", "--study", str(study), "--budget", "8", "--executor", "replay:x", "--out", str(out)]
        code = main(args)
        said = capsys.readouterr().out
        assert unhandled == [] and code == 1, (unhandled, code)
        assert "interrupted: the running trial is marked interrupted; run the same command to resume" in said
        assert (out / "report.md").is_file()
        records = OptunaStore.for_study(out, load_study(study), readonly=True).records()
        assert len([r for r in records if r.status in COUNTED]) < 8  # stopped early...
        SignalOnce.calls = 100
        assert main(args) == 0  # ...and the same command finishes it
        records = OptunaStore.for_study(out, load_study(study), readonly=True).records()
        assert len([r for r in records if r.status in COUNTED]) == 8
    finally:
        signal.signal(sig, previous)
