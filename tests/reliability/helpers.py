"""Shared by the reliability tests: a synthetic replay table and study (a run in seconds), the CLI
in a subprocess, a read-only mount, and a fingerprint of every file of a run directory."""

from __future__ import annotations

import csv
import hashlib
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["arm", "lr", "adamw_lr", "momentum", "momentum_schedule.kind", "momentum_schedule.start",
           "momentum_schedule.warmup_steps", "ns_steps", "seed", "status", "val_loss", "val_accuracy",
           "train_loss", "loss_25", "loss_50", "loss_75", "loss_100", "diverged_step", "wall_time_s"]
NOISE = [0.004, -0.003, 0.001, -0.002, 0.003, -0.001]  # per table seed


def write_table(path: Path, arms: tuple[str, ...] = ("adamw", "muon")) -> Path:
    """AdamW and Muon on a factor-sqrt(2) LR grid, 6 seeds each; optima at lr 0.006 and 0.04."""
    grids = {"adamw": (1e-4, 18, 0.006, 5.0), "muon": (3e-3, 16, 0.04, 4.6), "lion": (1e-4, 4, 1e-3, 5.0)}
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        for arm in arms:
            first, n, best, base = grids[arm]
            for k in range(n):
                lr = first * 2 ** (k / 2)
                for seed, e in enumerate(NOISE):
                    v = base + 0.25 * math.log2(lr / best) ** 2 + e
                    row = dict.fromkeys(COLUMNS, "")
                    row.update(arm=arm, lr=f"{lr:.6g}", seed=seed, status="completed", val_loss=v, val_accuracy=0.2,
                               train_loss=v, loss_25=v + 1, loss_50=v + 0.5, loss_75=v + 0.2, loss_100=v,
                               wall_time_s=1.0)
                    if arm == "muon":
                        row.update(momentum=0.95, ns_steps=5, **{"momentum_schedule.kind": "fixed"})
                    w.writerow(row)
    return path


def study_toml(name: str = "rel", muon_space: str = 'lr = { type = "float", low = 0.003, high = 0.6, log = true }',
               muon_start: str = "{ lr = 0.02 }", trials_per_round: int = 4) -> str:
    return textwrap.dedent(f"""\
        name = "{name}"
        question = "Is tuned Muon better than tuned AdamW?"
        preset = "tiny"
        comparisons = [["adamw", "muon"]]
        [seeds]
        search = [0]
        confirm = 3
        [planner]
        trials_per_round = {trials_per_round}
        [arms.muon]
        base = {{ optimizer = "muon", momentum = 0.95, ns_steps = 5 }}
        start = {muon_start}
        [arms.muon.space]
        {muon_space}
        [arms.adamw]
        base = {{ optimizer = "adamw" }}
        start = {{ lr = 0.003 }}
        [arms.adamw.space]
        lr = {{ type = "float", low = 0.0001, high = 0.05, log = true }}
        """)


def write_study(path: Path, **kw) -> Path:
    path.write_text(study_toml(**kw))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        env.pop(key, None)
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m research_agents ARGS` in its own process."""
    return subprocess.run([sys.executable, "-m", "research_agents", *args], capture_output=True, text=True,
                          env=env or cli_env(), cwd=ROOT, timeout=timeout)


def one_error_line(stderr: str) -> str:
    """The one line a refusal prints (fails on a traceback or on more than one line)."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in stderr, stderr
    return lines[0]


def fingerprint(out: Path) -> dict[str, str]:
    """sha256 of every file under OUT (the lock file aside: it holds the last run's pid)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(out).rglob("*")) if p.is_file() and p.name != ".lock"}


def read_only(paths: list[Path], argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python ARGV` with each of `paths` (files or directories) bind-mounted read-only, in a
    private user and mount namespace: read-only for root too, and nothing changes outside."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (user and mount namespaces) for a read-only mount")
    mounts = "".join(f'mount --bind "{p}" "{p}" && mount -o remount,bind,ro "{p}" && ' for p in paths)
    probe = subprocess.run(["unshare", "-r", "-m", "sh", "-c", mounts + "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"read-only bind mounts are not allowed here: {probe.stderr.strip()}")
    return subprocess.run(["unshare", "-r", "-m", "sh", "-c", mounts + 'exec "$@"', "sh", sys.executable, *argv],
                          capture_output=True, text=True, env=env or cli_env(), cwd=ROOT, timeout=180)
