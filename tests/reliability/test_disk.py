"""The file system refusing a write: a full disk (a real tmpfs of a few hundred kB, and ENOSPC at
each file a run writes), `trials/` replaced or read-only, a file of the run that is a directory,
`--out` on /proc or /sys. Each is one line and an exit code, never a traceback, and nothing
recorded before is lost: the same command, once the cause is fixed, finishes the run."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys

import pytest

from research_agents import safefs
from research_agents.cli import main
from research_agents.config import load_study
from research_agents.records import COUNTED
from research_agents.store import OptunaStore
from tests.reliability.helpers import ROOT, cli_env, fingerprint, one_error_line, read_only

NO_SPACE = "No space left on device"


def _records(out, args):
    study = load_study(args[args.index("--study") + 1])
    return [(r.id, r.status, r.val_loss) for r in OptunaStore.for_study(out, study, readonly=True).records()]


def _budget(args, n: int) -> list[str]:
    args = list(args)
    args[args.index("--budget") + 1] = str(n)
    return args


def _finishes(out, args, budget: int, before: list) -> None:
    """The same command (the cause fixed) runs to the end: every trial recorded before is there as
    it was, the budget is spent in full and no trial failed for the write."""
    assert main(_budget(args, budget)) == 0
    after = _records(out, args)
    assert set(before) <= set(after), "a recorded trial changed or was lost"
    assert len([s for _, s, _ in after if s in COUNTED]) == budget and "failed" not in {s for _, s, _ in after}


# ------------------------------------------------------------------ a full disk


@pytest.mark.parametrize("size", ["150k", "400k"])
def test_a_full_disk_is_one_line_and_the_run_resumes_where_it_stopped(tmp_path, table, size):
    """A run in a tmpfs too small for it (the store, a trial's files, a round report, a plot or
    the report fills it, by size): exit 1 and one line; copied to a disk with room, it resumes."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (user and mount namespaces) for a small tmpfs")
    from tests.reliability.helpers import write_study

    study, mnt, copy = write_study(tmp_path / "rel.toml"), tmp_path / "mnt", tmp_path / "copy"
    mnt.mkdir()
    args = ["run", "--study", str(study), "--budget", "8", "--executor", f"replay:{table}", "--out", str(mnt / "o")]
    script = (f'mount -t tmpfs -o size={size} tmpfs "{mnt}" || exit 99; "$@"; rc=$?; '
              f'cp -a "{mnt}/o" "{copy}"; exit $rc')
    done = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "research_agents",
                           *args], capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=300)
    if done.returncode == 99:
        pytest.skip(f"no tmpfs mount allowed here: {done.stderr.strip()}")
    assert done.returncode == 1, done.stderr
    line = one_error_line(done.stderr)
    assert (NO_SPACE in line or "disk is full" in line) and "run the same command to resume" in line, line
    args[-1] = str(copy)
    _finishes(copy, args, 8, _records(copy, args))


@pytest.mark.parametrize("name", ["run.json", "rounds/round-03.md", "metrics.json", "report.md", "summary.json"])
def test_enospc_at_each_file_of_a_run_is_one_line_and_loses_nothing(run_copy, monkeypatch, capsys, name):
    """ENOSPC writing run.json, a round's report, a trial's metrics, the report or summary.json, on a
    resume that adds a round: exit 1, one line, the files written before unchanged (each is written
    whole or not at all), the trials recorded before kept, a trial cut short re-run, not counted failed."""
    out, args = run_copy
    before, files = _records(out, args), fingerprint(out)

    def refuse(path):
        if str(path).endswith(name):
            raise OSError(errno.ENOSPC, NO_SPACE, str(path))

    write_bytes = safefs.write_bytes
    monkeypatch.setattr(safefs, "write_bytes", lambda path, *a, **k: (refuse(path), write_bytes(path, *a, **k))[1])
    from research_agents.execution import replay
    write_metrics = replay.write_metrics
    monkeypatch.setattr(replay, "write_metrics", lambda d, m: (refuse(d / "metrics.json"), write_metrics(d, m))[1])

    assert main(_budget(args, 12)) == 1
    line = one_error_line(capsys.readouterr().err)
    assert NO_SPACE in line and name.split("/")[-1] in line, line
    assert set(before) <= set(_records(out, args))
    if name in files:  # the file it failed to replace is the one it had (a trial's is new: none to keep)
        assert fingerprint(out)[name] == files[name], f"{name} was lost"
    if name in ("rounds/round-03.md", "metrics.json"):  # stopped in the loop: the report says what was recorded
        assert fingerprint(out)["report.md"] != files["report.md"]
    monkeypatch.undo()
    _finishes(out, args, 12, before)


# ------------------------------------------------------------------ trials/ and the run's files


@pytest.mark.parametrize("damage", ["file", "symlink"])
def test_trials_replaced_between_runs_is_refused_before_anything_is_written(run_copy, tmp_path, capsys, damage):
    out, args = run_copy
    elsewhere = tmp_path / "elsewhere"
    shutil.move(out / "trials", elsewhere)
    if damage == "file":
        (out / "trials").write_text("not a directory\n")
    else:
        (out / "trials").symlink_to(elsewhere)
    before, outside = fingerprint(out), sorted(p.name for p in elsewhere.iterdir())
    assert main(_budget(args, 12)) == 2
    assert "trials is not a directory of the run" in one_error_line(capsys.readouterr().err)
    assert fingerprint(out) == before and sorted(p.name for p in elsewhere.iterdir()) == outside
    assert main(["status", str(out)]) == 0 and main(["report", str(out)]) == 0  # they only read it
    (out / "trials").unlink()
    shutil.move(elsewhere, out / "trials")
    _finishes(out, args, 12, _records(out, args))


