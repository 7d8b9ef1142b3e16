"""Command line: run | report | status | list (one module each; `main` parses and dispatches).

Exit codes: 0 success; 2 bad input, one line naming what is wrong and nothing written (a value,
a study, an --out or --storage that cannot be used, a run directory whose store is missing or
damaged, another run holding the same --out); 1 anything else: a run in which no trial completed,
an interrupted run (its report is written and `run` again resumes it; a second Ctrl-C during that
clean-up ends it at once, in one line), a write the file system refused (disk full, read-only: one
line, the recorded trials kept, `run` again resumes).

The store is the record of a run: `status` and `report` open it read-only, and no command ever
makes a new, empty store in place of one that is missing or damaged.
"""

from research_agents.cli.main import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_OK, UsageError, build_parser, experiments_dir, main
from research_agents.cli.run import llm_config

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAIL", "EXIT_OK", "UsageError", "build_parser", "experiments_dir", "llm_config",
           "main"]
