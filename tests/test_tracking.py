"""Experiment tracking (`run --track`): W&B offline, TensorBoard and MLflow runs of a small replay
study hold every trial's curve and final metrics under its trial name, grouped by study and arm,
and the study's summary; the W&B key is never written; a backend that raises is recorded and fails
no trial."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from research_agents.records import TrialRecord
from research_agents.tracking import Summary, Tracker, Tracking

ROOT = Path(__file__).resolve().parents[1]
REPLAY = ROOT / "benchmarks" / "data" / "replay_tiny.csv"
STUDY = "muon_vs_adamw_wen"
KEY = "0123456789abcdef0123456789abcdef01234567"  # a W&B-shaped key that must never reach a file


def _run(out: Path, track: list[str], **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    base.update({"PYTHONPATH": str(ROOT), **env})
    return subprocess.run([sys.executable, "-m", "research_agents", "run", "--study", STUDY, "--budget", "8",
                           "--executor", f"replay:{REPLAY}", "--out", str(out), "--track", *track],
                          cwd=ROOT, env=base, capture_output=True, text=True, timeout=900)


def _trials(out: Path) -> dict[str, str]:
    """trial name -> arm, from the run's trial directories."""
    return {p.name: p.name.split("-")[1] for p in sorted((out / "trials").iterdir())}


