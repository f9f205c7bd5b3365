"""A run folder (workspace/runs/<run-id>/): the complete, restart-proof record of one training run.

    run.yaml       the TrainConfig            status.json   state, owner, times, pid, message
    metrics.jsonl  one line per logged step   gpu.jsonl     one line per memory sample
    train.log      the child's output         checkpoints/  for resuming
    adapter/       the peft adapter           curves.png    loss, learning rate, memory
    stop           exists while a stop is requested

The training child writes status.json while it lives; the job queue writes it before (queued) and after
(when the child died without saying how it ended). There is never more than one writer at a time.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

from .config import ConfigError, TrainConfig
from .messages import Message, fields, text_of
from .workspace import Workspace, read_jsonl, safe_name, write_json

ACTIVE = ("queued", "running")
LOCAL_USER = "local"  # who starts every run when the studio has no logins


# A run's state as a word in a sentence for people: a Message, so the page shows it in the visitor's language.
_STATE_WORDS = {"queued": Message("queued"), "running": Message("running"), "completed": Message("completed"),
                "failed": Message("failed"), "stopped": Message("stopped"), "interrupted": Message("interrupted"),
                "damaged": Message("damaged")}


def state_word(state: str) -> Message | str:
    return _STATE_WORDS.get(state, state)


class Run:
    def __init__(self, path: Path):
        self.path = Path(path)

    # ---- the files ----
    @property
    def id(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "run.yaml"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def curves_path(self) -> Path:
        return self.path / "curves.png"

    @property
    def stop_path(self) -> Path:
        return self.path / "stop"

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.load(self.config_path)

    def status(self) -> dict:
        """What status.json says: {} before it is written, a 'damaged' status when it cannot be read."""
        try:
            status = json.loads((self.path / "status.json").read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:  # cut short, not JSON, not UTF-8: a full disk, a hand edit, a failing drive
            status = None
        return status if isinstance(status, dict) else self._damaged_status()

    def _damaged_status(self) -> dict:
        """Stands in for an unreadable status.json, so the run is shown and can be resumed from its checkpoints.
        Its owner is lost with it: only an administrator may act on the run."""
        return {"state": "damaged", **fields(Message(
            "This run's status file (status.json) is damaged, so its state and owner are lost. {resume} With its "
            "owner unknown, only an administrator can resume or delete it.", resume=self.resume_note()))}

    def set_status(self, **changes) -> dict:
        status = self.status()
        if "message" in changes:  # a Message is saved with its template; an earlier message's must not outlive it
            status = {k: v for k, v in status.items() if not k.startswith("message_")}
            changes.update(fields(changes["message"]))
        status = {**status, **changes}
        write_json(self.path / "status.json", status)
        return status

    @property
    def state(self) -> str:
        return self.status().get("state", "unknown")

    def metrics(self) -> list[dict]:
        return read_jsonl(self.path / "metrics.jsonl")

    def gpu_samples(self) -> list[dict]:
        return read_jsonl(self.path / "gpu.jsonl")

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 20_000))
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint; one cut short by a kill has no trainer_state.json yet."""
        checkpoints = [p for p in self.checkpoints_dir.glob("checkpoint-*")
                       if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()]
        return max(checkpoints, key=lambda p: int(p.name.split("-")[-1]), default=None)

    def resume_note(self) -> Message:
        """What Resume will do: a run killed before its first checkpoint trains again from the start."""
        if self.latest_checkpoint():
            return Message("Resume continues from its last checkpoint.")
        return Message("It saved no checkpoint, so Resume starts it again from the beginning.")

    @property
    def evaluation(self) -> dict:
        """The latest report card asked of the job queue: its state, data, who asked and when."""
        return self.status().get("evaluation") or {}

    def job(self) -> tuple[str, str, float] | None:
        """What the run waits for or does in the job queue: ("train" or "eval", "queued" or "running", since when);
        None when it has no job."""
        status = self.status()
        if status.get("state") in ACTIVE:
            return "train", status["state"], status.get("queued_at", 0)
        evaluation = status.get("evaluation") or {}
        if evaluation.get("state") in ACTIVE:
            return "eval", evaluation["state"], evaluation.get("queued_at", 0)
        return None

    def has_adapter(self) -> bool:
        return (self.adapter_dir / "adapter_config.json").exists()

    def request_stop(self) -> None:
        self.stop_path.touch()

    @property
    def stop_requested(self) -> bool:
        return self.stop_path.exists()


