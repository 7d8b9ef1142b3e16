"""One trial: a child killed by a signal says so (case 9); `python -m trainer run` answers bad input
with one line and exit 2, never two tracebacks (case 11)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from research_agents.cli import main as research_main
from research_agents.execution import LocalExecutor
from tests.reliability.helpers import one_error_line, read_only, study_toml
from trainer.__main__ import main as trainer_main
from trainer.spec import TrialSpec

SPEC = dict(steps=2, eval_every=2, eval_batches=1, batch_size=2, seq_len=8, device="cpu",
            model={"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32},
            data={"source": "sotu", "max_docs": 20, "bpe_vocab_size": 260})


def _spec(tmp_path: Path, **data) -> Path:
    spec = json.loads(json.dumps(SPEC))
    spec["data"].update(data)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(TrialSpec.model_validate(spec).model_dump(mode="json")))
    return path


@pytest.mark.parametrize("signal_no, name", [(9, "SIGKILL"), (15, "SIGTERM")])
def test_a_trial_killed_by_a_signal_says_so(tmp_path, signal_no, name):
    # a stand-in for the trainer: one progress line, then the OOM killer (or a user) ends it
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho \'{{"event": "step", "step": 1, "train_loss": 4.2}}\'\nkill -{signal_no} $$\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    spec = TrialSpec.model_validate(SPEC)
    outcome = LocalExecutor(python=str(fake)).run(spec, tmp_path / "trial", timeout_s=60)
    assert outcome.status == "failed"
    assert outcome.reason == f"killed by signal {signal_no} ({name})", outcome.reason


def test_trainer_out_that_cannot_be_written_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code = trainer_main(["run", "--spec", str(_spec(tmp_path)), "--out", str(tmp_path / "file" / "out")])
    assert code == 2
    assert "cannot write to --out" in one_error_line(capsys.readouterr().err)


def test_trainer_out_on_a_read_only_file_system_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    done = read_only([ro], ["-m", "trainer", "run", "--spec", str(_spec(tmp_path)), "--out", str(ro / "out")])
    assert done.returncode == 2 and "cannot write to --out" in one_error_line(done.stderr)


@pytest.mark.parametrize("case", ["missing source", "missing gguf tokenizer", "unloadable tokenizer"])
def test_trainer_data_problems_are_bad_input(tmp_path, capsys, monkeypatch, case):
    monkeypatch.setenv("TRAINER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"document {i} " + "word " * 50 for i in range(20)))
    (tmp_path / "empty-tokenizer").mkdir()
    data = {"missing source": dict(source=str(tmp_path / "nowhere.txt")),
            "missing gguf tokenizer": dict(source=str(corpus), tokenizer=f"gguf:{tmp_path / 'no.gguf'}"),
            "unloadable tokenizer": dict(source=str(corpus), tokenizer=str(tmp_path / "empty-tokenizer"))}[case]
    out = tmp_path / "out"
    assert trainer_main(["run", "--spec", str(_spec(tmp_path, **data)), "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: data:"), line
    metrics = json.loads((out / "metrics.json").read_text())  # the reason is recorded too
    assert metrics["status"] == "failed" and metrics["reason"]


def test_a_run_whose_data_source_is_missing_is_bad_input(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRAINER_CACHE_DIR", str(tmp_path / "cache"))
    study = tmp_path / "rel.toml"
    study.write_text(study_toml().replace('preset = "tiny"', f'preset = "tiny"\nbase = {{ "data.source" = '
                                                             f'"{tmp_path / "nowhere.txt"}" }}'))
    out = tmp_path / "out"
    assert research_main(["run", "--study", str(study), "--budget", "8", "--out", str(out)]) == 2
    assert "nowhere.txt" in one_error_line(capsys.readouterr().err)
    assert not out.exists()
