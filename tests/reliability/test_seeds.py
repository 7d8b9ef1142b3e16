"""Seeds: every seed a trial may get is a whole number in 0 .. 2**32 - 1 (what torch, numpy and
Optuna all accept). Outside it, or not a whole number, in a study file or on the command line: one
line naming the field, before anything is written. At its edges: a run end to end."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from research_agents.cli import main
from research_agents.config import load_study, make_plan
from tests.reliability.helpers import one_error_line, study_toml
from trainer.spec import MAX_SEED, TrialSpec

LAST = 2**32 - 1


def _study(search: str = "[0]", extra_seeds: str = "", planner: str = "") -> str:
    text = study_toml().replace("search = [0]", f"search = {search}\n{extra_seeds}")
    return text.replace("trials_per_round = 4", f"trials_per_round = 4\n{planner}")


BAD = {
    "negative search seed": (_study("[-1]"), "seeds.search.0"),
    "search seed 2**32": (_study(f"[{LAST + 1}]"), "seeds.search.0"),
    "search seed 2**64": (_study(f"[{2**64}]"), "seeds.search.0"),
    "fractional search seed": (_study("[1.5]"), "seeds.search.0"),
    "string search seed": (_study('["3"]'), "seeds.search.0"),
    "boolean search seed": (_study("[true]"), "seeds.search.0"),
    "confirmation seeds past 2**32": (_study(extra_seeds=f"confirm_start = {LAST - 10}"), "confirm_start"),
    "negative confirm_start": (_study(extra_seeds="confirm_start = -1"), "seeds.confirm_start"),
    "float confirm_start": (_study(extra_seeds="confirm_start = 1e3"), "seeds.confirm_start"),
    "negative planner seed": (_study(planner="seed = -1"), "planner.seed"),
    "planner seed 2**40": (_study(planner=f"seed = {2**40}"), "planner.seed"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_seed_out_of_range_or_not_whole_is_one_line_before_anything_is_written(tmp_path, capsys, table, case):
    text, needle = BAD[case]
    study, out = tmp_path / "bad.toml", tmp_path / "out"
    study.write_text(text)
    code = main(["run", "--study", str(study), "--budget", "8", "--executor", f"replay:{table}", "--out", str(out)])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and needle in line, line
    assert not out.exists()


@pytest.mark.parametrize("value, needle", [("1000000000", "must be at most 100"), ("-1", "must be at least 2"),
                                           ("2.5", "expected a whole number"), (str(2**70), "must be at most 100")])
def test_a_seeds_flag_out_of_range_is_one_line_at_once(tmp_path, capsys, table, value, needle):
    """--seeds 10**9 was a loop of a billion steps before the budget check; now one line."""
    study = tmp_path / "rel.toml"
    study.write_text(_study())
    code = main(["run", "--study", str(study), "--budget", "8", "--seeds", value, "--executor", f"replay:{table}",
                 "--out", str(tmp_path / "out")])
    assert code == 2 and needle in one_error_line(capsys.readouterr().err)


def test_seeds_at_the_edges_run_end_to_end(tmp_path, table):
    study, out = tmp_path / "edge.toml", tmp_path / "out"
    study.write_text(_study(f"[{LAST}]", f"confirm_start = {LAST - 100 - 1}", f"seed = {2**31 - 1}"))
    assert main(["run", "--study", str(study), "--budget", "8", "--executor", f"replay:{table}", "--out",
                 str(out)]) == 0
    plan = make_plan(load_study(study), 1000, 100)
    assert max(plan.confirm_seeds) <= LAST
    assert TrialSpec(seed=MAX_SEED).seed == LAST
    with pytest.raises(ValidationError):
        TrialSpec(seed=MAX_SEED + 1)