def create_run(workspace: Workspace, config: TrainConfig, owner: str = LOCAL_USER, name: str = "",
               state: str = "queued", folder: Path | None = None) -> Run:
    """A new run folder holding run.yaml and its status: 'queued' for the job queue, 'running' when the caller
    trains it at once (the command line), so the queue leaves it alone. With `folder`, that folder (new or
    empty) instead of a new one in the workspace."""
    config.validate()
    path = Path(folder) if folder else _new_run_path(workspace, name or config.preset)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):  # never mix two runs' files, or others'
        raise FileExistsError(f"{path} already exists and is not an empty folder. Give a new or empty folder for "
                              "the run.")
    path.mkdir(parents=True, exist_ok=bool(folder))  # a made-up name taken meanwhile by another run: an error
    run = Run(path)
    config.save(run.config_path)
    run.set_status(state=state, owner=owner, name=name or config.preset, created=time.time(), queued_at=time.time())
    return run


def _new_run_path(workspace: Workspace, name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = safe_name(f"{stamp}-{name}", stamp)
    path, n = workspace.runs / base, 1
    while path.exists():
        n += 1
        path = workspace.runs / f"{base}-{n}"
    return path


def list_runs(workspace: Workspace) -> list[Run]:
    """Every run, newest first."""
    runs = [Run(p) for p in workspace.runs.iterdir() if (p / "run.yaml").exists()]
    return sorted(runs, key=lambda r: r.status().get("created", 0), reverse=True)


def run_folder_or_id(workspace: Workspace, spec: str | os.PathLike) -> Run:
    """What a command's RUN argument names: a run folder (it holds run.yaml), or the id of a run in the workspace."""
    path = Path(spec).expanduser()
    if (path / "run.yaml").exists():
        return Run(path.resolve())
    try:
        return find_run(workspace, str(spec))
    except FileNotFoundError:
        raise FileNotFoundError(Message("No run folder at '{spec}' and no run with that id in {folder}. Give the path "
                                        "of a run folder (it holds run.yaml) or a run id.", spec=str(spec),
                                        folder=str(workspace.runs))) from None


def start_run(workspace: Workspace, spec: str) -> Run:
    """The run that start_from names (a run folder or id), or a ConfigError naming the setting."""
    try:
        return run_folder_or_id(workspace, spec)
    except FileNotFoundError as e:
        raise ConfigError(Message("{field}: {error}", field="start_from", error=text_of(e))) from None


def start_adapter(workspace: Workspace, config: TrainConfig) -> Path | None:
    """The adapter a run goes on training (config.start_from), checked to be a finished run's adapter for the same
    base model; None when the run starts a new adapter."""
    if not config.start_from:
        return None
    source = start_run(workspace, config.start_from)
    if not source.has_adapter():
        raise ConfigError(Message("{field}: run {run} has no adapter yet; pick a run that has finished",
                                  field="start_from", run=source.id))
    if source.config.model != config.model:
        raise ConfigError(Message("{field}: run {run} trained an adapter for {theirs}, which does not fit {model}; "
                                  "pick {theirs} as the base model, or another run", field="start_from", run=source.id,
                                  theirs=source.config.model, model=config.model))
    return source.adapter_dir


def find_run(workspace: Workspace, run_id: str) -> Run:
    path = workspace.inside(workspace.runs / safe_name(run_id))
    if not (path / "run.yaml").exists():
        raise FileNotFoundError(Message("No run called '{run}' in {folder}", run=run_id, folder=str(workspace.runs)))
    return Run(path)
