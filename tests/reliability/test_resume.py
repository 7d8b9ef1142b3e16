"""Resuming loses nothing: a Ctrl-C'd trial is re-run once (case 4) and the round reports a kill
cut short are written (case 10)."""

from __future__ import annotations

import shutil

import pytest

from research_agents.cli import main
from research_agents.config import load_study
from research_agents.execution.replay import ReplayExecutor
from research_agents.records import COUNTED
from research_agents.report.round import round_path
from research_agents.store import OptunaStore
from tests.reliability.helpers import write_study


class CtrlCOnce(ReplayExecutor):
    """The replay executor, with Ctrl-C pressed during its `at`-th trial (counted across instances)."""

    calls = 0
    at = 3

    def run(self, spec, run_dir, timeout_s, on_progress=None):
        CtrlCOnce.calls += 1
        if CtrlCOnce.calls == CtrlCOnce.at:
            run_dir.mkdir(parents=True, exist_ok=True)
            raise KeyboardInterrupt
        return super().run(spec, run_dir, timeout_s, on_progress)


@pytest.mark.parametrize("at", [3, 7])  # a search trial; a confirmation trial
def test_a_ctrl_c_trial_is_rerun_once_on_resume(tmp_path, monkeypatch, table, capsys, at):
    CtrlCOnce.calls, CtrlCOnce.at = 0, at
    monkeypatch.setattr("research_agents.execution.make_executor",
                        lambda name, **kw: CtrlCOnce(table, study=kw.get("study")))
    study = write_study(tmp_path / "rel.toml")
    out = tmp_path / "out"
    args = ["run", "--study", str(study), "--budget", "8", "--executor", "replay:x", "--out", str(out)]
    assert main(args) == 1  # interrupted: report written, resume to continue
    store = lambda: OptunaStore.for_study(out, load_study(study), readonly=True).records()  # noqa: E731
    [cut] = [r for r in store() if r.status == "interrupted"]
    assert main(args) == 0
    records = store()
    same = [r for r in records if (r.config, r.seed, r.phase) == (cut.config, cut.seed, cut.phase)]
    assert [r.status for r in same] == ["interrupted", "completed"], same  # re-run, once
    counted = [(r.config, r.seed, r.phase) for r in records if r.status in COUNTED]
    assert len(counted) == len(set(counted)) == 8  # the budget counted it once
    assert "re-running trial" in capsys.readouterr().out


def test_missing_round_reports_are_rebuilt_as_they_were(run_copy):
    out, args = run_copy
    rounds = sorted((out / "rounds").glob("round-*.md"))
    assert len(rounds) >= 2
    original = {p.name: p.read_text() for p in rounds}
    for p in rounds:  # as SIGKILLs just after a trial leave them: never written
        p.unlink()
    assert main(args) == 0  # the budget is spent: nothing to run, the reports come back
    assert {p.name: p.read_text() for p in (out / "rounds").glob("round-*.md")} == original


class Killed(BaseException):
    """SIGKILL, as seen from inside: nothing after it runs (no except, no finally that writes)."""


def test_a_kill_after_a_trial_finished_leaves_every_round_reported(tmp_path, table, monkeypatch):
    from research_agents.report import round as round_module

    study = write_study(tmp_path / "rel.toml", trials_per_round=2)
    out = tmp_path / "out"
    args = ["run", "--study", str(study), "--budget", "10", "--executor", f"replay:{table}", "--out", str(out)]
    real = round_module.write_round_report

    def killed_at_round_end(out_, study_, round_no, *rest):
        if round_no == 2:
            raise Killed  # the trials of round 2 are in the store, its report is not
        return real(out_, study_, round_no, *rest)

    monkeypatch.setattr(round_module, "write_round_report", killed_at_round_end)
    with pytest.raises(Killed):
        main(args)
    assert round_path(out, 1).exists() and not round_path(out, 2).exists()
    monkeypatch.setattr(round_module, "write_round_report", real)
    shutil.rmtree(out / "rounds")  # every report gone, not only the last
    assert main(args) == 0
    records = OptunaStore.for_study(out, load_study(study), readonly=True).records()
    rounds = sorted({r.round for r in records})
    assert [p.name for p in sorted((out / "rounds").glob("round-*.md"))] == [round_path(out, n).name for n in rounds]
    for n in rounds:  # each lists exactly its own trials
        text = round_path(out, n).read_text()
        tried = text.split("## Tried this round")[1].split("## Results so far")[0]
        assert tried.count("\n|") - 2 == sum(r.round == n for r in records), (n, tried)
