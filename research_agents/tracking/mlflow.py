"""MLflow through its own client (`mlflow-skinny`'s `MlflowClient`): the study is an experiment,
each arm a parent run, each trial a nested run named after the trial with its parameters, its curve
as metrics by step and its final metrics as `final_<key>`; a "summary" run holds the ranking and
tuning evidence (tables as JSON and markdown), the verdict (a tag and a text file) and the key plots
as artifacts. MLFLOW_TRACKING_URI when set, else a SQLite store in OUT/tracking/mlflow.db
(`mlflow ui --backend-store-uri sqlite:///OUT/tracking/mlflow.db`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from research_agents.tracking.base import TRACKING_DIR, Summary, Tracker, Trial

MAX_TAG = 5000  # MLflow's tag values are bounded; the whole verdict is also an artifact


def tracking_uri(out: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(out) / TRACKING_DIR / 'mlflow.db').resolve()}"


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, out: Path, study: str):
        from mlflow.tracking import MlflowClient

        (Path(out) / TRACKING_DIR).mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=tracking_uri(out))
        self.study = study
        found = self.client.get_experiment_by_name(study)
        self.experiment = found.experiment_id if found is not None else self.client.create_experiment(
            study, artifact_location=(Path(out) / TRACKING_DIR / "mlflow-artifacts").resolve().as_uri())
        self.parents: dict[str, str] = {}

    def _parent(self, arm: str) -> str:
        """The arm's parent run (found again on resume)."""
        if arm not in self.parents:
            found = self.client.search_runs([self.experiment], f"tags.ra_kind = 'arm' and tags.arm = '{arm}'",
                                            max_results=1)
            self.parents[arm] = found[0].info.run_id if found else self.client.create_run(
                self.experiment, run_name=arm, tags={"ra_kind": "arm", "arm": arm, "study": self.study}).info.run_id
        return self.parents[arm]

    def trial_end(self, trial: Trial) -> None:
        from mlflow.entities import Metric, Param, RunTag

        tags = {"ra_kind": "trial", "study": trial.study, "arm": trial.arm,
                "mlflow.parentRunId": self._parent(trial.arm), **{k: str(v) for k, v in trial.info.items()}}
        run_id = self.client.create_run(self.experiment, run_name=trial.name, tags=tags).info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(p["step"])) for p in trial.curve for k, v in p.items() if k != "step"]
        last = int(trial.curve[-1]["step"]) if trial.curve else 0
        metrics += [Metric(f"final_{k}", v, now, last) for k, v in trial.final.items()]
        params = [Param(k, str(v)[:6000]) for k, v in trial.params.items()]
        for i in range(0, max(len(metrics), 1), 1000):  # MLflow's batch limit
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000], params=params if i == 0 else [],
                                  tags=[RunTag("seed", str(trial.info["seed"]))] if i == 0 else [])
        self.client.set_terminated(run_id, "FINISHED" if trial.info["status"] == "completed" else "FAILED")

    def summary(self, summary: Summary) -> None:
        run_id = self.client.create_run(self.experiment, run_name="summary",
                                        tags={"ra_kind": "summary", "study": self.study,
                                              "confidence": summary.confidence,
                                              "verdict": summary.verdict[:MAX_TAG]}).info.run_id
        try:
            for which in ("ranking", "tuning"):
                cols, rows = summary.rows(which)
                self.client.log_dict(run_id, {"columns": list(cols), "rows": rows}, f"{which}.json")
                self.client.log_text(run_id, summary.markdown(which), f"{which}.md")
            self.client.log_text(run_id, f"{summary.confidence} confidence: {summary.verdict}\n", "verdict.md")
            for path in summary.plots.values():
                self.client.log_artifact(run_id, str(path), "plots")
        finally:
            self.client.set_terminated(run_id)


__all__ = ["MlflowTracker", "tracking_uri"]
