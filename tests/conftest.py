"""Shared fixtures: a fast study (tiny model, few steps) and an isolated token cache."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

FAST_BASE = ('{ steps = 12, eval_every = 6, eval_batches = 2, batch_size = 8, seq_len = 32, '
             '"model.d_model" = 32, "model.n_heads" = 2, "model.n_layers" = 1, "model.d_ff" = 64, '
             '"data.max_docs" = 40, "data.bpe_vocab_size" = 300 }')


def fast_study_toml(name: str = "fast", confirm: int = 2, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        name = "{name}"
        question = "Does Muon beat AdamW on a toy model?"
        preset = "tiny"
        base = {FAST_BASE}
        comparisons = [["adamw", "muon"]]
        trial_timeout_s = 300

        [seeds]
        search = [0]
        confirm = {confirm}

        [planner]
        trials_per_round = 2
        tpe_startup_trials = 2

        [arms.muon]
        base = {{ optimizer = "muon" }}
        start = {{ lr = 0.02 }}
        [arms.muon.space]
        lr = {{ type = "float", low = 0.005, high = 0.1, log = true }}
        ns_steps = {{ type = "int", low = 2, high = 6 }}

        [arms.adamw]
        base = {{ optimizer = "adamw" }}
        start = {{ lr = 0.003 }}
        [arms.adamw.space]
        lr = {{ type = "float", low = 0.0003, high = 0.03, log = true }}
        """) + extra


@pytest.fixture(scope="session")
def token_cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("token-cache")
    os.environ["TRAINER_CACHE_DIR"] = str(path)  # inherited by trainer subprocesses
    return path


@pytest.fixture
def fast_study(tmp_path, token_cache) -> Path:
    path = tmp_path / "fast.toml"
    path.write_text(fast_study_toml())
    return path


@pytest.fixture(scope="session")
def local_ray():
    """A real local Ray with 2 CPUs for the whole session (skips where the [ray] extra is missing)."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'research-agents[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server of this test session (tests/postgres.py); skips, saying why, only
    when none can be started here."""
    from tests.postgres import PostgresServer, Unavailable

    try:
        server = PostgresServer()
    except Unavailable as e:
        pytest.skip(f"no PostgreSQL server: {e}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """The SQLAlchemy URL (postgresql+psycopg2://...) of a fresh, empty database for this test."""
    postgres_url.count = getattr(postgres_url, "count", 0) + 1
    return postgres_server.create_database(f"t{postgres_url.count}_{os.getpid()}")


# ------------------------------------------------------------------ the trainer's test modules


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A private token cache for this module (never ~/.cache)."""
    path = tmp_path_factory.mktemp("token-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRAINER_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """60 paragraphs of seeded random words: ~4.7k train / ~0.6k val tokens with a 300-token BPE."""
    import random

    from tests.trainer_corpus import WORDS

    rng = random.Random(0)
    paras = [" ".join(rng.choice(WORDS) for _ in range(40)) + "." for _ in range(60)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(paras) + "\n")
    return path


# The suite runs on two workers (README: `pytest -n 2 --dist loadfile --no-loadscope-reorder`), a
# file at a time each, in this order: the longest files first, so the two finish together
# (a long file drawn last ran alone for minutes). Measured with `--durations=0` on 2 cores.
SLOW_FIRST = ("tests/test_llm_planner.py", "tests/reliability/test_disk.py", "tests/test_parallel.py",
              "tests/reliability/test_shared_store.py", "tests/reliability/test_kills.py", "tests/test_loop.py",
              "tests/reliability/test_validation.py", "tests/test_conformance.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest as collected
