"""Merge a run's LoRA adapter into its base model and save a standalone model folder (and its zip).

A new export takes an earlier one's place only once it is whole and has passed its check (see place.py).

The base is always reloaded unquantised, whatever precision the run trained in: merging into 4-bit weights would
round most of the adapter away. The merged model is saved in the base's own 16-bit dtype (see _Base.dtype).
"""
from __future__ import annotations

import errno
import shutil
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..messages import Message
from ..models import allow_remote_code, free_memory, load_base_model, load_tokenizer, resolve_model
from ..runs import Run
from ..workspace import Workspace, safe_name, write_json
from .archive import export_folder, zip_folder
from .card import write_card
from .checks import (MARKER, ExportError, NotEnoughSpace, base_parameters, human_size, require_adapter,
                     require_free_space, require_replaceable, space_needed)
from .dataset import first_examples
from .place import failed_folder, recover, staging_folder, swap_in
from .verify import DATASET_EXAMPLES, MergeCheck, MergeChecker

Progress = Callable[[float, str], None]

MAX_SHARD_SIZE = "2GB"  # large models are saved in several files, which downloads and loaders handle better


@dataclass(frozen=True)
class ExportResult:
    run_id: str
    merged_dir: Path
    zip_path: Path | None
    card_path: Path
    check: MergeCheck
    size_bytes: int  # of the merged folder
    earlier_zip: Path | None = None  # a model that fails its check replaces nothing: the earlier zip still offered


@dataclass(frozen=True)
class _Base:
    path: str
    parameters: int
    stored: str  # the dtype its config.json names

    @property
    def dtype(self):
        """What the merged model is saved in: the base's own 16-bit dtype; for a base stored in 32 bits, bfloat16,
        which keeps float32's range (float16's is narrower: large weights overflow) in half the size."""
        import torch

        return getattr(torch, self.stored if self.stored in ("bfloat16", "float16") else "bfloat16")


def merge_run(run: Run, out_dir: str | Path | None = None, *, workspace: Workspace, make_zip: bool = True,
              progress: Progress | None = None) -> ExportResult:
    """Merge the run's adapter into its base and save it to out_dir (default workspace/exports/<run-id>/merged),
    zipped beside it as <run-id>-merged.zip. progress(fraction, message) hears of every stage."""
    report = progress or (lambda _fraction, _message: None)
    report(0.0, Message("Checking run {run}", run=run.id))
    require_adapter(run)
    config = run.config
    target = (Path(out_dir).expanduser() if out_dir else export_folder(workspace, run) / "merged").resolve()
    for folder in (target, failed_folder(target)):
        require_replaceable(folder)
    zip_path = target.parent / f"{safe_name(run.id, 'run')}-merged.zip"

    base = _read_base(resolve_model(config.model, workspace, progress=lambda message: report(0.01, message)))
    needed = space_needed(base.parameters * base.dtype.itemsize, copies=2 if make_zip else 1)
    what = Message("the merged model and its zip") if make_zip else Message("the merged model")
    require_free_space(target.parent, needed, what)
    with plain_failures(target.parent, needed, what):
        return _merge_and_save(run, target, zip_path, make_zip, base, workspace, report)


def _read_base(path: str) -> _Base:
    from transformers import AutoConfig

    parameters = base_parameters(path)  # first, as it refuses a base stored already quantised
    config = AutoConfig.from_pretrained(path, trust_remote_code=allow_remote_code())
    return _Base(path, parameters, _dtype_name(config.dtype or "float32"))  # no dtype named: transformers' float32


