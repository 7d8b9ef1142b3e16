"""Periodic checkpoints and mid-trial resume (trainer/checkpoint.py): a trial interrupted after a
checkpoint and started again in its directory reaches exactly the numbers of an uninterrupted run
on the CPU; a checkpoint of another spec, or a damaged one, is ignored with a recorded warning;
checkpoints are off by default and change no number when on.

The tiny preset's model (a 2-layer MoE with router noise, so the torch RNG matters) with Muon and
an adaptive momentum schedule (so its gradient-norm window matters), on a small private corpus.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.trainer_corpus import VOLATILE
from trainer.checkpoint import CHECKPOINT_FILE, spec_hash
from trainer.metrics import TrialMetrics, read_metrics
from trainer.spec import TrialSpec
from trainer.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]


class Stop(Exception):
    """Stands for a crash in the middle of a trial."""


@pytest.fixture
def spec(corpus, cache_dir):
    def make(**over) -> TrialSpec:
        raw = dict(model="tiny", seq_len=16, batch_size=4, steps=20, eval_every=5, eval_batches=2, device="cpu",
                   momentum_schedule=dict(kind="adaptive", window=3), data=dict(source=str(corpus), bpe_vocab_size=300))
        return TrialSpec.model_validate({**raw, **over})
    return make


def numbers(m: TrialMetrics, drop: tuple[str, ...] = ()) -> dict:
    """metrics.json's content without clocks (and without the `drop` keys)."""
    d = json.loads(json.dumps(m.model_dump(mode="python"), allow_nan=True))
    out = {k: v for k, v in d.items() if k not in VOLATILE + drop}
    out["history"] = [{k: v for k, v in h.items() if k not in VOLATILE} for h in d["history"]]
    return out


def read(run_dir: Path) -> TrialMetrics:
    metrics = read_metrics(run_dir)
    assert metrics is not None
    return metrics


def crash_at(step: int):
    def on_log(entry: dict) -> None:
        if entry["step"] == step:
            raise Stop()
    return on_log


def test_off_by_default_and_saving_changes_no_number(spec, tmp_path):
    assert TrialSpec().save_checkpoint_every is None
    plain = train(spec(), tmp_path / "plain")
    assert plain.checkpoint is None and not (tmp_path / "plain" / CHECKPOINT_FILE).exists()
    on = train(spec(save_checkpoint_every=8, save_checkpoint=True), tmp_path / "on")
    assert (tmp_path / "on" / CHECKPOINT_FILE).is_file()  # kept by save_checkpoint (--save-model)
    assert on.checkpoint is not None and on.checkpoint.resumed_from_step is None and not on.checkpoint.warnings
    assert numbers(on, ("spec", "checkpoint")) == numbers(plain, ("spec", "checkpoint"))
    assert plain.history[-1].step == 20


def test_resume_after_a_crash_is_bit_identical(spec, tmp_path):
    s = spec(save_checkpoint_every=8)
    whole = train(s, tmp_path / "whole")
    assert not (tmp_path / "whole" / CHECKPOINT_FILE).exists()  # a finished trial's checkpoint is pruned
    with pytest.raises(Stop):
        train(s, tmp_path / "cut", on_log=crash_at(13))  # checkpoint at step 8, crash at 13
    assert (tmp_path / "cut" / CHECKPOINT_FILE).is_file()
    logged: list[int] = []
    resumed = train(s, tmp_path / "cut", on_log=lambda e: logged.append(e["step"]))
    assert resumed.checkpoint is not None and resumed.checkpoint.resumed_from_step == 8
    assert logged[0] == 9  # it trained steps 9..20 only
    assert numbers(resumed, ("checkpoint",)) == numbers(whole, ("checkpoint",))
    assert numbers(read(tmp_path / "cut"), ("checkpoint",)) == numbers(read(tmp_path / "whole"), ("checkpoint",))
    assert resumed.final.val_loss == whole.final.val_loss
    assert not (tmp_path / "cut" / CHECKPOINT_FILE).exists()


