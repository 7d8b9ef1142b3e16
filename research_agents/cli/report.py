"""`report OUT`: rebuild the reports of a run directory from its store (which it only reads)."""

from __future__ import annotations

import argparse

from rich.console import Console

from research_agents.cli.common import EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="rebuild the reports of a run directory from its store")
    report.add_argument("out")
    report.add_argument("--storage", help="the run's --storage URL with its password (run.json keeps none; "
                        "or set PGPASSWORD)")


def command(args: argparse.Namespace, console: Console) -> int:
    from research_agents.cli.final_report import write_report
    from research_agents.session import check_writable, open_run

    session = open_run(args.out, args.storage)
    check_writable(session.out, "report:")  # it rewrites the reports (never the store)
    findings = write_report(session, session.run.plan())
    console.print(f"report: {session.out / 'report.md'} ({findings.recommendation.confidence} confidence)",
                  markup=False)
    return EXIT_OK
