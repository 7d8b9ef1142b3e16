"""Compare two run directories' results.csv and summary.json, ignoring wall-clock times.

    python scripts/compare_runs.py RUN_A RUN_B

The regression oracle of a refactor: on CPU the same specs and seeds give the same numbers, so
every column of results.csv but `wall_time_s`, and every value of summary.json but the timing
ones (keys with "time" in their name, and the set-up's count of runs trained ahead and adopted,
which depends on which trial ends first), must be identical. Exits 1 and prints the differences
otherwise.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

TIMING = ("wall_time_s", "time_s", "wall_time_s_mean")


def _rows(run: Path) -> list[dict]:
    with (run / "results.csv").open() as fh:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]


# summary.json's set-up line counts how many runs trained ahead were adopted: which guess a round
# makes depends on which trial ends first (timing), never the numbers, so it is compared as timing
TIMING_KEYS = ("trials",)


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if "time" not in k and k not in TIMING_KEYS}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _diff(a, b, where="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in {'A' if k in a else 'B'}" for k in set(a) ^ set(b)]
        for k in sorted(set(a) & set(b)):
            out += _diff(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def main(argv: list[str]) -> int:
    a, b = Path(argv[0]), Path(argv[1])
    problems = [f"results.csv{d}" for d in _diff(_rows(a), _rows(b))]
    sa, sb = (_strip(json.loads((r / "summary.json").read_text())) for r in (a, b))
    problems += [f"summary.json{d}" for d in _diff(sa, sb)]
    for p in problems[:40]:
        print(p)
    n = len(_rows(a))
    print(f"{'IDENTICAL' if not problems else 'DIFFERENT'}: {n} trials, {len(problems)} difference(s) "
          "(wall-clock times ignored)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
