"""Why an export cannot start: no adapter yet, still training, a base that is already quantised, too little
disk, or a target folder that holds something other than an earlier export. Each refusal says what to do."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..messages import Message
from ..models import allow_remote_code, parameter_count
from ..runs import ACTIVE, Run, state_word

# Written into every merged folder; a folder holding it may be replaced by a newer export of the same kind.
MARKER = "studio-export.json"

_MARGIN_BYTES = 200 * 1024**2  # tokenizer files, the card, file-system overhead
_MARGIN_FRACTION = 0.05


class ExportError(RuntimeError):
    """An export that cannot be made; the message is meant for the user as it is."""


class NotEnoughSpace(ExportError):
    def __init__(self, message: str, needed: int, free: int, where: Path):
        super().__init__(message)
        self.needed, self.free, self.where = needed, free, where


def require_adapter(run: Run) -> None:
    """A run may be exported once it has stopped and left an adapter (a failed or stopped run may have one)."""
    if run.status().get("state") in ACTIVE:
        raise ExportError(Message("Run {run} is still {state}. Wait until it finishes (or stop it), then export.",
                                  run=run.id, state=state_word(run.status()["state"])))
    if not run.has_adapter():
        raise ExportError(Message("Run {run} has no adapter yet (nothing in {folder}). Train it to the end, or until "
                                  "it saves its first adapter, then export.", run=run.id, folder=str(run.adapter_dir)))


def base_parameters(base: str) -> int:
    """How many weights the base model has, counted on the meta device (no memory, no download of weights)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base, trust_remote_code=allow_remote_code())
    quantization = getattr(config, "quantization_config", None)
    if quantization:
        method = quantization.get("quant_method", "quantised") if isinstance(quantization, dict) else "quantised"
        # Merging into such weights would round the adapter away; the export must start from 16-bit weights.
        raise ExportError(Message("The base model {base} is stored already quantised ({method}), so it cannot be "
                                  "merged in 16-bit. Train and export with the original 16-bit model as the base, or "
                                  "download the adapter only.", base=base, method=method))
    return parameter_count(config)


def space_needed(weight_bytes: int, copies: int) -> int:
    return int(weight_bytes * copies * (1 + _MARGIN_FRACTION)) + _MARGIN_BYTES


def require_free_space(where: Path, needed: int, what: str) -> None:
    """Refuse before writing anything when the disk holding `where` has less than `needed` bytes free."""
    probe = Path(where)
    while not probe.exists():  # the target folder may not exist yet; its disk is its nearest existing parent's
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise NotEnoughSpace(
            Message("Not enough disk space for {what}: it needs about {needed} in {where}, but only {free} is free "
                    "there. Free some space (delete older exports), or ask the administrator for more disk.", what=what,
                    needed=human_size(needed), where=str(where), free=human_size(free)),
            needed, free, Path(where))


def require_replaceable(folder: Path) -> None:
    """Only an empty folder or an earlier export may be replaced, so nobody loses files to a typo in --out."""
    folder = Path(folder)
    if folder.is_file():
        raise ExportError(Message("{folder} is a file. Choose a folder for the merged model.", folder=str(folder)))
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).exists():
        raise ExportError(Message("{folder} already holds files that are not an earlier LoRA Studio export. Choose a "
                                  "new or empty folder so nothing of yours is overwritten.", folder=str(folder)))


def human_size(n: int) -> str:
    if n < 1024**2:
        return f"{n / 1024:.0f} KB"
    if n < 1024**3:
        return f"{n / 1024**2:.0f} MB"
    return f"{n / 1024**3:.1f} GB"