def test_twice_interrupted_with_another_interval_still_identical(spec, tmp_path):
    """The interval changes no number, so a re-run with another interval resumes too."""
    whole = train(spec(), None)
    with pytest.raises(Stop):
        train(spec(save_checkpoint_every=4), tmp_path, on_log=crash_at(7))
    with pytest.raises(Stop):
        train(spec(save_checkpoint_every=6), tmp_path, on_log=crash_at(15))  # from 4; saves at 6, 12
    resumed = train(spec(save_checkpoint_every=6), tmp_path)
    assert resumed.checkpoint.resumed_from_step == 12
    assert numbers(resumed, ("spec", "checkpoint")) == numbers(whole, ("spec", "checkpoint"))


def test_checkpoint_of_another_spec_is_ignored_and_said(spec, tmp_path, capsys):
    with pytest.raises(Stop):
        train(spec(save_checkpoint_every=8, lr=0.01), tmp_path, on_log=crash_at(10))
    assert spec_hash(spec(lr=0.01)) != spec_hash(spec())
    assert spec_hash(spec(save_checkpoint_every=3, save_checkpoint=True)) == spec_hash(spec())
    fresh = train(spec(save_checkpoint_every=8), None)
    got = train(spec(save_checkpoint_every=8), tmp_path)
    assert got.checkpoint.resumed_from_step is None
    assert got.checkpoint.warnings == [f"ignored {CHECKPOINT_FILE}: written by a different trial spec; "
                                       "training from step 0"]
    assert "warning: checkpoint: ignored checkpoint.pt: written by a different trial spec" in capsys.readouterr().err
    assert numbers(got, ("checkpoint",)) == numbers(fresh, ("checkpoint",))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_checkpoint_is_ignored_with_a_warning(spec, tmp_path, damage):
    s = spec(save_checkpoint_every=8)
    with pytest.raises(Stop):
        train(s, tmp_path, on_log=crash_at(10))
    path = tmp_path / CHECKPOINT_FILE
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    got = train(s, tmp_path)
    assert got.checkpoint.resumed_from_step is None
    assert len(got.checkpoint.warnings) == 1 and got.checkpoint.warnings[0].startswith(
        f"ignored {CHECKPOINT_FILE}: unreadable (")
    assert numbers(got, ("checkpoint",)) == numbers(train(s, None), ("checkpoint",))


def test_checkpoint_of_another_model_shape_is_ignored(spec, tmp_path):
    """Same hash (forced), other tensors: checked before anything is changed, then ignored."""
    s = spec(save_checkpoint_every=8)
    with pytest.raises(Stop):
        train(spec(save_checkpoint_every=8, model=dict(kind="moe", d_model=32, n_heads=2, n_layers=1, d_ff=64)),
              tmp_path, on_log=crash_at(10))
    payload = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    payload["spec_hash"] = spec_hash(s)
    torch.save(payload, tmp_path / CHECKPOINT_FILE)
    got = train(s, tmp_path)
    assert got.checkpoint.warnings == [f"ignored {CHECKPOINT_FILE}: does not fit this trial (model parameters "
                                       "differ); training from step 0"]
    assert numbers(got, ("checkpoint",)) == numbers(train(s, None), ("checkpoint",))


