"""trainer.metrics: the metrics.json record, its atomic write, its tolerant (typed, cached) read."""

from __future__ import annotations

import json
import math
import os

from trainer.metrics import METRICS_FILE, FinalMetrics, HistoryPoint, TrialMetrics, read_metrics, write_metrics
from trainer.spec import TrialSpec


def record(**over) -> TrialMetrics:
    base = dict(spec={"optimizer": "muon", "adamw_betas": [0.9, 0.95]}, status="completed",
                final=FinalMetrics(val_loss=2.5, val_accuracy=0.25, val_perplexity=math.exp(2.5),
                                   train_loss=2.4),
                history=[{"step": 1, "train_loss": 3.0, "grad_norm": 0.5}],
                optimizer_steps=1, tokens_seen=64, param_groups={"muon": 4})
    return TrialMetrics(**{**base, **over})


def test_write_then_read_round_trips(tmp_path):
    m = record()
    path = write_metrics(tmp_path / "run", m)
    assert path == tmp_path / "run" / METRICS_FILE and path.is_file()
    assert [p.name for p in (tmp_path / "run").iterdir()] == [METRICS_FILE]  # temp file renamed away
    assert read_metrics(tmp_path / "run") == m
    raw = json.loads(path.read_text())
    assert raw["final"] == {"val_loss": 2.5, "val_accuracy": 0.25, "val_perplexity": math.exp(2.5),
                            "train_loss": 2.4}
    assert raw["history"] == [{"step": 1, "train_loss": 3.0, "grad_norm": 0.5}]  # as logged: no unset keys
    assert raw["param_groups"] == {"muon": 4}
    assert raw["spec"] == TrialSpec(adamw_betas=(0.9, 0.95)).model_dump(mode="json")  # the whole spec, as JSON


def test_read_gives_typed_spec_and_history_and_keeps_undeclared_history_keys(tmp_path):
    m = record(history=[{"step": 1, "train_loss": 3.0, "lr_muon_hidden": 0.02},
                        {"step": 2, "train_loss": 2.9, "val_loss": 2.8, "adamw_lr": None}])
    write_metrics(tmp_path, m)
    back = read_metrics(tmp_path)
    assert isinstance(back.spec, TrialSpec) and back.spec.optimizer == "muon" and back.spec.adamw_betas == (0.9, 0.95)
    assert all(isinstance(h, HistoryPoint) for h in back.history)
    assert back.history[0].lr_muon_hidden == 0.02  # a newer trainer's extra log: kept, read as an attribute
    assert back.history[1].val_loss == 2.8 and back.history[0].val_loss is None
    assert "adamw_lr" in back.history[1].model_fields_set  # an explicit null is written back as logged
    assert json.loads((tmp_path / METRICS_FILE).read_text())["history"] == [
        {"step": 1, "train_loss": 3.0, "lr_muon_hidden": 0.02},
        {"step": 2, "train_loss": 2.9, "val_loss": 2.8, "adamw_lr": None}]
    assert back == m


def test_a_spec_of_another_trainer_version_leaves_spec_none_and_the_rest_readable(tmp_path):
    (tmp_path / METRICS_FILE).write_text(json.dumps(
        {"spec": {"optimizer": "muon", "knob_from_the_future": 1}, "status": "completed",
         "final": {"val_loss": 3.0}, "history": [{"step": 1, "train_loss": 3.1}]}))
    m = read_metrics(tmp_path)
    assert m.spec is None and m.final.val_loss == 3.0 and m.history[0].train_loss == 3.1


def test_read_parses_a_file_once_and_again_only_when_it_changes(tmp_path, monkeypatch):
    write_metrics(tmp_path, record())
    parses = []
    real = TrialMetrics.model_validate.__func__

    def counting(cls, *a, **k):
        parses.append(1)
        return real(cls, *a, **k)

    monkeypatch.setattr(TrialMetrics, "model_validate", classmethod(counting))
    first = read_metrics(tmp_path)
    assert read_metrics(tmp_path) is first and read_metrics(tmp_path / "." ) is first and len(parses) == 1
    write_metrics(tmp_path, record(status="diverged"))  # a re-run's new file
    st = (tmp_path / METRICS_FILE).stat()
    os.utime(tmp_path / METRICS_FILE, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    again = read_metrics(tmp_path)
    assert again.status == "diverged" and len(parses) == 2
    (tmp_path / METRICS_FILE).unlink()
    assert read_metrics(tmp_path) is None  # gone: never the cached copy


def test_nan_and_inf_stay_json_nan_and_infinity(tmp_path):
    m = record(status="diverged", reason="train loss nan",
               final=FinalMetrics(val_loss=float("inf"), val_perplexity=float("inf"), train_loss=float("nan")),
               history=[{"step": 1, "train_loss": float("nan")}])
    text = write_metrics(tmp_path, m).read_text()
    assert '"train_loss": NaN' in text and '"val_loss": Infinity' in text
    back = read_metrics(tmp_path)
    assert back.final.val_loss == math.inf and math.isnan(back.final.train_loss)
    assert math.isnan(back.history[0].train_loss)


def test_read_ignores_unknown_keys_and_loads_old_failure_files(tmp_path):
    (tmp_path / METRICS_FILE).write_text(json.dumps(
        {"spec": {}, "status": "failed", "reason": "ValueError: boom", "traceback": "Traceback ...",
         "final": {}, "history": [], "written_by": "a future trainer"}))
    m = read_metrics(tmp_path)
    assert m.status == "failed" and m.reason == "ValueError: boom" and m.final == FinalMetrics()
    assert m.spec is None  # an empty spec is no spec (not TrialSpec's defaults)
    assert m.optimizer_steps is None and m.diagnostics == [] and not hasattr(m, "written_by")


def test_read_returns_none_for_missing_unreadable_bad_json_or_invalid(tmp_path):
    assert read_metrics(tmp_path / "nowhere") is None
    (tmp_path / "dir" / METRICS_FILE).mkdir(parents=True)  # unreadable: a directory
    assert read_metrics(tmp_path / "dir") is None
    cases = {"half": '{"spec": {}, "status": "compl', "list": "[1, 2]", "binary": b"\xff\xfe",
             "bad-status": json.dumps({"spec": {}, "status": "finished", "final": {}, "history": []}),
             "no-final": json.dumps({"spec": {}, "status": "completed", "history": []})}
    for name, content in cases.items():
        (tmp_path / name).mkdir()
        target = tmp_path / name / METRICS_FILE
        target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
        assert read_metrics(tmp_path / name) is None, name
