"""TensorBoard through `torch.utils.tensorboard.SummaryWriter` (event files written by the
`tensorboard` package's own writer): one log directory per trial,
OUT/tracking/tensorboard/<study>/<arm>/<trial>, its curve as scalars `curve/<key>` by step and its
final metrics as `final/<key>`, the parameters as text; OUT/tracking/tensorboard/<study>/summary
holds the ranking and tuning evidence tables and the verdict as text and the key plots as images.
`tensorboard --logdir OUT/tracking/tensorboard` shows them."""

from __future__ import annotations

import json
from pathlib import Path

from research_agents.tracking.base import TRACKING_DIR, Summary, Tracker, Trial


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, out: Path, study: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter
        self.root = Path(out) / TRACKING_DIR / "tensorboard" / study

    def trial_end(self, trial: Trial) -> None:
        w = self.writer(log_dir=str(self.root / trial.arm / trial.name))
        try:
            for point in trial.curve:
                for key, value in point.items():
                    if key != "step":
                        w.add_scalar(f"curve/{key}", value, int(point["step"]))
            last = int(trial.curve[-1]["step"]) if trial.curve else 0
            for key, value in trial.final.items():
                w.add_scalar(f"final/{key}", value, last)
            w.add_text("params", "    " + json.dumps({**trial.params, **trial.info}, sort_keys=True), last)
        finally:
            w.close()

    def summary(self, summary: Summary) -> None:
        import matplotlib.image

        w = self.writer(log_dir=str(self.root / "summary"))
        try:
            w.add_text("verdict", f"**{summary.confidence} confidence**: {summary.verdict}")
            w.add_text("ranking", summary.markdown("ranking"))
            w.add_text("tuning_evidence", summary.markdown("tuning"))
            for title, path in summary.plots.items():
                image = matplotlib.image.imread(str(path))
                w.add_image(f"plots/{title}", image[..., :3], dataformats="HWC")
        finally:
            w.close()


__all__ = ["TensorBoardTracker"]
