"""Fixtures of the reliability tests: a finished replay run to damage, copied fresh for each test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from research_agents.cli import main
from tests.reliability.helpers import write_study, write_table


@pytest.fixture(autouse=True)
def no_llm(monkeypatch):
    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def table(tmp_path_factory) -> Path:
    return write_table(tmp_path_factory.mktemp("table") / "replay.csv")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, table) -> tuple[Path, list[str]]:
    """A finished 8-run replay study (made once) and the `run` arguments that made it."""
    base = tmp_path_factory.mktemp("finished")
    study = write_study(base / "rel.toml")
    out = base / "run"
    args = ["run", "--study", str(study), "--budget", "8", "--executor", f"replay:{table}", "--out", str(out)]
    assert main(args) == 0
    return out, args


@pytest.fixture
def run_copy(tmp_path, finished_run) -> tuple[Path, list[str]]:
    """A fresh copy of the finished run and the `run` arguments that resume it."""
    out, args = finished_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    return copy, [str(copy) if a == str(out) else a for a in args]
