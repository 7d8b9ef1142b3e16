"""`list`: the studies in experiments/ (light: no statistics, no plotting)."""

from __future__ import annotations

import argparse

from rich.console import Console

from research_agents.cli.common import EXIT_OK, experiments_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("list", help="list the studies in experiments/")


def command(args: argparse.Namespace, console: Console) -> int:
    from rich.markup import escape
    from rich.table import Table

    from research_agents.config import load_study

    table = Table(title=escape(f"studies in {experiments_dir()}"))
    for col in ("study", "preset", "scales", "arms", "experiments", "question"):
        table.add_column(col, no_wrap=col == "study")
    for path in sorted(experiments_dir().glob("*.toml")):
        try:
            s = load_study(path)
            table.add_row(*map(escape, (s.name, s.preset, ", ".join(s.scales) or "-", ", ".join(s.arms),
                                        str(len(s.points)) if s.points else "search", s.question)))
        except ValueError as e:
            table.add_row(escape(path.stem), "-", "-", "-", "-", f"[red]invalid: {escape(str(e))}[/red]")
    console.print(table)
    return EXIT_OK