def _wandb_records(path: Path):
    """The records of a W&B offline run file (LevelDB log blocks of the client's own protobuf Record)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and n == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def _wandb_runs(out: Path) -> dict[str, dict]:
    runs = {}
    for path in (out / "tracking" / "wandb").rglob("run-*.wandb"):
        info: dict = {"history": set(), "summary": set()}
        for r in _wandb_records(path):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                info.update(name=r.run.display_name, group=r.run.run_group, job_type=r.run.job_type)
            elif kind == "history":
                info["history"] |= {i.key or "/".join(i.nested_key) for i in r.history.item}
            elif kind == "summary":
                info["summary"] |= {i.key or "/".join(i.nested_key) for i in r.summary.update}
        runs[info["name"]] = info
    return runs


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> Path:
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    out = tmp_path_factory.mktemp("tracked") / "run"
    done = _run(out, ["wandb", "tensorboard", "mlflow"], WANDB_MODE="offline", WANDB_API_KEY=KEY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tracking:" not in done.stdout, done.stdout  # no backend failed
    return out


def test_wandb_offline_run_per_trial_grouped_by_study_and_arm(tracked):
    runs = _wandb_runs(tracked)
    trials = _trials(tracked)
    assert set(trials) <= set(runs)
    for name, arm in trials.items():
        run = runs[name]
        assert (run["group"], run["job_type"]) == (STUDY, arm)
        assert {"val_loss", "train_loss", "lr"} <= run["history"], run["history"]
        assert "final/val_loss" in run["summary"]
    summary = runs[f"{STUDY}-summary"]
    assert {"ranking", "tuning", "plots"} <= {k.split("/")[0] for k in summary["history"]}
    assert {"verdict", "confidence"} <= summary["summary"]
    table = next((tracked / "tracking" / "wandb").rglob("media/table/ranking_*.table.json"))
    ranking = json.loads(table.read_text())
    assert ranking["columns"] == list(Summary.RANKING_COLUMNS)
    assert len(ranking["data"]) == len(json.loads((tracked / "summary.json").read_text())["configs"])


def test_the_wandb_key_is_written_nowhere(tracked):
    for path in tracked.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_tensorboard_event_files_per_trial_and_summary(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = tracked / "tracking" / "tensorboard" / STUDY
    for name, arm in _trials(tracked).items():
        acc = EventAccumulator(str(root / arm / name))
        acc.Reload()
        assert {"curve/val_loss", "curve/train_loss", "curve/lr", "final/val_loss"} <= set(acc.Tags()["scalars"])
        assert len(acc.Scalars("curve/val_loss")) > 1  # a curve, not a point
    acc = EventAccumulator(str(root / "summary"))
    acc.Reload()
    texts = {t.split("/")[0] for t in acc.Tags()["tensors"]}
    assert {"verdict", "ranking", "tuning_evidence"} <= texts
    assert any(t.startswith("plots/") for t in acc.Tags()["images"])


def test_mlflow_runs_per_trial_under_arm_parents_and_a_summary(tracked):
    from mlflow.tracking import MlflowClient

    from research_agents.tracking.mlflow import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(tracked))
    exp = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_name = {r.info.run_name: r for r in runs}
    parents = {r.data.tags["arm"]: r.info.run_id for r in runs if r.data.tags.get("ra_kind") == "arm"}
    for name, arm in _trials(tracked).items():
        run = by_name[name]
        assert run.data.tags["mlflow.parentRunId"] == parents[arm]
        assert "final_val_loss" in run.data.metrics
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) > 1
    summary = by_name["summary"]
    assert summary.data.tags["confidence"] and summary.data.tags["verdict"]
    files = {a.path for a in client.list_artifacts(summary.info.run_id)}
    assert {"ranking.json", "tuning.json", "verdict.md", "plots"} <= files


def test_a_backend_that_raises_is_recorded_and_fails_no_trial(tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    done = _run(out, ["wandb", "tensorboard"], WANDB_MODE="no-such-mode")  # wandb.init raises on each trial
    assert done.returncode == 0, done.stderr[-3000:]
    from research_agents.session import open_run

    session = open_run(out)
    records = session.store.records()
    assert len(records) == 8 and all(r.status == "completed" for r in records)
    errors = session.store.get_meta("tracking_errors")
    assert [e["backend"] for e in errors] == ["wandb"] and errors[0]["hook"] == "trial_end"
    assert "tracking: wandb failed" in done.stdout
    assert len(list((out / "tracking" / "tensorboard" / STUDY).glob("*/*"))) == 8 + 1  # the others go on
    # the report says so, in its set-up
    setup = (out / "report.md").read_text().split("## Set-up", 1)[1].split("\n## ", 1)[0]
    line = next(ln for ln in setup.splitlines() if "tracking failures" in ln)
    assert "wandb in trial_end" in line and "tensorboard" not in line


def test_tracking_failures_read_a_damaged_meta_without_a_traceback():
    from research_agents.cli.final_report import tracking_failures

    assert tracking_failures(None) is None and tracking_failures("junk") is None and tracking_failures([]) is None
    many = [{"backend": "wandb", "hook": f"h{i}", "error": "down"} for i in range(7)] + ["junk", {"backend": "x"}]
    text = tracking_failures(many)
    assert text.startswith("wandb in h0: down;") and "wandb in h4" in text and "wandb in h5" not in text
    assert "; 3 more" in text


class _Boom(Tracker):
    name = "boom"

    def trial_end(self, trial):
        raise RuntimeError("backend down")


class _Count(Tracker):
    name = "count"

    def __init__(self):
        self.ended = []

    def trial_end(self, trial):
        self.ended.append(trial.name)


def test_tracking_drops_a_failing_backend_and_keeps_the_others(tmp_path):
    seen = []
    count = _Count()
    tracking = Tracking("s", tmp_path, [_Boom(), count], lambda b, h, m: seen.append((b, h, m)))
    record = TrialRecord(id=1, order=1, arm="muon", params={"lr": 0.1}, seed=0, origin="policy", phase="search",
                         round=1, status="completed", val_loss=4.2, run_dir="trials/0001-muon-x-s0")
    tracking.trial_end(record)
    tracking.trial_end(record)
    assert seen == [("boom", "trial_end", "RuntimeError: backend down")]
    assert count.ended == ["0001-muon-x-s0", "0001-muon-x-s0"]
    assert json.dumps(tracking.failed)


class _SlowBoom(Tracker):
    name = "progress-boom"

    def progress(self, record, entry):
        raise ValueError("no live logging")


def test_a_progress_failure_is_reported_on_the_drivers_next_call(tmp_path):
    seen = []
    tracking = Tracking("s", tmp_path, [_SlowBoom()], lambda b, h, m: seen.append((b, h)))
    record = TrialRecord(id=1, order=1, arm="muon", params={}, seed=0, origin="policy", phase="search", round=1,
                         status="running")
    tracking.progress(record, {"step": 1})  # (a worker thread: nothing written there)
    tracking.progress(record, {"step": 2})
    assert seen == []
    tracking.trial_start(record)
    assert seen == [("progress-boom", "progress")] and tracking.trackers == []


# ------------------------------------------------------------------ W&B upload of checkpoints, on request


def _artifacts(out: Path, wait_s: float = 0.0) -> list:
    """The artifact records of the offline run files under `out`; with `wait_s`, read again until one
    is there or that many seconds passed (the W&B service process writes the file: a record can land
    after run.finish() returns, as one CI run under load showed; late is not lost, lost stays empty)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for path in (out / "tracking" / "wandb").rglob("run-*.wandb"):
            found += [r.artifact for r in _wandb_records(path) if r.WhichOneof("record_type") == "artifact"]
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def test_wandb_uploads_a_trials_kept_model_files_as_a_model_artifact_on_request(tmp_path, monkeypatch):
    """`--upload-checkpoints`: the trial's model.safetensors and last checkpoint.pt (those that exist
    in its directory) go up as one artifact of type "model" named after the study and trial, with its
    parameters and final metrics as metadata; without the request, nothing is uploaded."""
    pytest.importorskip("wandb")
    from research_agents.tracking.wandb import WandbTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    record = TrialRecord(id=1, order=1, arm="muon", params={"lr": 0.1}, seed=0, origin="policy", phase="search",
                         round=1, status="completed", val_loss=4.2, run_dir="trials/0001-muon")
    for upload in (True, False):
        out = tmp_path / str(upload)
        run_dir = out / "trials" / "0001-muon"
        run_dir.mkdir(parents=True)
        (run_dir / "model.safetensors").write_bytes(b"m" * 64)
        (run_dir / "checkpoint.pt").write_bytes(b"c" * 32)
        (run_dir / "notes.txt").write_text("not a model file")
        tracking = Tracking("st", out, [WandbTracker(out, "st", upload_checkpoints=upload)])
        tracking.trial_end(record)
        tracking.close()
        assert not tracking.failed
        found = _artifacts(out, wait_s=30.0 if upload else 0.0)
        if not upload:
            assert found == []
            continue
        [art] = found
        assert art.type == "model" and art.name == "st-0001-muon"
        assert sorted(c.path for c in art.manifest.contents) == ["checkpoint.pt", "model.safetensors"]
        meta = json.loads(art.metadata)
        assert meta["params"] == {"lr": 0.1} and meta["final"]["val_loss"] == 4.2 and meta["arm"] == "muon"
        assert {"latest", "muon"} <= set(art.aliases)
    # a trial that kept no model (no --save-model, or it failed first) uploads nothing
    bare = tmp_path / "bare"
    (bare / "trials" / "0001-muon").mkdir(parents=True)
    assert Tracking("st", bare, []).trial(record).files == {}


def test_upload_checkpoints_needs_wandb_and_keeps_the_model(tmp_path, capsys, monkeypatch):
    from research_agents.cli import main
    from tests.reliability.helpers import one_error_line

    argv = ["run", "--study", STUDY, "--budget", "8", "--executor", f"replay:{REPLAY}", "--out", str(tmp_path / "r")]
    assert main([*argv, "--upload-checkpoints"]) == 2
    assert "--track wandb" in one_error_line(capsys.readouterr().err)
    assert main([*argv, "--upload-checkpoints", "--track", "tensorboard"]) == 2
    assert "--track wandb" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()  # refused before anything was written
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main([*argv, "--upload-checkpoints", "--track", "wandb"]) == 0
    assert json.loads((tmp_path / "r" / "run.json").read_text())["overrides"]["save_checkpoint"] is True