def _merge_and_save(run: Run, target: Path, zip_path: Path, make_zip: bool, base: _Base, workspace: Workspace,
                    report: Progress) -> ExportResult:
    config = run.config
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target, zip_path)
    staging = staging_folder(target)
    try:
        try:
            examples = first_examples(workspace, config.dataset, DATASET_EXAMPLES)
            check = _merge_into(staging, run, base, examples, report)
        finally:
            free_memory()
        write_json(staging / MARKER, {"run_id": run.id, "base_model": config.model, "created": time.time(),
                                      "check": check.to_dict()})
        report(0.8, Message("Writing the model card"))
        card = write_card(staging, run, workspace, check, base.stored).name
        if check.ok:
            if make_zip:
                report(0.82, Message("Zipping the merged model into {file}", file=zip_path.name))
                zip_folder(staging, staging / zip_path.name,  # inside the folder until it is in place
                           progress=lambda fraction, message: report(0.82 + 0.17 * fraction, message))
            swap_in(staging, target, zip_path)
            shutil.rmtree(failed_folder(target), ignore_errors=True)  # a failed attempt before it is of no use now
            folder = target
        else:
            # Only a model that answers like base + adapter goes where downloads come from; this one replaces
            # nothing and is kept beside it for a look.
            folder = failed_folder(target)
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only left after a failure: no half folder stays behind

    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    report(1.0, Message("Done: {folder} ({size})", folder=str(folder), size=human_size(size)))
    if check.ok:
        return ExportResult(run.id, folder, zip_path if make_zip else None, folder / card, check, size)
    return ExportResult(run.id, folder, None, folder / card, check, size,
                        earlier_zip=zip_path if zip_path.exists() else None)


@contextmanager
def plain_failures(where: Path, needed: int, what: str):
    """A GPU or disk that fills up half way is told as what to do next, not as a library's error."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError as e:
        traceback.clear_frames(e.__traceback__)  # the failed merge's frames still hold the half-loaded model
        free_memory()
        raise ExportError(Message("There was not enough GPU memory to merge this model in 16-bit. Wait until the "
                                  "training jobs and chats are done, then export again, or ask the administrator "
                                  "for a machine with more memory.")) from None
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        probe = where
        while not probe.exists():  # the folder may be gone with the half-written export; its disk is its parent's
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        raise NotEnoughSpace(
            Message("The disk filled up while writing {what} in {where}; it needs about {needed}. Free some space "
                    "(delete older exports), or ask the administrator for more disk, then export again.", what=what,
                    where=str(where), needed=human_size(needed)), needed, free, where) from None


def _merge_into(folder: Path, run: Run, base: _Base, examples: list[dict], report: Progress) -> MergeCheck:
    """Load, check, merge, check again and save, all on one copy of the weights."""
    import torch
    from peft import PeftModel

    # On a CPU the work is done in float32: 16-bit arithmetic is many times slower on most CPUs (8x on ours).
    work_dtype = base.dtype if torch.cuda.is_available() else torch.float32
    report(0.05, Message("Loading the base model in {dtype} (about {size})", dtype=_dtype_name(work_dtype),
                         size=human_size(base.parameters * work_dtype.itemsize)))
    # On GPUs, 'auto' spreads a model too big for one card over all of them (and CPU memory).
    model = load_base_model(base.path, quantization="none", dtype=work_dtype,
                            device_map="auto" if torch.cuda.is_available() else None)
    # A tokenizer saved with the adapter carries the chat template the run trained with.
    has_own_tokenizer = (run.adapter_dir / "tokenizer_config.json").exists()
    tokenizer = load_tokenizer(str(run.adapter_dir) if has_own_tokenizer else base.path)

    report(0.3, Message("Attaching the adapter"))
    model = PeftModel.from_pretrained(model, str(run.adapter_dir))
    checker = MergeChecker(tokenizer, examples)
    report(0.35, Message("Check, part 1: {prompts} prompts and {examples} dataset examples through base + adapter "
                         "and through the base alone", prompts=checker.prompts, examples=checker.dataset_examples))
    checker.before_merge(model)

    report(0.5, Message("Merging the adapter into the weights"))
    model = model.merge_and_unload(safe_merge=True)
    if work_dtype != base.dtype:  # rounded to the saved dtype first, so that the check reads the weights saved
        model.to(base.dtype).to(work_dtype)
    report(0.55, Message("Check, part 2: the same prompts through the merged model"))
    check = checker.after_merge(model, _dtype_name(base.dtype))
    report(0.6, Message("Merge check: {verdict}", verdict=check.verdict))

    report(0.62, Message("Saving the merged weights (safetensors), tokenizer and generation settings"))
    model.to(base.dtype).save_pretrained(folder, max_shard_size=MAX_SHARD_SIZE)
    tokenizer.save_pretrained(folder)
    return check


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")
