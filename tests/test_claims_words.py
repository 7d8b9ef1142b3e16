"""The seeds' claims: analysis returns data (a verdict, its comparisons and numbers, a code for what
a run lacks), report.claims words it. Every claim, in every branch the scenarios below reach, renders
exactly as analysis.claims wrote it at 151bafb (tests/claims_words_at_151bafb.json: each result as
comparison_summary.json shows it, and the report's "Seed claims" section)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from research_agents.analysis.claims import ClaimResult, Run, evaluate
from research_agents.analysis.findings import analyze
from research_agents.config import Plan, Study
from research_agents.fmt import json_safe
from research_agents.records import TrialRecord

PINNED = Path(__file__).with_name("claims_words_at_151bafb.json")
ALL = ["muon_beats_adam", "muon_wider_lr_range", "ns_3_4_as_good_as_5_plus", "lower_muon_momentum_better",
       "warmup_helps_muon", "momentum_warmup_helps_muon", "muon_higher_svd_entropy"]
WIGGLE = [0.001, -0.002, 0.0015, -0.001, 0.0005, 0.0]


def _run(label, seed, loss, diagnostics=(), **spec) -> Run:
    rec = TrialRecord(id=seed, order=seed, arm="muon", params={"name": label}, seed=seed, origin="grid",
                      phase="search", round=1, status="completed", val_loss=loss, run_dir="")
    return Run(rec, label, {"optimizer": "muon", "lr": 0.02, "adamw_lr": 0.002, "momentum": 0.95,
                            "momentum_schedule.kind": "fixed", "ns_steps": 5, "warmup_ratio": 0.05, **spec}, [],
               list(diagnostics))


def _config(label, loss, k, n=6, **spec) -> list[Run]:
    """One configuration on n seeds, a seed-to-seed noise of about 0.001 (different per config)."""
    w = WIGGLE[k:] + WIGGLE[:k]
    return [_run(label, s, loss + w[s % 6], **spec) for s in range(n)]


def _sweep(muon_flat: bool) -> list[Run]:
    runs = []
    for lr in (0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08):
        bump = 0.01 * (lr != 0.05) if muon_flat else 0.3 * abs(math.log(lr / 0.05))
        runs += [_run(f"muon_{lr}", s, 4.0 + w + bump, lr=lr, adamw_lr=lr / 10) for s, w in enumerate(WIGGLE[:3])]
    for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2):
        runs += [_run(f"adam_{lr}", s, 4.3 + w + 0.5 * abs(math.log10(lr / 1e-3)), optimizer="adamw", lr=lr)
                 for s, w in enumerate(WIGGLE[:3])]
    return runs


def _entropy(value: float) -> list[dict]:
    return [{"step": 1, "svd_entropy": {"w1": value - 0.1}}, {"step": 2, "svd_entropy": {"w1": value, "w2": value}}]


def _schedules(better: float, worse: float) -> list[Run]:
    return (_config("fixed_095", 4.0, 0) + _config("fixed_090", 4.1, 1, momentum=0.9)
            + _config("linear_warmup", better, 2, **{"momentum_schedule.kind": "linear",
                                                     "momentum_schedule.warmup_steps": 10})
            + _config("step_warmup", worse, 3, **{"momentum_schedule.kind": "step"}))


def scenarios() -> dict[str, list[Run]]:
    """Runs that reach every claim's branches: agrees, disagrees, inconclusive and not tested."""
    knobs = (_config("ns5", 4.0, 0) + _config("m90", 3.9, 2, momentum=0.9) + _config("m99", 4.2, 3, momentum=0.99)
             + _config("nowarm", 4.3, 4, warmup_ratio=0.0))
    return {
        "nothing": [],
        "knobs agree": knobs + _config("ns3", 4.001, 1, ns_steps=3),
        "knobs disagree": (
            _config("ns5", 4.0, 0)
            + _config("m90", 4.2, 2, momentum=0.9)
            + _config("m99", 3.9, 3, momentum=0.99)
            + _config("nowarm", 3.7, 4, warmup_ratio=0.0)
            + _config("ns3", 4.3, 1, ns_steps=3)
        ),
        "knobs unclear": (
            _config("ns5", 4.0, 0, n=3)
            + _config("ns3", 4.02, 3, n=3, ns_steps=3)
            + _config("m90", 4.0, 1, n=2, momentum=0.9, lr=0.03)
            + _config("m99", 4.0, 2, n=2, momentum=0.99, lr=0.04)
        ),
        "sweeps flat muon": _sweep(muon_flat=True),
        "sweeps narrow muon": _sweep(muon_flat=False),
        "one config each": (_config("muon", 4.3, 0) + _config("adam", 4.0, 1, optimizer="adamw", lr=0.001)),
        "schedules": _schedules(better=3.9, worse=4.2),
        "schedules even": _schedules(better=4.0, worse=4.0005),
        "entropy higher": (
            [_run("adam", s, 4.3 + w, optimizer="adamw", diagnostics=_entropy(0.7 + w)) for s, w in enumerate(WIGGLE)]
            + [_run("muon_a", s, 4.0 + w, diagnostics=_entropy(0.9 + 2 * w)) for s, w in enumerate(WIGGLE)]
            + [_run("muon_b", s, 4.1 + w, lr=0.03, diagnostics=_entropy(0.85 + 3 * w)) for s, w in enumerate(WIGGLE)]
        ),
        "entropy mixed": (
            [_run("adam", s, 4.3 + w, optimizer="adamw", diagnostics=_entropy(0.7 + w)) for s, w in enumerate(WIGGLE)]
            + [_run("muon_a", s, 4.0 + w, diagnostics=_entropy(0.9 + 2 * w)) for s, w in enumerate(WIGGLE)]
            + [_run("muon_b", s, 4.1 + w, lr=0.03, diagnostics=_entropy(0.5 + 2 * w)) for s, w in enumerate(WIGGLE)]
        ),
    }