def test_read_only_trials_is_refused_before_anything_is_written(run_copy):
    out, args = run_copy
    before = fingerprint(out)
    done = read_only([out / "trials"], ["-m", "research_agents", *_budget(args, 12)])
    assert done.returncode == 2 and "trials is read-only" in one_error_line(done.stderr)
    assert fingerprint(out) == before


def test_a_trial_whose_directory_cannot_be_written_is_rerun_not_counted(run_copy, monkeypatch, capsys):
    """trials/ turned read-only mid-run (EROFS at a trial's files): that trial is recorded
    interrupted (never a failure spending the budget), the run stops in one line, and once
    repaired the same command spends the whole budget."""
    out, args = run_copy
    before = _records(out, args)
    from research_agents.execution import replay
    calls = []

    def refuse(run_dir, metrics):
        calls.append(run_dir)
        raise OSError(errno.EROFS, "Read-only file system", str(run_dir / "metrics.json"))

    monkeypatch.setattr(replay, "write_metrics", refuse)
    assert main(_budget(args, 12)) == 1
    assert "Read-only file system" in one_error_line(capsys.readouterr().err)
    after = _records(out, args)
    assert len(calls) == 1 and [s for _, s, _ in after[len(before):]] == ["interrupted"], after
    monkeypatch.undo()
    _finishes(out, args, 12, before)


@pytest.mark.parametrize("name", ["report.md", "summary.json", "rounds/round-03.md", ".lock"])
def test_a_run_file_that_is_a_directory_is_one_line_and_loses_nothing(run_copy, capsys, name):
    out, args = run_copy
    before = _records(out, args)
    path = out / name
    if path.is_file():
        path.unlink()
    path.mkdir()
    (path / "keep").write_text("mine\n")
    code = main(_budget(args, 12))
    line = one_error_line(capsys.readouterr().err)
    assert "is a directory" in line and code == (2 if name == ".lock" else 1), (code, line)
    assert (path / "keep").read_text() == "mine\n" and set(before) <= set(_records(out, args))
    if name in ("report.md", "summary.json"):
        assert main(["report", str(out)]) == 2 and "is a directory" in one_error_line(capsys.readouterr().err)
    shutil.rmtree(path)
    _finishes(out, args, 12, before)
    assert path.is_file() or name == ".lock"


# ------------------------------------------------------------------ --out where no file is kept


@pytest.mark.parametrize("out", ["/proc/research-agents-test", "/proc/self", "/sys/research-agents-test", "/sys"])
def test_an_out_on_proc_or_sys_is_refused_before_anything_runs(tmp_path, table, capsys, out):
    from tests.reliability.helpers import write_study

    study = write_study(tmp_path / "rel.toml")
    code = main(["run", "--study", str(study), "--budget", "8", "--executor", f"replay:{table}", "--out", out])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "file system, where no file of a run can be kept" in line, line


def test_write_failure_says_a_refused_write_and_nothing_else():
    import sqlite3

    full = OSError(errno.ENOSPC, NO_SPACE, "/x/report.md")
    assert safefs.write_failure(full) == f"cannot write /x/report.md: {NO_SPACE}"
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as e:
            raise RuntimeError("commit failed") from e
    except RuntimeError as chained:
        assert safefs.write_failure(chained) == "cannot write the store: database or disk is full"
    for other in (ValueError("x"), OSError(errno.ENOENT, "No such file"), KeyError("k")):
        assert safefs.write_failure(other) is None


def test_trials_turned_into_a_symlink_mid_run_stops_the_run_writing_nothing_outside(run_copy, tmp_path,
                                                                                     monkeypatch, capsys):
    """trials/ moved away and replaced by a symlink to it while the run goes on: the next trial is
    refused (it would be made outside OUT), the run stops in one line, nothing is written there."""
    out, args = run_copy
    before = _records(out, args)
    elsewhere = tmp_path / "elsewhere"
    from research_agents.execution import replay
    write_metrics = replay.write_metrics

    def then_swap(run_dir, metrics):
        write_metrics(run_dir, metrics)
        if not elsewhere.exists():
            shutil.move(out / "trials", elsewhere)
            (out / "trials").symlink_to(elsewhere)

    monkeypatch.setattr(replay, "write_metrics", then_swap)
    assert main(_budget(args, 12)) == 1
    assert "resolves outside the run directory" in one_error_line(capsys.readouterr().err)
    outside = sorted(p.name for p in elsewhere.iterdir())
    assert len(outside) == len({r[0] for r in before}) + 1, outside  # the trials made before the swap, no more
    assert set(before) <= set(_records(out, args))
    monkeypatch.undo()
    (out / "trials").unlink()
    shutil.move(elsewhere, out / "trials")
    _finishes(out, args, 12, before)
