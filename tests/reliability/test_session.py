"""The run session: run.json as a typed RunFile (older files still open, the format is unchanged),
what a resume must match, and how a finished `run` is classified (exit code and line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research_agents.cli import main
from research_agents.cli.run import outcome
from research_agents.records import TrialRecord
from research_agents.session import RUN_FILE, RunFile
from research_agents.store import OptunaStore

# run.json as the version before the typed session (81a0212) wrote it, for the default study
OLD_RUN_FILE = Path(__file__).parent / "data" / "run_81a0212.json"


def test_a_run_file_written_before_the_typed_session_reads_and_writes_back_byte_for_byte(tmp_path):
    run = RunFile.read(_dir_with(tmp_path / "old", OLD_RUN_FILE.read_text()))
    assert run is not None and run.study.name == "muon_vs_adamw" and run.scale == "cpu" and run.budget == 20
    run.write(tmp_path)
    assert (tmp_path / RUN_FILE).read_text() == OLD_RUN_FILE.read_text()


def test_a_run_file_from_before_scales_and_executors_opens_reports_and_resumes(run_copy, capsys):
    out, args = run_copy
    saved = json.loads((out / RUN_FILE).read_text())
    for key in ("scale", "executor", "workers", "speculate"):  # what older versions did not write
        del saved[key]
    (out / RUN_FILE).write_text(json.dumps(saved, indent=1))
    assert main(["status", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    assert "python -m research_agents run --study rel --planner policy --budget 8" in (out / "report.md").read_text()
    n = len(_records(out))
    assert main(args) == 0  # the same arguments resume it: nothing to train, nothing lost
    assert len(_records(out)) == n
    resumed = json.loads((out / RUN_FILE).read_text())
    assert resumed["study"] == saved["study"] and resumed["executor"].startswith("replay")
    capsys.readouterr()


def test_a_resume_must_match_the_saved_run(tmp_path):
    run = RunFile.read(_dir_with(tmp_path / "old", OLD_RUN_FILE.read_text()))
    assert run is not None and run.resumes(run)
    assert not run.model_copy(update={"preset": "seed-ablation"}).resumes(run)
    assert not run.model_copy(update={"scale": "seed"}).resumes(run)
    assert not run.model_copy(update={"overrides": {"steps": 5}}).resumes(run)
    assert run.model_copy(update={"overrides": {"device": "cpu"}}).resumes(run)  # the device may change
    every = run.model_copy(update={"overrides": {**run.overrides, "save_checkpoint_every": 50}})
    assert every.resumes(run) and run.resumes(every)  # so may the checkpoint interval (it changes no number)
    assert "--checkpoint-every 50" in every.command_line(Path("out")) and "save_checkpoint" not in \
        every.command_line(Path("out"))
    seeds = run.study.seeds.model_copy(update={"search": [7]})
    assert not run.model_copy(update={"study": run.study.model_copy(update={"seeds": seeds})}).resumes(run)
    unscaled = RunFile.model_validate({k: v for k, v in run.model_dump(mode="json").items() if k != "scale"})
    assert run.model_copy(update={"scale": "seed"}).resumes(unscaled)  # saved before scales: the study decides
    points = run.model_copy(update={"experiments": ["a", "b"]})
    assert points.model_copy(update={"experiments": ["b", "a", "c"]}).resumes(points)  # add, never drop
    assert not points.model_copy(update={"experiments": ["a"]}).resumes(points)
    assert not run.resumes(points) and not points.resumes(run)


@pytest.mark.parametrize("text, needle", [
    ('{"study": {"name": ', "run.json cannot be read"),
    ('[1, 2]', "is not a run file (no study)"),
    ('{"study": {"name": "x"}, "budget": 3, "preset": "tiny"}', "the saved study is not valid"),
])
def test_a_damaged_run_file_is_one_line_for_status_and_report(tmp_path, capsys, text, needle):
    out = _dir_with(tmp_path / "out", text)
    for command in ("status", "report"):
        assert main([command, str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err, err


def test_a_run_file_without_its_budget_is_one_line(tmp_path, capsys):
    saved = json.loads(OLD_RUN_FILE.read_text())
    del saved["budget"]
    out = _dir_with(tmp_path / "out", json.dumps(saved))
    assert main(["status", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a valid run file (budget: Field required)" in err, err


def _record(i: int, status: str, reason: str | None = None) -> TrialRecord:
    return TrialRecord(id=i, order=i, arm="adamw", params={"lr": 0.01}, seed=0, origin="policy", phase="search",
                       round=1, status=status, reason=reason, val_loss=5.0 if status == "completed" else None)


def test_the_outcome_of_a_run(tmp_path):
    done, failed = _record(1, "completed"), _record(2, "failed", "CUDA error:\n  out of memory")
    assert outcome([done, failed], set(), out=tmp_path).code == 0
    cut = outcome([done], set(), interrupted=True, out=tmp_path)
    assert cut.code == 1 and not cut.to_stderr and cut.line and cut.line.startswith("interrupted:")
    stopped = outcome([done], set(), llm_error="the LLM is unreachable", out=tmp_path)
    assert stopped.code == 1 and stopped.line == ("error: the LLM is unreachable; finished trials are saved, run "
                                                  "the same command to resume")
    nothing = outcome([done, failed], {1}, out=tmp_path)  # this command ran one trial, and it failed
    assert nothing.code == 1 and nothing.to_stderr and nothing.line and \
        "the 1 trial(s) this command ran all ended without a result (1 failed); last reason: CUDA error: out of " \
        "memory" in nothing.line and str(tmp_path / "trials") in nothing.line
    # every trial diverged: no loss to compare, so no result (issue 21: never a silent exit 0)
    diverged = outcome([_record(1, "diverged")], set(), out=tmp_path)
    assert diverged.code == 1 and diverged.line and "(1 diverged)" in diverged.line
    assert outcome([done, _record(2, "diverged")], set(), out=tmp_path).code == 0  # one completed: a result


def _dir_with(out: Path, text: str) -> Path:
    out.mkdir(parents=True)
    (out / RUN_FILE).write_text(text)
    return out


def _records(out: Path):
    run = RunFile.read(out)
    assert run is not None
    return OptunaStore.for_study(out, run.study, readonly=True).records()




@pytest.mark.parametrize("field, value", [("budget", "20"), ("budget", True), ("budget", 0), ("budget", -5),
                                          ("workers", "2"), ("workers", 0), ("confirm_seeds", 1.5),
                                          ("speculate", "yes"), ("preset", 3), ("experiments", "quick"),
                                          ("storage", 5)])
def test_a_hand_edited_run_file_of_the_wrong_type_is_one_line_naming_the_field(run_copy, capsys, field, value):
    """run.json is read strictly: "budget": "20" is refused (never taken as 20), as is any value of
    the wrong type or range; status, report and the resume each say which field in one line."""
    out, args = run_copy
    saved = json.loads((out / RUN_FILE).read_text())
    saved[field] = value
    (out / RUN_FILE).write_text(json.dumps(saved))
    for command in (["status", str(out)], ["report", str(out)], args):
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"is not a valid run file ({field}:" in err, err