def results() -> dict[str, list[ClaimResult]]:
    study = Study.model_validate({"name": "c", "question": "q", "arms": {"muon": {}}, "claims": ALL})
    out = {}
    for name, runs in scenarios().items():
        records = [r.record.model_copy(update={"id": i, "order": i}) for i, r in enumerate(runs, 1)]
        fnd = analyze(study, records, Plan(30, [], 30, {"muon": 30}))
        out[name] = evaluate(study, runs, fnd)
    return out


def test_every_claim_renders_as_it_did_at_151bafb():
    from research_agents.report.claims import claim_json
    from research_agents.report.sections import claims_section

    pinned = json.loads(PINNED.read_text())
    got = results()
    assert set(got) == set(pinned)
    for name, rs in got.items():
        # the data round-trips through JSON, and the words come from the data alone
        rs = [ClaimResult.model_validate_json(r.model_dump_json()) for r in rs]
        assert json.loads(json.dumps(json_safe([claim_json(r) for r in rs]))) == pinned[name]["claims"], name
        assert claims_section(rs) == pinned[name]["section"], name
    verdicts = {(name, r.claim): r.verdict for name, rs in got.items() for r in rs}
    assert {v for (_, c), v in verdicts.items()} == {"agrees", "disagrees", "inconclusive"}
    for claim in ALL:  # every claim is tested somewhere, and left untested somewhere
        assert verdicts[("nothing", claim)] == "inconclusive"
        assert any(v != "inconclusive" for (_, c), v in verdicts.items() if c == claim), claim


def test_a_claim_result_carries_no_sentence():
    for rs in results().values():
        for r in rs:
            assert "statistics" not in r.model_dump() and "details" not in r.model_dump()


if __name__ == "__main__":  # writes the pin (run once, at 151bafb, where ClaimResult carried its words)
    from research_agents.report.sections import claims_section

    pin = {name: {"claims": json_safe([r.model_dump(mode="json") for r in rs]), "section": claims_section(rs)}
           for name, rs in results().items()}
    PINNED.write_text(json.dumps(pin, indent=1, sort_keys=True) + "\n")
