"""Nothing lost: the store is the record of a run, never silently replaced, opened read-only by
`status` and `report`; a missing, damaged or read-only store is reported in one line."""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState
from sqlalchemy import event

from research_agents.cli import main
from research_agents.config import Study, load_study, make_plan
from research_agents.execution.replay import ReplayExecutor
from research_agents.loop import ResearchLoop
from research_agents.planners import SamplerPlanner
from research_agents.records import COUNTED, TrialMetrics
from research_agents.store import OptunaStore, StoreError
from tests.reliability.helpers import fingerprint, one_error_line, read_only, write_study

COMMANDS = ("status", "report", "run")


def _argv(command: str, out: Path, run_args: list[str]) -> list[str]:
    return run_args if command == "run" else [command, str(out)]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_deleted_store_is_refused_and_nothing_is_rewritten(run_copy, capsys, command):
    """Case 1: study.db deleted, trials/ kept: no report overwritten with "No trial finished", no
    re-training into trials/0001..., no empty database created by status."""
    out, args = run_copy
    (out / "study.db").unlink()
    before = fingerprint(out)
    assert main(_argv(command, out, args)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "study.db does not exist" in line and "restore it" in line and "8 trial directories" in line, line
    assert fingerprint(out) == before and not (out / "study.db").exists()


DAMAGE = {
    "truncated": lambda data: data[: len(data) // 3],
    "garbage": lambda data: b"this is not a database " * 200,
    "empty": lambda data: b"",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("command", COMMANDS)
def test_a_damaged_store_is_one_line_and_left_as_it_is(run_copy, capsys, command, damage):
    """Case 2: a truncated or garbage study.db: one line naming the file, no traceback, no write."""
    out, args = run_copy
    db = out / "study.db"
    db.write_bytes(DAMAGE[damage](db.read_bytes()))
    before = fingerprint(out)
    assert main(_argv(command, out, args)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(db) in line and "restore it" in line, line
    assert fingerprint(out) == before


def test_status_and_report_open_the_store_read_only(run_copy):
    """Case 2: a read-only study.db (and a read-only run directory): status still reads it, report
    says in one line that it cannot write its reports, run refuses in one line; nothing changes."""
    out, args = run_copy
    before = fingerprint(out)
    status = read_only([out], ["-m", "research_agents", "status", str(out)])
    assert status.returncode == 0 and "8 trials" in status.stdout and status.stderr == "", status.stderr
    report = read_only([out], ["-m", "research_agents", "report", str(out)])
    assert report.returncode == 2 and "read-only file system" in one_error_line(report.stderr)
    run = read_only([out], ["-m", "research_agents", *args])
    assert run.returncode == 2 and "read-only file system" in one_error_line(run.stderr)
    # only the database read-only: status and report work (report rewrites the reports), run refuses
    db = out / "study.db"
    assert read_only([db], ["-m", "research_agents", "status", str(out)]).returncode == 0
    report = read_only([db], ["-m", "research_agents", "report", str(out)])
    assert report.returncode == 0, report.stderr
    run = read_only([db], ["-m", "research_agents", *args])
    assert run.returncode == 2 and "study.db is read-only" in one_error_line(run.stderr)
    assert fingerprint(out)["study.db"] == before["study.db"]


def test_the_read_only_open_creates_and_writes_nothing(tmp_path, run_copy):
    out, _ = run_copy
    study = Study.model_validate(json.loads((out / "run.json").read_text())["study"])
    before = fingerprint(out)
    store = OptunaStore.for_study(out, study, readonly=True)
    assert len(store.records()) == 8
    with pytest.raises(Exception, match="(?i)read.?only|commit"):  # the connection itself cannot write
        store.set_meta("probe", 1)
    assert fingerprint(out) == before
    with pytest.raises(StoreError, match="does not exist"):
        OptunaStore.for_study(tmp_path / "nothing", study, readonly=True)
    assert not (tmp_path / "nothing").exists()


def test_a_trial_never_trains_into_an_existing_directory(tmp_path, table):
    """Case 1: trial directories are never reused: a directory a lost store left behind keeps its
    files, and the new trial gets its own."""
    study = load_study(write_study(tmp_path / "rel.toml"))
    out = tmp_path / "run"
    planner = SamplerPlanner("random", seed=0)
    loop = ResearchLoop(study, OptunaStore.for_study(out, study), ReplayExecutor(table, study=study), planner, out,
                        make_plan(study, 8))
    first = loop.run_dir("muon", {"lr": 0.02}, 0)
    old = out / first
    old.mkdir(parents=True)
    (old / "metrics.json").write_text("the old trial's result")
    loop.run()
    assert (old / "metrics.json").read_text() == "the old trial's result"
    dirs = [r.run_dir for r in loop.records()]
    assert first not in dirs and f"{first}-2" in dirs and len(set(dirs)) == len(dirs) == 8
    assert sum(r.status in COUNTED for r in loop.records()) == 8


def test_a_store_written_before_point_and_expected_were_fields_reads_them_from_the_rationale(tmp_path):
    """Trials as a store kept them before `point` and `expected` were fields (inside the rationale,
    as "point: NAME" and "why [expected: X]"), written with Optuna's public API: they read back
    with the fields set and the rationale shown exactly as it was; a new trial beside them keeps
    its own fields."""
    import optuna

    study = load_study(write_study(tmp_path / "rel.toml"))
    out = tmp_path / "run"
    store = OptunaStore.for_study(out, study)
    old = {1: ("grid", "point: muon_default"), 2: ("llm", "between the extremes [expected: 4.9]"),
           3: ("policy", "measure the seed noise")}
    for order, (origin, rationale) in old.items():
        attrs = dict(params={"lr": 0.01 * order}, seed=0, origin=origin, phase="search", round=1, rationale=rationale,
                     run_dir=f"trials/{order:04d}", order=order, status="completed", val_loss=4.0 + order)
        store.studies["muon"].add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=4.0 + order,
                                                                  user_attrs=attrs))
    new = OptunaStore.for_study(out, study).start("muon", {"lr": 0.5}, 0, "llm", "search", 2, "bold", "trials/0004",
                                                  expected="5")
    records = OptunaStore.for_study(out, study, readonly=True).records()
    assert [(r.point, r.expected, r.rationale) for r in records] == [
        ("muon_default", None, ""), (None, "4.9", "between the extremes"), (None, None, "measure the seed noise"),
        (None, "5", "bold")]
    assert [r.shown_rationale for r in records[:3]] == [rationale for _, rationale in old.values()]
    assert records[3].model_dump() == new.model_dump()


KILLED_MID_WRITE = """
import os, signal, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size = 1")  # spill to the file before the commit: the journal is hot
db.execute("BEGIN EXCLUSIVE")
for i in range(300):
    db.execute("INSERT INTO study_user_attributes (study_id, key, value_json) VALUES (1, ?, ?)",
               (f"half-written-{i}", '"' + "x" * 500 + '"'))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_status_reads_a_store_a_kill_left_mid_write(run_copy):
    """A kill mid-transaction leaves a hot journal that only a writer may roll back: status and
    report read a copy (rolled back there), leave the files as they are, and run recovers it."""
    out, args = run_copy
    done = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(out / "study.db")])
    assert done.returncode == -signal.SIGKILL
    journal = out / "study.db-journal"
    assert journal.stat().st_size > 0
    before = fingerprint(out)
    assert main(["status", str(out)]) == 0
    assert fingerprint(out) == before  # nothing rolled back in place by a reader
    assert main(args) == 0  # the writer recovers it
    assert not journal.exists()
    with sqlite3.connect(out / "study.db") as db:  # the half-written transaction was rolled back
        assert db.execute("SELECT count(*) FROM study_user_attributes WHERE key LIKE 'half-written-%'").fetchone() == (
            0,
        )


class Killed(BaseException):
    """SIGKILL between two database writes, as seen from inside."""


STORAGE_WRITES = ("create_new_trial", "set_trial_param", "set_trial_user_attr", "set_trial_system_attr",
                  "set_trial_state_values", "set_trial_intermediate_value")


def _kill_at_write(store: OptunaStore, k: int) -> None:
    """Make the k-th database write of `store` raise Killed before it is committed: per commit for
    the batched store (start and finish one transaction each), per Optuna write call otherwise."""
    writes = itertools.count(1)
    if store.batched:
        def before_commit(session):
            if session.new or session.dirty or session.deleted or session.info.get("executed"):
                if next(writes) == k:
                    raise Killed

        def executed(orm_state):
            if not orm_state.is_select:
                orm_state.session.info["executed"] = True

        factory = store.storage.scoped_session.session_factory
        event.listen(factory, "before_commit", before_commit)
        event.listen(factory, "do_orm_execute", executed)
        return
    for name in STORAGE_WRITES:
        def write(*a, _real=getattr(store.storage, name), **kw):  # noqa: B008 (binds each method once)
            if next(writes) == k:
                raise Killed
            return _real(*a, **kw)
        setattr(store.storage, name, write)


@pytest.mark.parametrize("batched", [True, False], ids=["one-transaction-each", "one-write-each"])
def test_a_kill_between_any_two_writes_of_a_trial_leaves_it_whole_or_to_rerun(tmp_path, batched):
    """Each database write of start() and finish() in turn is the last one before a kill: the
    reopened store holds no half trial (no waiting trial, none without its record), and a trial
    whose finish was cut short reads as running, so it is recovered and re-run."""
    study = load_study(write_study(tmp_path / "rel.toml"))
    metrics = TrialMetrics.model_validate({"spec": {}, "status": "completed", "final": {"val_loss": 4.25},
                                           "optimizer_steps": 12, "tokens_seen": 3072, "wall_time_s": 0.5})
    for k in itertools.count(1):
        out = tmp_path / f"kill-at-write-{k}"
        store = OptunaStore.for_study(out, study)
        store.batched = batched
        _kill_at_write(store, k)
        try:
            store.finish(store.start("muon", {"lr": 0.02}, 0, "tpe", "search", 1, "", "trials/0001"),
                         "completed", metrics, None)
        except Killed:
            store.storage.scoped_session.remove()  # (the killed process's session is gone with it)
        else:
            break  # k is past the last write: every point was a kill point
        reopened = OptunaStore.for_study(out, study)
        trials = [t for s in reopened.studies.values() for t in s.get_trials(deepcopy=False)]
        assert all(t.state != TrialState.WAITING and "order" in t.user_attrs for t in trials), k
        records = reopened.records()
        assert len(records) <= 1, k
        if records and records[0].status != "running":
            assert records[0].status == "completed" and records[0].val_loss == 4.25, (k, records[0])
        elif records:
            [stale] = reopened.recover()
            assert reopened.records()[0].status == "interrupted" and stale.id == records[0].id
    assert k == 3 if batched else k > 3  # (start and finish: one write each, or several, each tried)


# ------------------------------------------------------------------ a store checked when it opens


def test_another_applications_sqlite_file_is_refused_as_storage(tmp_path, table, capsys):
    other = tmp_path / "app.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO customers (name) VALUES ('ada')")
    con.commit()
    con.close()
    before = other.read_bytes()
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    assert main(["run", "--study", str(study), "--budget", "8", "--executor", f"replay:{table}", "--out", str(out),
                 "--storage", f"sqlite:///{other}"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "not Optuna's (customers)" in line, line
    assert other.read_bytes() == before and not out.exists()


def _corrupt_a_page(db: Path) -> None:
    """Garbage over the cells of the first b-tree page whose damage SQLite's quick check sees: the
    header and the schema still read, and so may the damaged table (a silent wrong answer)."""
    original = db.read_bytes()
    page = int.from_bytes(original[16:18], "big")
    for k in range(1, len(original) // page):
        data = bytearray(original)
        data[k * page + 8: (k + 1) * page] = b"\xff\x13" * ((page - 8) // 2)
        db.write_bytes(bytes(data))
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            if [row[0] for row in con.execute("PRAGMA quick_check(1)")] != ["ok"]:
                return
        finally:
            con.close()
    raise AssertionError("no page whose damage the quick check sees")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_store_that_fails_its_integrity_check_is_refused(run_copy, capsys, command):
    out, args = run_copy
    db = out / "study.db"
    _corrupt_a_page(db)
    before = fingerprint(out)
    assert main(_argv(command, out, args)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(db) in line and "integrity check" in line, line
    assert fingerprint(out) == before


# ---------------------------------------------------------------- the store's identity


def _another_run(tmp_path: Path, table: Path, study: Path) -> Path:
    other = tmp_path / "other"
    assert main(["run", "--study", str(study), "--budget", "8", "--executor", f"replay:{table}",
                 "--out", str(other), "--planner", "random"]) == 0
    return other


@pytest.mark.parametrize("command", COMMANDS)
def test_another_runs_store_of_the_same_study_is_refused(run_copy, table, tmp_path, capsys, command):
    """A study.db copied from another run of the same study: status, report and run refuse it in one
    line instead of showing (or resuming) the other run's trials, and change nothing."""
    out, args = run_copy
    study = Path(args[args.index("--study") + 1])
    other = _another_run(tmp_path, table, study)
    capsys.readouterr()
    (out / "study.db").write_bytes((other / "study.db").read_bytes())
    before = fingerprint(out)
    assert main(_argv(command, out, args)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "belongs to another run" in line and "restore this run's study.db" in line, line
    assert fingerprint(out) == before


def test_a_lost_run_file_and_a_changed_study_do_not_mix_two_studies(run_copy, tmp_path, capsys):
    """run.json lost and the study file changed under the same name: the resume is refused (before,
    it mixed trials of both definitions under one name); with the original file it resumes."""
    out, args = run_copy
    study = Path(args[args.index("--study") + 1])
    original = study.read_text()
    (out / "run.json").unlink()
    study.write_text(original.replace('base = { optimizer = "adamw" }',
                                      'base = { optimizer = "adamw", weight_decay = 0.5 }'))
    try:
        before = fingerprint(out)
        assert main(args) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "another definition of study 'rel'" in line, line
        assert fingerprint(out) == before
    finally:
        study.write_text(original)
    assert main(args) == 0  # the definition it was made with: resumes (nothing left to run)


def test_a_store_records_its_run_and_the_run_file_names_it(run_copy):
    out, _ = run_copy
    saved = json.loads((out / "run.json").read_text())
    store = OptunaStore.for_study(out, Study.model_validate(saved["study"]), readonly=True)
    ident = store.get_meta("identity")
    assert ident["run_id"] == saved["run_id"] and len(saved["run_id"]) == 32
    assert ident["study"] == "rel" and len(ident["definition"]) == 16
