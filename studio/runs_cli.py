"""`python -m studio runs [--json]`: the workspace's runs, newest first: what each trains, how far it got, and
its report card's verdict."""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from .runs import Run, list_runs
from .workspace import Workspace

HEADINGS = ("run", "name", "state", "owner", "preset", "model", "dataset", "steps", "loss", "verdict")


def register(commands) -> None:
    parser = commands.add_parser("runs", help="list the workspace's runs, newest first",
                                 description="List the workspace's runs, newest first, with their state, progress, "
                                             "last training loss and report card verdict.")
    parser.add_argument("--json", action="store_true", help="print a list of objects, one per run")
    parser.set_defaults(func=runs_command)


def runs_command(args) -> int:
    workspace = Workspace.at(args.workspace)
    runs = [describe(run) for run in list_runs(workspace)]
    if args.json:
        print(json.dumps(runs, ensure_ascii=False))
    elif runs:
        print(table(runs))
    else:
        print(f"No runs in {workspace.runs} yet. Start one with: python -m studio train --preset chatbot --data FILE")
    return 0


def describe(run: Run) -> dict:
    """One run as its files tell it; what they do not say is None."""
    from .evaluation import read_card

    status = run.status()
    try:
        config = run.config.to_dict()
    except (OSError, ValueError):  # a run.yaml edited by hand into nonsense must not hide the other runs
        config = {}
    metrics = run.metrics()
    progress = [m for m in metrics if "max_steps" in m]
    losses = [m["loss"] for m in metrics if "loss" in m]
    return {"id": run.id, "name": status.get("name"), "state": run.state, "owner": status.get("owner"),
            "preset": config.get("preset"), "model": config.get("model"), "dataset": config.get("dataset"),
            "steps_done": progress[-1]["step"] if progress else None,
            "steps_total": progress[-1]["max_steps"] if progress else None,
            "last_loss": losses[-1] if losses else None, "verdict": (read_card(run) or {}).get("verdict")}


def table(runs: list[dict]) -> str:
    rows = [HEADINGS] + [_cells(run) for run in runs]
    widths = [max(_width(row[i]) for row in rows) for i in range(len(HEADINGS))]
    return "\n".join("  ".join(cell + " " * (width - _width(cell)) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


def _cells(run: dict) -> list[str]:
    steps = f"{run['steps_done']}/{run['steps_total']}" if run["steps_done"] is not None else None
    loss = f"{run['last_loss']:.4f}" if run["last_loss"] is not None else None
    values = (run["id"], run["name"], run["state"], run["owner"], run["preset"], _short(run["model"]),
              _short(run["dataset"]), steps, loss, run["verdict"])
    return ["-" if value is None else str(value) for value in values]


def _short(spec: str | None) -> str | None:
    """A file or folder by its name: a whole path would push the other columns off the screen."""
    return Path(spec).name if spec and Path(spec).is_absolute() else spec


def _width(text: str) -> int:
    """Columns a terminal gives the text: two for each Chinese (wide) character, so the table stays aligned."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
