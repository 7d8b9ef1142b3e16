"""`python -m trainer run --spec SPEC.json --out DIR`: one trial, one metrics.json.

Exit 0 when the trial ran (diverged and stopped included: those are results); 2 on bad input, with one line
naming it: an invalid spec, an --out that cannot be written, a data source or tokenizer that
cannot be loaded (the reason also in metrics.json); 1 on an internal failure with the reason in
metrics.json. Never a traceback on stderr (metrics.json keeps it). Progress goes to stdout as one
JSON object per logged step, for whoever runs us.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import traceback
from pathlib import Path

from pydantic import ValidationError


def _run(args: argparse.Namespace) -> int:
    from trainer.spec import TrialSpec, format_validation_error

    try:
        raw = json.loads(Path(args.spec).read_text())
        spec = TrialSpec.model_validate(raw)
    except OSError as err:
        print(f"error: cannot read spec {args.spec}: {err.strerror}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as err:
        print(f"error: spec {args.spec} is not valid JSON: {err.msg} at line {err.lineno}", file=sys.stderr)
        return 2
    except ValidationError as err:
        print(f"error: invalid spec: {format_validation_error(err)}", file=sys.stderr)
        return 2

    out = Path(args.out)
    try:  # before any work: a trial whose result cannot be written is not worth training
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        print(f"error: cannot write to --out {out}: {err.strerror or err}", file=sys.stderr)
        return 2

    from trainer.data import DataError
    from trainer.metrics import FinalMetrics, TrialMetrics, write_metrics
    from trainer.train import train

    def log(entry: dict) -> None:
        print(json.dumps({"event": "step", "steps": spec.steps, **entry}), flush=True)

    try:
        metrics = train(spec, out, on_log=None if args.quiet else log)
    except Exception as err:  # recorded, never lost: the loop reads the reason from metrics.json
        reason = f"{type(err).__name__}: {err}"
        bad_data = isinstance(err, DataError)
        code, what = (2, "data") if bad_data else (1, "trial failed")
        line = f"error: {what}: {' '.join((str(err) if bad_data else reason).split())}"
        try:
            write_metrics(out, TrialMetrics(spec=spec, status="failed", reason=reason,
                                            traceback=traceback.format_exc(), final=FinalMetrics(), history=[]))
        except OSError as write_err:  # the same fault may stop the record too: say both, once
            line += f" (and metrics.json could not be written: {write_err.strerror or write_err})"
        print(line, file=sys.stderr)
        return code
    print(json.dumps({"event": "done", "status": metrics.status, **metrics.final.model_dump()}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train one trial from a spec file")
    run.add_argument("--spec", required=True, help="TrialSpec JSON file")
    run.add_argument("--out", required=True, help="directory for metrics.json")
    run.add_argument("--quiet", action="store_true", help="no per-step progress on stdout")
    sub.add_parser("schema", help="print the TrialSpec JSON schema")
    args = parser.parse_args(argv)
    if args.command == "schema":
        from trainer.spec import TrialSpec

        print(json.dumps(TrialSpec.model_json_schema(), indent=1))
        return 0
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
