"""`python -m studio train RUN` — the command the job queue runs in a child process, and people can too,
on several GPUs with `accelerate launch -m studio train RUN`."""
from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, TrainConfig
from ..runs import Run, create_run, run_folder_or_id
from ..workspace import Workspace


def register(commands) -> None:
    parser = commands.add_parser("train", help="train a run in this process",
                                 description="Train a run folder (or a run id), or a run.yaml (a new run folder is "
                                             "made for it).")
    parser.add_argument("run", help="a run folder, a run id in the workspace, or a run.yaml file")
    parser.set_defaults(func=train_command)


def train_command(args) -> int:
    from .trainer import is_main_process, train_run

    workspace = Workspace.at(args.workspace)
    target = Path(args.run)
    try:
        if target.is_file():
            config = TrainConfig.load(target)
            run = Run(target.parent) if (target.parent / "status.json").exists() else _new_run(workspace, config)
        else:
            run = run_folder_or_id(workspace, args.run)
    except FileNotFoundError as e:
        print(f"error: {e}", flush=True)
        return 2
    except ConfigError as e:
        print(f"error: {target}: {e}", flush=True)
        return 2
    if is_main_process():
        print(f"Run folder: {run.path}", flush=True)
    ended = train_run(run, workspace)
    _leave_process_group()
    return 0 if ended in ("completed", "stopped") else 1


def _leave_process_group() -> None:
    """In a multi-process run, part from the others cleanly; a process that just exits aborts the launcher."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _new_run(workspace: Workspace, config: TrainConfig) -> Run:
    """A run folder for a bare run.yaml; under `accelerate launch` the main process makes it and tells the others."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    from .trainer import process_count

    if process_count() == 1:
        return create_run(workspace, config, state="running")

    process = PartialState(cpu=not torch.cuda.is_available())
    folder = [str(create_run(workspace, config, state="running").path) if process.is_main_process else None]
    broadcast_object_list(folder)
    return Run(Path(folder[0]))
