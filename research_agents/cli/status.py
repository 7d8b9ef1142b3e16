"""`status OUT`: the trials table of a run directory (read-only)."""

from __future__ import annotations

import argparse

from rich.console import Console

from research_agents.cli.common import EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="print the trials table of a run directory")
    status.add_argument("out")
    status.add_argument("--storage", help="the run's --storage URL with its password (run.json keeps none; "
                        "or set PGPASSWORD)")


def command(args: argparse.Namespace, console: Console) -> int:
    from research_agents.console import trials_table
    from research_agents.session import open_run

    session = open_run(args.out, args.storage)
    records = session.store.records()
    console.print(trials_table(records, title=f"{session.study.name}: {len(records)} trials"))
    console.print(budget_line(records, session.run.budget), markup=False, highlight=False)
    return EXIT_OK


def budget_line(records, budget: int | None) -> str:
    """The budget spent in full-length runs, and the runs stopped early at a rung (how many, where)."""
    from collections import Counter

    from research_agents.fmt import fruns
    from research_agents.records import spent

    stopped = Counter(r.rung for r in records if r.status == "stopped")
    line = f"budget spent: {fruns(spent(records))}" + (f" of {budget}" if budget else "") + " full-length runs"
    if stopped:
        line += (f"; {sum(stopped.values())} search run(s) stopped early ("
                 + ", ".join(f"{n} at {q}%" for q, n in sorted(stopped.items(), key=lambda x: x[0] or 0))
                 + "): behind the arm's leader there by more than the margin")
    return line
