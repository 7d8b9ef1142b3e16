#!/usr/bin/env bash
# The regression oracle of a refactor, in about two minutes: a study through the real loop, store,
# analysis and reports on the replay executor (policy, tpe and random at budgets 20 and 40), once
# at a base revision and once in this working tree, then compared: results.csv and summary.json
# (scripts/compare_runs.py) and every round report and report.md (run paths normalised).
#   [ORACLE_STUDY=FILE] [ORACLE_TABLE=CSV] scripts/replay_oracle.sh [BASE_REV]      (default: HEAD)
# The study file and the table are taken from this working tree and given to both trees (default:
# experiments/muon_vs_adamw_wen.toml, the old default study, on benchmarks/data/replay_tiny.csv,
# the table built for it; the default study replays on benchmarks/data/replay_fair.csv).
# Prints "ORACLE: all reports identical" or the differing files; exits 1 on a difference.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
REV=${1:-HEAD}
WORK=$(mktemp -d /tmp/replay-oracle-XXXX)
cp "${ORACLE_STUDY:-experiments/muon_vs_adamw_wen.toml}" "$WORK/study.toml" || exit 2
cp "${ORACLE_TABLE:-benchmarks/data/replay_tiny.csv}" "$WORK/table.csv" || exit 2
git worktree add -q --detach "$WORK/base" "$REV" || exit 2
studies() {  # $1: source tree, $2: output folder
  for pl in policy tpe random; do for b in 20 40; do
    (cd "$1" && PYTHONPATH="$1" "$PY" -m research_agents run --budget $b --planner $pl --study "$WORK/study.toml" \
        --executor "replay:$WORK/table.csv" --out "$2/$pl-$b" > "$2/$pl-$b.log" 2>&1) \
      || echo "run $pl $b failed in $1 (log $2/$pl-$b.log)"
  done; done
}
mkdir -p "$WORK/a" "$WORK/b"
studies "$WORK/base" "$WORK/a"
studies "$ROOT" "$WORK/b"
fail=0
for pl in policy tpe random; do for b in 20 40; do
  A=$WORK/a/$pl-$b; B=$WORK/b/$pl-$b
  "$PY" scripts/compare_runs.py "$A" "$B" | tail -1 | sed "s/^/$pl-$b: /" | grep -q IDENTICAL || { fail=1; "$PY" scripts/compare_runs.py "$A" "$B" | sed "s/^/$pl-$b: /" | head -5; }
  for f in $(cd "$A" && ls rounds/*.md) report.md; do
    cmp -s <(sed "s#$A#OUT#g" "$A/$f") <(sed "s#$B#OUT#g" "$B/$f") || { echo "$pl-$b: $f differs"; fail=1; }
  done
done; done
git worktree remove --force "$WORK/base"
echo "runs kept in $WORK"
if [ $fail = 0 ]; then echo "ORACLE: all reports identical"; else echo "ORACLE: DIFFERENCES"; exit 1; fi
