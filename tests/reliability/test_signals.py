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
        monkeypatch.setattr("research_agents.execution.make_executor",
                            lambda n, **kw: SignalOnce(table, study=kw.get("study")))
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


@pytest.mark.parametrize("second", ["SIGINT", "SIGTERM"])
def test_a_second_stop_during_the_clean_up_is_one_line_and_leaves_no_half_file(tmp_path, monkeypatch, table,
                                                                               capsys, second):
    """Ctrl-C stops the run; a second Ctrl-C (or a scheduler's SIGTERM) while it writes its report
    ends it at once: one line, exit 1, no traceback; the write it came in finishes whole (no
    temp file left, no half report), and the same command resumes to the end."""
    from research_agents import safefs

    first, again = signal.SIGINT, getattr(signal, second)
    unhandled = []
    previous = {s: signal.signal(s, lambda n, f: unhandled.append(n)) for s in (first, again)}
    mkstemp = safefs.tempfile.mkstemp

    def interrupted_mkstemp(*a, **kw):  # the second signal comes as the report's temp file is made
        made = mkstemp(*a, **kw)
        if kw.get("prefix", "").startswith(".report.md"):
            os.kill(os.getpid(), again)
        return made

    try:
        SignalOnce.sig, SignalOnce.calls = first, 0
        monkeypatch.setattr("research_agents.execution.make_executor",
                            lambda n, **kw: SignalOnce(table, study=kw.get("study")))
        monkeypatch.setattr(safefs.tempfile, "mkstemp", interrupted_mkstemp)
        study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
        args = ["run", "--study", str(study), "--budget", "8", "--executor", "replay:x", "--out", str(out)]
        code = main(args)
        said = capsys.readouterr()
        assert unhandled == [] and code == 1, (unhandled, code, said.err)
        lines = [ln for ln in said.err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("interrupted: stopped at once") and "Traceback" not in said.err
        assert [p.name for p in out.rglob("*.tmp")] == []
        assert (out / "report.md").read_text().rstrip().endswith("```")  # whole: its last line is there
        monkeypatch.setattr(safefs.tempfile, "mkstemp", mkstemp)
        SignalOnce.calls = 100
        assert main(args) == 0
        records = OptunaStore.for_study(out, load_study(study), readonly=True).records()
        assert len([r for r in records if r.status in COUNTED]) == 8
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