def test_survives_sigkill_between_two_checkpoints(spec, tmp_path, cache_dir):
    """`python -m trainer run` killed (SIGKILL) after its first checkpoint, run again: the same result."""
    s = spec(steps=40, eval_every=10, save_checkpoint_every=8)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(s.model_dump_json())
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TRAINER_CACHE_DIR": str(cache_dir)}

    def run(out: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "trainer", "run", "--spec", str(spec_path), "--out", str(out),
                                 "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    killed = tmp_path / "killed"
    proc = run(killed)
    deadline = time.monotonic() + 300
    while not (killed / CHECKPOINT_FILE).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the trial ended before it could be killed"
    assert not (killed / "metrics.json").exists() and (killed / CHECKPOINT_FILE).is_file()

    again = run(killed)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert b"checkpoint: resumed from step" in err
    whole = run(tmp_path / "whole")
    whole.communicate(timeout=300)
    got, want = read(killed), read(tmp_path / "whole")
    assert got.checkpoint.resumed_from_step in (8, 16, 24, 32)
    assert numbers(got, ("checkpoint",)) == numbers(want, ("checkpoint",))
    assert not (killed / CHECKPOINT_FILE).exists()


# ----------------------------------------------------------------- the research loop's re-run of an interrupted trial


def _interrupted_loop(tmp_path, fast_study, executor, overrides: dict):
    from research_agents.config import load_study, make_plan
    from research_agents.loop import ResearchLoop
    from research_agents.planners import SamplerPlanner
    from research_agents.store import OptunaStore

    study = load_study(fast_study)
    out = tmp_path / "run"
    store = OptunaStore.for_study(out, study)
    loop = ResearchLoop(study, store, executor, SamplerPlanner("tpe", seed=0, startup_trials=2), out,
                        make_plan(study, 8), overrides=overrides)
    old = store.start("muon", {"lr": 0.02}, 0, "tpe", "search", 1, "why", "trials/0001-muon-x-s0")
    return loop, out / old.run_dir, loop.spec(_run_of(old))


def _run_of(record):
    from research_agents.actions import Run

    return Run(record.arm, record.params, record.seed, record.origin, record.phase, record.round, record.rationale)


class Seen:
    """An executor that records whether the trial dir held a checkpoint when the trial started."""

    def __init__(self, inner=None):
        self.inner, self.had = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, spec, run_dir, timeout_s, on_progress=None):
        self.had.append((run_dir, (run_dir / CHECKPOINT_FILE).exists()))
        return self.inner.run(spec, run_dir, timeout_s, on_progress)


def test_loop_rerun_resumes_from_the_interrupted_trials_checkpoint(tmp_path, fast_study, token_cache):
    """A trial the loop left interrupted (its process killed after a checkpoint) is re-run in a new
    directory that starts from that checkpoint, through the real trainer, with the numbers of an
    uninterrupted trial; the finished trial's checkpoint is removed."""
    from research_agents.execution.local import LocalExecutor

    executor = Seen(LocalExecutor(warm=False))
    loop, old_dir, s = _interrupted_loop(tmp_path, fast_study, executor, {"save_checkpoint_every": 4})
    assert s.save_checkpoint_every == 4 and s.steps == 12
    with pytest.raises(Stop):
        train(s, old_dir, on_log=crash_at(6))
    loop.resume_interrupted()
    (new_dir, had), = executor.had
    assert had and new_dir != old_dir and not (old_dir / CHECKPOINT_FILE).exists()
    rerun = loop.records()[-1]
    assert rerun.status == "completed" and loop.out / rerun.run_dir == new_dir
    got = read(new_dir)
    assert got.checkpoint.resumed_from_step == 4
    assert numbers(got, ("checkpoint",)) == numbers(train(s, None), ("checkpoint",))
    assert not (new_dir / CHECKPOINT_FILE).exists()


