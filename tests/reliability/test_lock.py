"""One run per run directory (case 3): a second `run` on the same --out is refused while the first
goes on; status and report stay allowed; the lock dies with its process, SIGKILL included."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest

from research_agents import safefs
from research_agents.cli import main
from research_agents.config import load_study
from research_agents.records import COUNTED
from research_agents.session import RunLock, lock_holder
from research_agents.store import OptunaStore
from tests.reliability.helpers import ROOT, cli_env, fingerprint, one_error_line, write_study


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "research_agents", *args], cwd=ROOT, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_lock(proc: subprocess.Popen, out, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while lock_holder(out) is None or not (out / "run.json").exists():
        assert proc.poll() is None, f"the first run ended before taking its lock: {proc.stderr.read()}"
        assert time.time() < deadline, "the first run never took its lock and wrote run.json"
        time.sleep(0.05)


def test_a_second_run_is_refused_while_the_first_goes_on(tmp_path, table, capsys):
    study = write_study(tmp_path / "rel.toml", trials_per_round=2)
    out = tmp_path / "out"
    args = ["run", "--study", str(study), "--budget", "16", "--executor", f"replay:{table}", "--out", str(out)]
    first = _start(args)
    try:
        _wait_for_lock(first, out)
        assert main(args) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "in use by another run" in line and f"pid {first.pid}" in line, line
        assert main(["status", str(out)]) == 0  # reading is allowed meanwhile
        assert first.poll() is None, "the first run ended before the second was refused: the test proved nothing"
        assert first.wait(timeout=180) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
    records = OptunaStore.for_study(out, load_study(study), readonly=True).records()
    counted = [(r.config, r.seed, r.phase) for r in records if r.status in COUNTED]
    assert len(counted) == len(set(counted)) == 16  # no duplicate training, the budget exactly


def test_a_held_lock_refuses_before_anything_is_written(run_copy, capsys):
    out, args = run_copy
    before = fingerprint(out)
    with RunLock(out):
        assert main(args) == 2
        assert "in use by another run" in one_error_line(capsys.readouterr().err)
        assert fingerprint(out) == before
        assert main(["report", str(out)]) == 0  # reading (and rewriting the reports) is allowed
    assert main(args) == 0  # released: the same command resumes


def test_the_lock_dies_with_a_sigkilled_holder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from research_agents.session import RunLock; RunLock(sys.argv[2]).__enter__();"
                               "print('held', flush=True); time.sleep(60)", str(ROOT), str(out)],
                              stdout=subprocess.PIPE, text=True, env=cli_env())
    assert holder.stdout.readline().strip() == "held"
    assert lock_holder(out) == f"pid {holder.pid}"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_holder(out) is None
    with RunLock(out):
        pass


# ------------------------------------------------------------------ nothing outside OUT is ever written


def _victim(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    return victim


def test_a_symlink_at_the_lock_is_refused_and_its_target_kept(run_copy, tmp_path, capsys):
    out, args = run_copy
    victim = _victim(tmp_path)
    (out / ".lock").unlink()
    (out / ".lock").symlink_to(victim)
    assert main(args) == 2
    assert "symbolic link" in one_error_line(capsys.readouterr().err)
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("name", ["run.json", ".run.json.tmp", "report.md", "summary.json", "results.csv",
                                  "rounds/round-01.md"])
def test_a_symlink_in_place_of_a_run_file_is_replaced_never_written_through(run_copy, tmp_path, name):
    out, args = run_copy
    victim = _victim(tmp_path)
    if name == "run.json":
        victim.write_text((out / "run.json").read_text())  # a valid run file, so the resume goes on
    before = victim.read_text()
    link = out / name
    if link.exists():
        link.unlink()
    link.symlink_to(victim)
    main(args)
    main(["report", str(out)])
    assert victim.read_text() == before
    if name not in (".run.json.tmp", "rounds/round-01.md"):  # (a round's report is only written when missing)
        assert not link.is_symlink() and link.is_file()


def test_a_symlinked_subdirectory_leading_outside_out_is_refused(run_copy, tmp_path, capsys):
    out, args = run_copy
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(out / "rounds")
    (out / "rounds").symlink_to(elsewhere)
    assert main(["report", str(out)]) in (0, 2)
    capsys.readouterr()
    for path in (out / "rounds" / "round-01.md", out / "x.md"):
        try:
            safefs.write_text(path if path.name != "x.md" else elsewhere / "x.md", "x", root=out)
        except safefs.UnsafePath as err:
            assert "outside the run directory" in str(err)
        else:
            raise AssertionError(f"{path} was written outside {out}")
    assert list(elsewhere.iterdir()) == []


def test_safefs_never_truncates_a_symlink_target(tmp_path):
    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "f").symlink_to(victim)
    safefs.write_text(out / "f", "new", root=out)
    assert victim.read_text() == "precious\n" and (out / "f").read_text() == "new" and not (out / "f").is_symlink()
    (out / "lock").symlink_to(victim)
    with pytest.raises(safefs.UnsafePath, match="symbolic link"):
        safefs.open_lock(out / "lock", root=out)
    (out / "dir").mkdir()
    with pytest.raises(safefs.UnsafePath, match="directory"):
        safefs.open_lock(out / "dir", root=out)
    assert victim.read_text() == "precious\n"
