"""trainer.metrics: the metrics.json record, its atomic write and its tolerant read."""

from __future__ import annotations

import json
import math

from trainer.metrics import METRICS_FILE, FinalMetrics, TrialMetrics, read_metrics, write_metrics


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
    assert raw["history"] == m.history and raw["param_groups"] == {"muon": 4}


def test_nan_and_inf_stay_json_nan_and_infinity(tmp_path):
    m = record(status="diverged", reason="train loss nan",
               final=FinalMetrics(val_loss=float("inf"), val_perplexity=float("inf"), train_loss=float("nan")),
               history=[{"step": 1, "train_loss": float("nan")}])
    text = write_metrics(tmp_path, m).read_text()
    assert '"train_loss": NaN' in text and '"val_loss": Infinity' in text
    back = read_metrics(tmp_path)
    assert back.final.val_loss == math.inf and math.isnan(back.final.train_loss)
    assert math.isnan(back.history[0]["train_loss"])


def test_read_ignores_unknown_keys_and_loads_old_failure_files(tmp_path):
    (tmp_path / METRICS_FILE).write_text(json.dumps(
        {"spec": {}, "status": "failed", "reason": "ValueError: boom", "traceback": "Traceback ...",
         "final": {}, "history": [], "written_by": "a future trainer"}))
    m = read_metrics(tmp_path)
    assert m.status == "failed" and m.reason == "ValueError: boom" and m.final == FinalMetrics()
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
