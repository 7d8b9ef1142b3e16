"""Nothing silent: bad input is refused before anything is written (exit 2, one line), and a run
whose trials all failed says so (exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from research_agents.cli import main
from research_agents.config import load_study
from research_agents.execution import BaseExecutor, Outcome
from research_agents.store import OptunaStore
from tests.reliability.helpers import fingerprint, one_error_line, read_only, study_toml, write_study


def _run(study: Path, out: Path, table: Path, *extra: str, budget: int = 8) -> list[str]:
    return ["run", "--study", str(study), "--budget", str(budget), "--executor", f"replay:{table}",
            "--out", str(out), *extra]


def _refused(argv: list[str], capsys, needle: str) -> str:
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert needle in line, line
    return line


# ------------------------------------------------------------------ case 5: a device that is not there


def test_device_cuda_without_cuda_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    _refused(["run", "--study", str(study), "--budget", "8", "--device", "cuda", "--out", str(out)], capsys,
             "--device cuda")
    assert not out.exists()


class _AllFail(BaseExecutor):
    """Every trial ends without a result, as `--device cuda` trials did on a CPU machine."""

    def __init__(self, status: str):
        self.status = status

    def run(self, spec, run_dir, timeout_s, on_progress=None):
        return Outcome(status=self.status, metrics=None, reason=f"{self.status} on purpose", log_path=None,
                       wall_time_s=0.0)


@pytest.mark.parametrize("status", ["failed", "timeout", "diverged"])
def test_a_run_whose_trials_all_failed_exits_1_saying_so(tmp_path, capsys, monkeypatch, table, status):
    monkeypatch.setattr("research_agents.execution.make_executor", lambda name, **kw: _AllFail(status))
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    assert main(_run(study, out, table)) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "no trial completed" in line and f"{status} on purpose" in line, line
    records = OptunaStore.for_study(out, load_study(study), readonly=True).records()
    assert records and {r.status for r in records} == {status}
    assert main(_run(study, out, table)) == 1  # resumed with nothing left to run: still no result
    capsys.readouterr()


def test_a_run_with_results_exits_0(tmp_path, table):
    # (the guard above is not "any failure": a real result among the trials is success)
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    assert main(_run(study, out, table)) == 0


# ------------------------------------------------------------------ cases 6 and 7: the grid and the study


def test_a_grid_key_given_twice_is_refused(tmp_path, capsys, table):
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    _refused(_run(study, out, table, "--grid", "lr=0.01 lr=0.02"), capsys, "lr is given twice")
    _refused(_run(study, out, table, "--grid", "lr=0.01,0.01"), capsys, "lists 0.01 more than once")
    assert not out.exists()


BAD_STUDIES = {
    # the space allows lr -0.003, the trainer does not: refused at load, not mid-run
    "start invalid for the trainer": (dict(muon_space='lr = { type = "float", low = -0.01, high = 0.1 }',
                                           muon_start="{ lr = -0.003 }"), "arms.muon.start"),
    "low nan": (dict(muon_space='lr = { type = "float", low = nan, high = 0.1 }'), "finite"),
    "high inf": (dict(muon_space='lr = { type = "float", low = 0.001, high = inf, log = true }'), "finite"),
    "name ..": (dict(name=".."), "name"),
    "name .": (dict(name="."), "name"),
    "name with a slash": (dict(name="a/b"), "name"),
}


@pytest.mark.parametrize("case", sorted(BAD_STUDIES))
def test_a_bad_study_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, table, case):
    kw, needle = BAD_STUDIES[case]
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    monkeypatch.setenv("RESEARCH_AGENTS_EXPERIMENTS", str(experiments))
    study = tmp_path / "bad.toml"
    study.write_text(study_toml(**kw))
    # no --out: the run would go to experiments/runs/<name> (name "..": experiments/ itself)
    argv = ["run", "--study", str(study), "--budget", "8", "--executor", f"replay:{table}"]
    _refused(argv, capsys, needle)
    assert list(experiments.iterdir()) == []


def test_a_named_point_must_be_a_whole_trial_spec(tmp_path, capsys, table):
    study = tmp_path / "bad.toml"
    study.write_text(study_toml() + '[[points]]\nname = "neg"\narm = "muon"\nparams = { lr = -0.5 }\n')
    _refused(_run(study, tmp_path / "out", table), capsys, "points: neg")


# ------------------------------------------------------------------ case 8: --out and --storage


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys, table):
    study = write_study(tmp_path / "rel.toml")
    (tmp_path / "file").write_text("mine")
    _refused(_run(study, tmp_path / "file", table), capsys, "is not a directory")
    _refused(_run(study, tmp_path / "file" / "sub", table), capsys, "is not a directory")
    assert (tmp_path / "file").read_text() == "mine"


def test_an_out_on_a_read_only_file_system_is_refused(tmp_path, table):
    study = write_study(tmp_path / "rel.toml")
    ro = tmp_path / "ro"
    ro.mkdir()
    done = read_only([ro], ["-m", "research_agents", *_run(study, ro / "out", table)])
    assert done.returncode == 2 and "read-only file system" in one_error_line(done.stderr)
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("extra, needle", [
    (("--rungs-late", "1"), "--rungs-late applies only with --rungs"),
    (("--rungs", "--rungs-late", "-1"), "--rungs-late"),
    (("--rungs", "--rungs-late", "nan"), "--rungs-late"),
])
def test_a_bad_rung_option_is_refused(tmp_path, capsys, table, extra, needle):
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    _refused(_run(study, out, table, *extra), capsys, needle)
    assert not out.exists()


@pytest.mark.parametrize("url, needle", [
    ("bogus://x", "bogus"),
    ("not a url", "not a SQLAlchemy URL"),
    ("postgresql://nohost/x", "cannot connect"),
    ("sqlite:///no/such/dir/x.db", "does not exist"),
])
def test_a_storage_that_cannot_be_used_is_refused(tmp_path, capsys, table, url, needle):
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    line = _refused(_run(study, out, table, "--storage", url), capsys, needle)
    assert line.startswith("error: --storage")
    assert not out.exists()


def test_a_damaged_run_file_is_one_line(run_copy, capsys):
    out, args = run_copy
    (out / "run.json").write_text('{"study": {"name": ')  # cut short
    before = fingerprint(out)
    for argv in (args, ["status", str(out)], ["report", str(out)]):
        _refused(argv, capsys, "run.json cannot be read")
    assert fingerprint(out) == before


# ------------------------------------------------------------------ names and ranges checked where they enter


def _renamed_arm(name: str) -> str:
    """The reliability study with its AdamW arm named `name` (TOML-quoted)."""
    text = study_toml().replace('comparisons = [["adamw", "muon"]]', f'comparisons = [["{name}", "muon"]]')
    return text.replace("[arms.adamw]", f'[arms."{name}"]').replace("[arms.adamw.space]", f'[arms."{name}".space]')


BAD_NAMES = {
    "arm ../x": (_renamed_arm("../x"), "arm name"),
    "arm a/b": (_renamed_arm("a/b"), "arm name"),
    "arm with markup": (_renamed_arm("[bold]x"), "arm name"),
    "arm ..": (_renamed_arm(".."), "arm name"),
    "knob with ..": (study_toml(muon_space='"lr..x" = { type = "float", low = 0.003, high = 0.6 }'), "parameter name"),
    "knob with markup": (study_toml(muon_space='"[/]" = { type = "float", low = 0.003, high = 0.6 }'),
                         "parameter name"),
    "float knob low == high": (study_toml(muon_space='lr = { type = "float", low = 0.02, high = 0.02 }'),
                               "needs a range"),
    "an arm compared with itself": (study_toml().replace('comparisons = [["adamw", "muon"]]',
                                                         'comparisons = [["muon", "muon"]]'), "compared with itself"),
    "a when on a value the choice never takes": (study_toml(muon_space=(
        'lr = { type = "float", low = 0.003, high = 0.6, log = true }\n'
        '"momentum_schedule.kind" = { type = "choice", choices = ["fixed", "linear"] }\n'
        '"momentum_schedule.start" = { type = "float", low = 0.5, high = 0.9, '
        'when = { "momentum_schedule.kind" = ["cosine"] } }')), "never takes 'cosine'"),
    "a tie whose source is a choice": (study_toml(muon_space=(
        'lr = { type = "float", low = 0.003, high = 0.6, log = true }\n'
        '"momentum_schedule.kind" = { type = "choice", choices = ["fixed", "linear"] }')).replace(
        '[arms.muon.space]', 'tie = { adamw_lr = { source = "momentum_schedule.kind", factor = 0.1 } }\n'
        '[arms.muon.space]'), "is not a number"),
}


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_a_bad_name_or_range_is_one_line_before_anything_is_written(tmp_path, capsys, table, case):
    text, needle = BAD_NAMES[case]
    study, out = tmp_path / "bad.toml", tmp_path / "out"
    study.write_text(text)
    _refused(_run(study, out, table), capsys, needle)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_the_shipped_studies_pass_the_name_rules():
    from research_agents.cli import experiments_dir

    for path in sorted(experiments_dir().glob("*.toml")):
        load_study(path)


# ------------------------------------------------------------------ user text is never rich markup

MARKUP = "[/] [bold]x[/bold] [red"


def test_markup_in_the_question_and_the_out_path_is_shown_as_written(tmp_path, capsys, monkeypatch, table):
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    monkeypatch.setenv("RESEARCH_AGENTS_EXPERIMENTS", str(experiments))
    study = experiments / "rel.toml"
    study.write_text(study_toml().replace("Is tuned Muon better than tuned AdamW?", MARKUP))
    (experiments / "broken.toml").write_text(study_toml().replace('preset = "tiny"', 'preset = "[/]"'))
    out = tmp_path / f"out {MARKUP}"
    assert main(_run(study, out, table)) == 0
    assert main(["status", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    assert main(["list"]) == 0
    shown = capsys.readouterr().out
    assert MARKUP in shown and f"report: {out / 'report.md'}" in shown


def test_ascii_stdout_does_not_crash(tmp_path, table):
    from tests.reliability.helpers import cli, cli_env

    study, out = tmp_path / "rel.toml", tmp_path / "out"
    question = "Is Muon \u2265 AdamW \u2014 r\u00e9ally?"  # not ASCII
    study.write_text(study_toml().replace("Is tuned Muon better than tuned AdamW?", question))
    env = cli_env(LANG="C", LC_ALL="C", PYTHONIOENCODING="ascii")
    done = cli(*_run(study, out, table), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    for command in (["status", str(out)], ["report", str(out)], ["list"]):
        done = cli(*command, env=env)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_a_replay_table_of_nan_losses_gives_no_completed_trial(tmp_path, capsys):
    import csv

    from tests.reliability.helpers import write_table

    good = write_table(tmp_path / "good.csv")
    rows = list(csv.DictReader(good.open()))
    nan = tmp_path / "nan.csv"
    with nan.open("w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows({**r, "val_loss": "nan", "loss_100": "nan"} for r in rows)
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    assert main(_run(study, out, nan)) == 1
    assert "no trial completed" in one_error_line(capsys.readouterr().err)
    records = OptunaStore.for_study(out, load_study(study), readonly=True).records()
    assert records and all(r.status == "diverged" and r.val_loss is None for r in records)


# ------------------------------------------------------------------ environment values


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5"])
def test_a_bad_omp_num_threads_is_refused(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    _refused(["run", "--study", str(study), "--budget", "8", "--executor", "local", "--out", str(out)], capsys,
             "OMP_NUM_THREADS")
    assert not out.exists()


def test_cuda_visible_devices_without_a_gpu_counts_no_gpu(monkeypatch):
    from research_agents.execution import visible_gpus

    if Path("/proc/driver/nvidia/gpus").is_dir():
        pytest.skip("this machine has an NVIDIA driver")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert visible_gpus() == []


@pytest.mark.parametrize("value", ["abc", "0", "-1"])
def test_the_local_executor_refuses_a_bad_omp_num_threads(monkeypatch, value):
    from research_agents.execution import LocalExecutor

    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(ValueError, match="OMP_NUM_THREADS"):
        LocalExecutor(warm=False)
