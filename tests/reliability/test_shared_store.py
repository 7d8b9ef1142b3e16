"""One study in a database server (`--storage postgresql://...`), against a real PostgreSQL server
the tests start (tests/postgres.py): a run resumes where it stopped, a SIGKILLed driver loses
nothing, several drivers (processes) share one study and number its trials one after another,
and a URL that cannot be used is one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from research_agents.cli import main
from research_agents.config import load_study
from research_agents.records import COUNTED
from research_agents.store import OptunaStore
from tests.reliability.helpers import ROOT, cli, cli_env, one_error_line, write_study
from tests.reliability.test_kills import Driver


def _args(study, out, table, url, budget: int, planner: str = "tpe") -> list[str]:
    return ["run", "--study", str(study), "--budget", str(budget), "--planner", planner,
            "--executor", f"replay:{table}", "--out", str(out), "--storage", url]


def _records(study_file, url):
    return OptunaStore.for_study(None, load_study(study_file), url=url, readonly=True).records()


def test_a_postgres_run_resumes_where_it_stopped(tmp_path, table, postgres_url, capsys):
    study = write_study(tmp_path / "rel.toml")
    out = tmp_path / "out"
    assert main(_args(study, out, table, postgres_url, 8)) == 0
    first = _records(study, postgres_url)
    assert not (out / "study.db").exists()  # the trials went to the server, not to a file in OUT
    assert main(_args(study, out, table, postgres_url, 12)) == 0  # resume: the same --out, a larger budget
    records = _records(study, postgres_url)
    assert records[: len(first)] == first  # nothing re-run or changed
    assert [r.order for r in records] == list(range(1, len(records) + 1))
    assert sum(r.status in COUNTED for r in records) == 12
    capsys.readouterr()
    assert (
        main(["status", str(out), "--storage", postgres_url]) == 0
    )  # (run.json names the database, its password masked)
    assert f"{len(records)} trials" in capsys.readouterr().out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL semantics of Linux")
def test_a_sigkilled_driver_on_postgres_loses_nothing(tmp_path, table, postgres_url):
    study = write_study(tmp_path / "rel.toml", trials_per_round=2)
    out = tmp_path / "out"
    driver = Driver(_args(study, out, table, postgres_url, 10))
    assert driver.wait_for_trial(3)  # its third trial has started
    driver.proc.send_signal(signal.SIGKILL)
    driver.proc.wait()
    before = _records(study, postgres_url)
    done = cli(*_args(study, out, table, postgres_url, 10))
    assert done.returncode == 0, done.stderr
    records = _records(study, postgres_url)
    finished = {r.id: r for r in before if r.status != "running"}
    assert all(next(x for x in records if x.id == i) == r for i, r in finished.items())  # nothing lost
    counted = [(r.config, r.seed, r.phase) for r in records if r.status in COUNTED]
    assert len(counted) == len(set(counted)) == 10  # each run once, the budget exactly
    assert not [r for r in records if r.status == "running"]  # the killed trial was recovered ...
    cut = [r for r in records if r.status == "interrupted"]
    assert all((r.config, r.seed, r.phase) in counted for r in cut)  # ... and re-run


def test_two_drivers_share_one_study_on_postgres(tmp_path, fast_study, postgres_url):
    """Two `run` processes, each with its own --out, on one study in one database: both finish,
    each sees the other's trials, every trial has its own number and none is left running. (Real
    training, a few seconds a trial, so that the second driver joins while the first still runs.)"""
    study = fast_study
    outs = [tmp_path / "a", tmp_path / "b"]
    budget = 8

    def args(out):
        return ["run", "--study", str(study), "--budget", str(budget), "--planner", "tpe", "--out", str(out),
                "--storage", postgres_url]

    first = Driver(args(outs[0]))
    assert first.wait_for_trial(1, timeout_s=120)  # the first driver is training its first trial
    second = Driver(args(outs[1]))
    for d in (first, second):
        d.proc.wait(timeout=600)
    assert [d.proc.returncode for d in (first, second)] == [0, 0]
    records = _records(study, postgres_url)
    assert [r.order for r in records] == list(range(1, len(records) + 1))
    assert not [r for r in records if r.status == "running"]
    assert sum(r.status in COUNTED for r in records) >= budget
    # both drivers ran trials, and each one's reports count every trial of the study
    import optuna

    storage = optuna.storages.RDBStorage(postgres_url, skip_table_creation=True)
    drivers = Counter(t.user_attrs.get("driver") for s in optuna.get_all_study_summaries(storage)
                      for t in optuna.load_study(storage=storage, study_name=s.study_name).trials)
    # (how many each driver runs is a race: with 2 workers per driver the first often spends the whole
    # budget before the second has started; what must hold is that every trial says whose it is)
    assert None not in drivers and sum(drivers.values()) == len(records), drivers
    for out in outs:
        status = cli("status", str(out), "--storage", postgres_url)
        assert status.returncode == 0 and f"{len(records)} trials" in status.stdout, status.stdout


def _go(procs: list[subprocess.Popen]) -> list[subprocess.Popen]:
    """Wait until each process has said "ready" (imports done), then tell them all to go at once."""
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.communicate(timeout=60)[1]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    return procs


NUMBERING = textwrap.dedent("""\
    import sys
    from research_agents.config import load_study
    from research_agents.store import OptunaStore
    url, study, n = sys.argv[1], load_study(sys.argv[2]), int(sys.argv[3])
    store = OptunaStore(url, study.name, {a: arm.space for a, arm in study.arms.items()})
    print("ready", flush=True)
    sys.stdin.readline()  # both processes are ready: go
    for i in range(n):
        r = store.start("adamw" if i % 2 else "muon", {"lr": 0.001 * (i + 1)}, i, "tpe", "search", 1, "", f"t{i}")
        store.finish(r, "interrupted", None, "numbering test")
    """)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_drivers_never_share_a_trial_number(tmp_path, backend, request):
    """Two processes start trials on one database at the same time: orders 1..N, each once."""
    url = f"sqlite:///{tmp_path / 'shared.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    study = write_study(tmp_path / "rel.toml")
    made = load_study(study)
    OptunaStore(url, made.name, {a: arm.space for a, arm in made.arms.items()})  # (the tables, made once)
    procs = [subprocess.Popen([sys.executable, "-c", NUMBERING, url, str(study), "15"], cwd=ROOT, env=cli_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in _go(procs)]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert sorted(r.order for r in _records(study, url)) == list(range(1, 31))


@pytest.mark.parametrize("case, needle", [
    ("password", "password authentication failed"),
    ("database", "does not exist"),
])
def test_a_postgres_url_that_cannot_be_used_is_one_line(tmp_path, table, postgres_server, capsys, case, needle):
    url = postgres_server.url("no_such_db") if case == "database" else \
        postgres_server.url().replace(f":{postgres_server.password}@", ":wrong@")
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    assert main(_args(study, out, table, url, 8)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: --storage") and needle in line and "cannot connect" in line, line
    assert postgres_server.password not in line and "wrong" not in line  # the password is never shown
    assert not out.exists()


OPENING = textwrap.dedent("""\
    import sys
    from research_agents.config import load_study
    from research_agents.store import OptunaStore
    url, study = sys.argv[1], load_study(sys.argv[2])
    print("ready", flush=True)
    sys.stdin.readline()  # all processes are ready: go
    OptunaStore(url, study.name, {a: arm.space for a, arm in study.arms.items()})
    """)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_drivers_opening_a_new_database_at_once_all_open_it(tmp_path, backend, request):
    """Three drivers open an empty database at the same moment: each makes or finds its tables and
    studies (the ones that lose the race to create them try again)."""
    url = f"sqlite:///{tmp_path / 'new.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    study = write_study(tmp_path / "rel.toml")
    procs = [subprocess.Popen([sys.executable, "-c", OPENING, url, str(study)], cwd=ROOT, env=cli_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in _go(procs)]
    assert [p.returncode for p in procs] == [0, 0, 0], errors


def test_recover_leaves_alone_the_trials_of_drivers_that_may_still_run_them(tmp_path):
    """A running trial is recovered when its driver is gone, not while another may be running it."""
    import os
    import socket

    from research_agents.store.optuna import _process_start, abandoned, this_driver

    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert abandoned(None)  # a store written before drivers were recorded
        assert abandoned(this_driver())  # this process asks: it is not running it any more
        assert abandoned(f"{host}:{dead.pid}:{_process_start(os.getpid())}")  # ended
        assert not abandoned(f"{host}:{alive.pid}:{_process_start(alive.pid)}")  # alive
        assert abandoned(f"{host}:{alive.pid}:1")  # its pid now names another process
        assert not abandoned(f"another-{host}:{dead.pid}:1")  # another machine's: it cannot tell
    finally:
        alive.kill()
        alive.wait()