@pytest.mark.parametrize("in_place", [True, False])
def test_a_ray_rerun_resumes_from_the_interrupted_trials_checkpoint(tmp_path, fast_study, token_cache, local_ray,
                                                                    in_place, monkeypatch):
    """The same through the Ray executor: a local Ray's task sees the run directory and trains in it
    (its checkpoints land where the loop finds them), from the checkpoint the loop moved there; a
    task made to train in scratch (as on a node without the directory) gets that checkpoint from
    the driver, and the driver writes the trial's files and drops the moved checkpoint at the end."""
    from research_agents.execution import ray as ray_executor
    from research_agents.execution.ray import SHARED_MARK, RayExecutor

    assert ray_executor.CHECKPOINT == CHECKPOINT_FILE
    executor = Seen(RayExecutor(in_place=in_place))
    loop, old_dir, s = _interrupted_loop(tmp_path, fast_study, executor, {"save_checkpoint_every": 4})
    with pytest.raises(Stop):
        train(s, old_dir, on_log=crash_at(6))
    sent, size = [], (old_dir / CHECKPOINT_FILE).stat().st_size
    put = executor.inner.ray.put
    monkeypatch.setattr(executor.inner.ray, "put", lambda value, **kw: sent.append(len(value)) or put(value, **kw))
    loop.resume_interrupted()
    # on a cluster of this node alone the task trains in place: the driver sends no checkpoint
    assert sent == ([] if in_place else [size])
    (new_dir, had), = executor.had
    assert had and loop.records()[-1].status == "completed"
    got = read(new_dir)
    assert got.checkpoint.resumed_from_step == 4
    assert numbers(got, ("checkpoint",)) == numbers(train(s, None), ("checkpoint",))
    assert not (new_dir / CHECKPOINT_FILE).exists() and not list(new_dir.glob(f"{SHARED_MARK}*"))
    assert (new_dir / "trainer.log").is_file() and (new_dir / "spec.json").is_file()


def test_a_ray_task_that_cannot_see_the_run_directory_trains_in_scratch_from_the_sent_checkpoint(
        tmp_path, fast_study, token_cache):
    """A node without the driver's directory (the token there is not its own) trains in a scratch
    directory from the checkpoint the driver sent, and sends the trial's files back; a node that
    sees it trains in place and sends nothing."""
    from research_agents.execution.ray import SHARED_MARK, _checkpoint, _train_remote

    _, _, s = _interrupted_loop(tmp_path, fast_study, Seen(), {"save_checkpoint_every": 4})
    cut = tmp_path / "cut"
    with pytest.raises(Stop):
        train(s, cut, on_log=crash_at(6))
    # what the driver sends with the task: the checkpoint in the re-run's directory, when it saves any
    assert _checkpoint(s, cut) == cut / CHECKPOINT_FILE and (cut / CHECKPOINT_FILE).is_file()
    assert _checkpoint(s.model_copy(update={"save_checkpoint_every": None}), cut) is None
    assert _checkpoint(s, tmp_path) is None
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / f"{SHARED_MARK}.0ther").touch()  # another run's token
    status, _, files = _train_remote(s.model_dump(mode="json"), 300, str(driver), "m1ne",
                                     [(cut / CHECKPOINT_FILE).read_bytes()])
    assert status == "completed" and "metrics.json" in files and not (driver / "metrics.json").exists()
    got = TrialMetrics.model_validate_json(files["metrics.json"])
    assert got.checkpoint is not None and got.checkpoint.resumed_from_step == 4
    whole = train(s, None)
    assert numbers(got, ("checkpoint",)) == numbers(whole, ("checkpoint",))
    (driver / f"{SHARED_MARK}.m1ne").touch()
    status, _, files = _train_remote(s.model_dump(mode="json"), 300, str(driver), "m1ne", None)
    assert status == "completed" and set(files) == {"metrics.json"} and read(driver).final == whole.final


@pytest.mark.parametrize("every", [None, 4])
def test_loop_moves_the_checkpoint_only_when_the_run_asks_for_checkpoints(tmp_path, fast_study, token_cache, every):
    from tests.test_loop import FakeExecutor

    executor = Seen(FakeExecutor())
    overrides = {"save_checkpoint_every": every} if every else {}
    loop, old_dir, s = _interrupted_loop(tmp_path, fast_study, executor, overrides)
    old_dir.mkdir(parents=True)
    (old_dir / CHECKPOINT_FILE).write_bytes(b"a checkpoint")
    loop.resume_interrupted()
    (new_dir, had), = executor.had
    assert had == (every is not None) and (old_dir / CHECKPOINT_FILE).exists() == (every is None)
    if every:
        assert (new_dir / CHECKPOINT_FILE).read_bytes() == b"a checkpoint"
