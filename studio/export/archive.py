"""Where a run's exports land (workspace/exports/<run-id>/) and how folders become downloadable zips."""
from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from ..messages import Message
from ..runs import Run
from ..workspace import Workspace, safe_name
from .checks import require_adapter, require_free_space, space_needed

Progress = Callable[[float, str], None]

# Weights barely compress and take long to deflate; text files (tokenizer, card) shrink well.
_STORED_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".png")


def export_folder(workspace: Workspace, run: Run) -> Path:
    return workspace.exports / safe_name(run.id, "run")


def zip_folder(folder: Path, zip_path: Path, progress: Progress | None = None) -> Path:
    """Zip every file under `folder` inside a top folder named like the zip; written atomically."""
    folder, zip_path = Path(folder), Path(zip_path)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files) or 1
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=zip_path.parent, prefix=f".{zip_path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        done = 0
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            for path in files:
                method = zipfile.ZIP_STORED if path.suffix in _STORED_SUFFIXES else zipfile.ZIP_DEFLATED
                zf.write(path, f"{zip_path.stem}/{path.relative_to(folder).as_posix()}", compress_type=method)
                done += path.stat().st_size
                if progress:
                    progress(done / total, Message("Zipped {file}", file=path.name))
        os.replace(tmp, zip_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return zip_path


def export_adapter(run: Run, workspace: Workspace) -> Path:
    """The adapter alone as <run-id>-adapter.zip: small, and loads on top of the base model with peft."""
    require_adapter(run)
    target = export_folder(workspace, run) / f"{safe_name(run.id, 'run')}-adapter.zip"
    size = sum(p.stat().st_size for p in run.adapter_dir.rglob("*") if p.is_file())
    require_free_space(target.parent, space_needed(size, copies=1), Message("the adapter zip"))
    return zip_folder(run.adapter_dir, target)
