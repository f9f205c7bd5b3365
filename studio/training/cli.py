"""`python -m studio train RUN` — the command the job queue runs in a child process, and people can too."""
from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, TrainConfig
from ..runs import Run, create_run
from ..workspace import Workspace


def register(commands) -> None:
    parser = commands.add_parser("train", help="train a run in this process",
                                 description="Train a run folder, or a run.yaml (a new run folder is made for it).")
    parser.add_argument("run", help="a run folder, or a run.yaml file")
    parser.set_defaults(func=train_command)


def train_command(args) -> int:
    from .trainer import train_run

    workspace = Workspace.at(args.workspace)
    target = Path(args.run)
    try:
        if target.is_dir() and (target / "run.yaml").exists():
            run = Run(target)
        elif target.is_file():
            config = TrainConfig.load(target)
            run = Run(target.parent) if (target.parent / "status.json").exists() else create_run(workspace, config)
        else:
            print(f"error: {target} is neither a run folder nor a run.yaml file", flush=True)
            return 2
    except ConfigError as e:
        print(f"error: {target}: {e}", flush=True)
        return 2
    print(f"Run folder: {run.path}", flush=True)
    return 0 if train_run(run, workspace) in ("completed", "stopped") else 1
