"""`python -m studio train RUN` — the command the job queue runs in a child process, and people can too,
on several GPUs with `accelerate launch -m studio train RUN`; and `python -m studio train --preset NAME --data FILE`,
a new run made as the Train tab makes it and trained at once."""
from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, TrainConfig, check_data_fits, config_from_preset, load_presets
from ..runs import Run, create_run, run_folder_or_id, start_adapter, start_run
from ..workspace import Workspace

# The options that choose a setting of a new run, named as TrainConfig names it.
SETTINGS = ("model", "max_steps", "epochs", "learning_rate", "start_from")
NEW_RUN_OPTIONS = ("preset", "data", "run_dir") + SETTINGS


class BadCommand(ValueError):
    """The command line asks for something that cannot be done as asked."""


def register(commands) -> None:
    parser = commands.add_parser("train", help="train a run in this process",
                                 description="Train a run folder (or a run id), or a run.yaml (a new run folder is "
                                             "made for it); or a new run from a preset and a dataset.")
    parser.add_argument("run", nargs="?", metavar="RUN",
                        help="a run folder, a run id in the workspace, or a run.yaml file")
    new = parser.add_argument_group("a new run", "Instead of RUN: the Train tab's choices. A small dataset gets more "
                                                 "passes and a higher learning rate unless you set them here.")
    new.add_argument("--preset", metavar="NAME", help="a built-in preset or one saved in the workspace")
    new.add_argument("--data", metavar="FILE", type=_absolute, help="a data file or a saved dataset's name")
    new.add_argument("--model", type=_absolute, help="the base model (default: the embedded one)")
    new.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimizer steps")
    new.add_argument("--epochs", type=float, metavar="E", help="passes over the data")
    new.add_argument("--learning-rate", type=float, metavar="LR")
    new.add_argument("--start-from", metavar="RUN", help="a finished run (folder or id) whose adapter a preference "
                                                        "(DPO) run goes on training; its base model is the default")
    new.add_argument("--run-dir", metavar="DIR", help="the run folder (new or empty; default: one in the workspace)")
    parser.set_defaults(func=train_command)


def train_command(args) -> int:
    from ..data import DatasetError
    from .trainer import is_main_process, train_run

    workspace = Workspace.at(args.workspace)
    try:
        run = _new_run_from_preset(args, workspace) if _asks_for_new_run(args) else _named_run(args.run, workspace)
    except (BadCommand, ConfigError, DatasetError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", flush=True)
        return 2
    if is_main_process():
        print(f"Run folder: {run.path}", flush=True)
    ended = train_run(run, workspace)
    _leave_process_group()
    return 0 if ended in ("completed", "stopped") else 1


def _asks_for_new_run(args) -> bool:
    new = any(getattr(args, option) is not None for option in NEW_RUN_OPTIONS)
    if args.run and new:
        raise BadCommand(f"Give either a run to train ({args.run}) or a new run's --preset and --data, not both.")
    if not args.run and not new:
        raise BadCommand("Say what to train: a run folder, a run id or a run.yaml, or a new run with --preset NAME "
                         "--data FILE.")
    return new


def _named_run(spec: str, workspace: Workspace) -> Run:
    target = Path(spec)
    if not target.is_file():
        return run_folder_or_id(workspace, spec)
    try:
        config = TrainConfig.load(target)
    except ConfigError as e:
        raise ConfigError(f"{target}: {e}") from None
    return Run(target.parent) if (target.parent / "status.json").exists() else _new_run(workspace, config)


def _new_run_from_preset(args, workspace: Workspace) -> Run:
    """The run the Train tab would make from this preset and dataset, with the small-data rule applied."""
    from ..data import is_pairs, load_records
    from . import small_data
    from .trainer import is_main_process

    if not (args.preset and args.data):
        raise BadCommand("A new run needs both --preset NAME and --data FILE (a data file or a saved dataset's name).")
    presets = load_presets(workspace.root / "presets")
    if args.preset not in presets:
        raise BadCommand(f"No preset called '{args.preset}'. Known presets: {', '.join(presets)}.")
    chosen = {setting: getattr(args, setting) for setting in SETTINGS if getattr(args, setting) is not None}
    if args.start_from and not args.model:  # an adapter fits the base model it was trained on
        chosen["model"] = start_run(workspace, args.start_from).config.model
    config = config_from_preset(presets[args.preset], dataset=args.data, **chosen)
    records = load_records(config.dataset, workspace)[0]
    check_data_fits(config, is_pairs(records))  # now, not once the model is loaded
    start_adapter(workspace, config)
    config, schedule = small_data.apply(config, len(records), set(chosen))
    if is_main_process():
        print(schedule.summary(), flush=True)
        if schedule.raised:
            print("To choose them yourself here: --epochs, --max-steps or --learning-rate.", flush=True)
    return _new_run(workspace, config, Path(args.run_dir).resolve() if args.run_dir else None)


def _absolute(spec: str) -> str:
    """A path made absolute, so the run.yaml works from any folder (Resume in the app); a name kept as it is."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _leave_process_group() -> None:
    """In a multi-process run, part from the others cleanly; a process that just exits aborts the launcher."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _new_run(workspace: Workspace, config: TrainConfig, folder: Path | None = None) -> Run:
    """A run folder for a new run; under `accelerate launch` the main process makes it and tells the others."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    from .trainer import process_count

    if process_count() == 1:
        return create_run(workspace, config, state="running", folder=folder)

    process = PartialState(cpu=not torch.cuda.is_available())
    made = [str(create_run(workspace, config, state="running", folder=folder).path) if process.is_main_process
            else None]
    broadcast_object_list(made)
    return Run(Path(made[0]))
