"""Weights & Biases through its own client (`wandb`): one W&B run per trial, named after the trial,
grouped by study (`group`) and arm (`job_type`), its curve logged by step, its final metrics in the
run summary; one "summary" run with the ranking and tuning evidence tables, the verdict and the key
plots. Offline (files under OUT/tracking/wandb, `wandb sync` is the user's call) unless
WANDB_API_KEY is set; WANDB_MODE and WANDB_PROJECT apply as usual. The key is read by the client
from the environment and is never passed, logged or written by this module.

With `upload_checkpoints` (`run --upload-checkpoints`, the seeds' `--upload_checkpoints`), each
trial's kept model files (its model.safetensors and last checkpoint.pt, kept by --save-model) go up
as a W&B artifact of type "model" named after the trial, its parameters and final metrics as the
artifact's metadata; offline, the client stages them for `wandb sync`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from research_agents.tracking.base import TRACKING_DIR, Summary, Tracker, Trial

DEFAULT_PROJECT = "research-agents"


def mode(env: dict[str, str] | os._Environ[str] | None = None) -> str:
    """offline without a key; WANDB_MODE when set."""
    env = os.environ if env is None else env
    return env.get("WANDB_MODE") or ("online" if env.get("WANDB_API_KEY") else "offline")


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, out: Path, study: str, upload_checkpoints: bool = False):
        import wandb

        self.upload_checkpoints = upload_checkpoints
        self.wandb = wandb
        self.dir = Path(out) / TRACKING_DIR / "wandb"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.study = study
        self.mode: Any = mode()  # (the client checks the value: a bad WANDB_MODE raises, and is recorded)
        self.project = os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT

    def _init(self, name: str, job_type: str, config: dict[str, Any], tags: list[str]):
        return self.wandb.init(project=self.project, name=name, group=self.study, job_type=job_type, config=config,
                               tags=tags, dir=str(self.dir), mode=self.mode, reinit="create_new",
                               settings=self.wandb.Settings(silent=True, console="off"))

    def trial_end(self, trial: Trial) -> None:
        run = self._init(trial.name, trial.arm, {**trial.params, **trial.info, "study": trial.study, "arm": trial.arm},
                         [trial.arm, str(trial.info["phase"]), str(trial.info["origin"])])
        try:
            for point in trial.curve:
                run.log({k: v for k, v in point.items() if k != "step"}, step=int(point["step"]))
            run.summary.update({**{f"final/{k}": v for k, v in trial.final.items()}, "status": trial.info["status"]})
            if self.upload_checkpoints and trial.files:
                run.log_artifact(self._model_artifact(trial), aliases=["latest", trial.arm])
        finally:
            run.finish(exit_code=0 if trial.info["status"] == "completed" else 1)

    def _model_artifact(self, trial: Trial):
        name = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{self.study}-{trial.name}")
        artifact = self.wandb.Artifact(name, type="model", metadata={
            "study": trial.study, "arm": trial.arm, "params": trial.params, "final": trial.final,
            **{k: trial.info[k] for k in ("seed", "phase", "status")}})
        for file_name, path in trial.files.items():
            artifact.add_file(str(path), name=file_name)
        return artifact

    def summary(self, summary: Summary) -> None:
        run = self._init(f"{self.study}-summary", "summary", {"study": self.study, "question": summary.question},
                         ["summary"])
        try:
            data: dict[str, Any] = {}
            for which in ("ranking", "tuning"):
                cols, rows = summary.rows(which)
                data[which] = self.wandb.Table(columns=list(cols), data=rows, allow_mixed_types=True)
            data.update({f"plots/{title}": self.wandb.Image(str(path)) for title, path in summary.plots.items()})
            run.log(data)
            run.summary.update({"verdict": summary.verdict, "confidence": summary.confidence,
                                "best_arm": summary.recommendation.get("best_arm"),
                                "winner_arm": summary.recommendation.get("winner_arm")})
        finally:
            run.finish()


__all__ = ["DEFAULT_PROJECT", "WandbTracker", "mode"]
