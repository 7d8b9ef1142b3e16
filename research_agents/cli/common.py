"""What every command shares: the exit codes, the one-line usage error, the experiments directory."""

from __future__ import annotations

import os
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Bad input found by a command (exit code 2, one line)."""


def experiments_dir() -> Path:
    env = os.environ.get("RESEARCH_AGENTS_EXPERIMENTS")
    if env:
        return Path(env)
    here = Path.cwd() / "experiments"
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "experiments"


__all__ = ["EXIT_BAD_INPUT", "EXIT_FAIL", "EXIT_OK", "UsageError", "experiments_dir"]
