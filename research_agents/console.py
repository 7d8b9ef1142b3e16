"""The live view of a run: current trial, budget used, a results table (rich).

On a terminal it is a rich Live display; elsewhere (CI, pipes) it prints one line per event,
so logs stay readable.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from research_agents.fmt import f4, fmt_value
from research_agents.records import COUNTED, TrialRecord, spent


def trials_table(records: list[TrialRecord], limit: int | None = None, title: str = "trials") -> Table:
    table = Table(title=escape(title), show_lines=False)  # study, arm and LLM text is never rich markup
    for col in ("#", "round", "phase", "arm", "origin", "seed", "status", "val loss", "params"):
        table.add_column(col, justify="right" if col in ("#", "round", "seed", "val loss") else "left")
    shown = records[-limit:] if limit else records
    for r in shown:
        loss = f4(r.val_loss) if r.val_loss is not None else "-"
        params = " ".join(f"{k}={fmt_value(v)}" for k, v in r.params.items())
        style = {"completed": None, "running": "cyan"}.get(r.status, "yellow")
        status = f"stopped {r.rung}%" if r.rung is not None else r.status  # the rung it stopped at
        table.add_row(*map(escape, (str(r.order), str(r.round), r.phase, r.arm, r.origin, str(r.seed), status,
                                    loss, params)), style=style)
    return table


class RunDisplay:
    """Hooks for ResearchLoop that keep the console up to date."""

    def __init__(self, console: Console, budget: int, records: list[TrialRecord]):
        self.console = console
        self.live_mode = console.is_terminal
        self.records = list(records)
        self.budget = Progress(TextColumn("budget"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                               console=console)
        self.budget_task = self.budget.add_task("budget", total=budget,
                                                completed=int(spent(records)))  # whole full-length runs
        self.trial = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[loss]}"), console=console)
        self.trial_tasks: dict[int, TaskID] = {}  # record id -> its progress bar (several when trials run in parallel)
        self.live = Live(self._render(), console=console, refresh_per_second=4) if self.live_mode else None

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.__exit__(*exc)

    def _render(self):
        return Group(self.budget, self.trial, trials_table(self.records, limit=12, title="latest trials"))

    def _refresh(self):
        if self.live:
            self.live.update(self._render())

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def trial_start(self, r: TrialRecord) -> None:
        self.records.append(r)
        self.trial_tasks[r.id] = self.trial.add_task(escape(f"trial {r.order} {r.arm} s{r.seed}"), total=None, loss="")
        if not self.live_mode:
            swapped = f" with the other leader's {r.swap.settings}" if r.swap is not None else ""
            self.message(f"trial {r.order}: {r.phase} {r.arm} seed {r.seed} ({r.origin}) {r.params}{swapped}")
        self._refresh()

    def progress(self, r: TrialRecord, event: dict) -> None:
        task = self.trial_tasks.get(r.id)
        if event.get("event") == "step" and task is not None:
            loss = f"loss {event['train_loss']:.3f}"
            if event.get("val_loss") is not None:
                loss += f"  val {event['val_loss']:.3f}"
            self.trial.update(task, total=event["steps"], completed=event["step"], loss=loss)

    def trial_end(self, r: TrialRecord) -> None:
        self.records = [x for x in self.records if x.id != r.id] + [r]
        task = self.trial_tasks.pop(r.id, None)
        if task is not None:
            self.trial.remove_task(task)
        if r.status in COUNTED:  # a run stopped at a rung: its share of a full run
            self.budget.advance(self.budget_task, r.cost)
        if not self.live_mode:
            loss = f"{r.val_loss:.4f}" if r.val_loss is not None else "-"
            why = f" ({r.reason})" if r.reason and r.status != "completed" else ""
            self.message(f"trial {r.order}: {r.status} val_loss {loss}{why}")
        self._refresh()
