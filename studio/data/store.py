"""Saved datasets: workspace/datasets/<name>/ holds original.<ext>, records.jsonl and report.json."""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path

from ..messages import Message
from ..workspace import UnsafePath, Workspace, read_json, safe_name, write_json
from .errors import DatasetError
from .report import DatasetReport, inspect_file

RECORDS = "records.jsonl"
REPORT = "report.json"
_KIND_EXTENSIONS = {"text": ".txt"}


def save_dataset(workspace: Workspace, name: str, source_path: str | Path, report: DatasetReport,
                 overwrite: bool = False, owner: str = "", admin: bool = False) -> Path:
    """Store the upload, its valid records and its report (with who saved it) under datasets/<safe name>/. An
    existing dataset of that name is only replaced with overwrite=True, by its owner, an administrator (admin=True)
    or anyone when it has no recorded owner, and then only once the new one is complete."""
    if not report.records:
        raise DatasetError(Message("{file} has no valid rows to save. Fix the problems listed in the report first.",
                                   file=report.file))
    folder = safe_name(name, "")
    unusable = DatasetError(Message("'{name}' cannot be used as a dataset name. Use letters or digits of any "
                                    "language, '-' and '_'.", name=name))
    if not folder:  # nothing but punctuation ("!!!", ".."): refused rather than saved under a made-up name
        raise unusable
    try:
        target = workspace.inside(workspace.datasets / folder)
    except UnsafePath:
        raise unusable from None
    if target.exists() and not overwrite:
        raise DatasetError(Message("A dataset called '{name}' already exists. Choose another name, or choose to "
                                   "replace it.", name=folder))
    if target.exists():
        recorded = (read_json(target / REPORT, {}) or {}).get("owner") or ""
        if recorded and recorded != owner and not admin:
            raise DatasetError(Message("The dataset '{name}' belongs to {owner}; only they or an administrator can "
                                       "change it.", name=folder, owner=recorded))
    source = Path(source_path)
    suffix = source.suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,10}", suffix):
        suffix = _KIND_EXTENSIONS.get(report.kind, f".{report.kind}")
    # Built in a hidden folder beside the target, then renamed into place: never seen half written.
    staging = Path(tempfile.mkdtemp(dir=workspace.datasets, prefix=f".{folder}.", suffix=".partial"))
    try:
        shutil.copyfile(source, staging / f"original{suffix}")
        with open(staging / RECORDS, "w", encoding="utf-8") as f:
            for record in report.records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        write_json(staging / REPORT, {**report.to_json(), "name": folder, "owner": owner, "saved_at": time.time()})
        if target.exists():
            retired = staging.with_name(f".{folder}.old-{staging.name}")
            target.rename(retired)
            try:
                staging.rename(target)
            except OSError:
                retired.rename(target)  # put the old dataset back rather than lose it
                raise
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(target)  # fails, rather than merging, if the name was taken meanwhile
    except OSError as e:
        raise DatasetError(Message("The dataset '{name}' could not be saved ({error}). Check the free disk space, or "
                                   "choose another name.", name=folder, error=str(e.strerror or e))) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def list_datasets(workspace: Workspace) -> list[dict]:
    """A summary of every saved dataset, by name: name, path, owner, file, format, rows, valid, invalid, tokens
    (owner is "" for a dataset saved without one)."""
    found = []
    for folder in sorted(workspace.datasets.iterdir()):
        if folder.name.startswith(".") or not (folder / RECORDS).is_file():
            continue  # hidden folders are saves in progress
        info = read_json(folder / REPORT, {}) or {}
        found.append({"name": folder.name, "path": str(folder), "owner": info.get("owner") or "",
                      **{k: info.get(k) for k in ("file", "format", "rows", "valid", "invalid", "tokens")}})
    return found


def load_records(spec: str | Path, workspace: Workspace) -> tuple[list[dict], dict]:
    """The records to train on and their report. spec is a saved dataset's name, a dataset folder, or a
    data file, which is then inspected on the spot (its invalid rows are skipped)."""
    text = str(spec).strip()
    if not text:
        raise DatasetError(Message("No dataset chosen. Pick a saved dataset or a data file."))
    named = workspace.datasets / safe_name(text)
    if safe_name(text) == text and (named / RECORDS).is_file():
        return _read_saved(named)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / RECORDS).is_file():
            raise DatasetError(Message("{path} is a folder but not a saved dataset (it has no {records}). Pick the "
                                       "dataset's folder, or the data file itself.", path=str(path), records=RECORDS))
        return _read_saved(path)
    if path.is_file():
        report = inspect_file(path)
        if not report.records:
            raise DatasetError(Message("{file} has no valid rows. Inspect it to see what is wrong with each row.",
                                       file=path.name))
        return report.records, report.to_json()
    saved = ", ".join(d["name"] for d in list_datasets(workspace)) or Message("none yet")
    raise DatasetError(Message("No dataset called '{name}' in {folder} and no file or folder at that path. Saved "
                               "datasets: {saved}.", name=text, folder=str(workspace.datasets), saved=saved))


def _read_saved(folder: Path) -> tuple[list[dict], dict]:
    records = []
    with open(folder / RECORDS, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not ({"messages", "text", "chosen"} & set(record)):
                raise DatasetError(Message("{file} is damaged at line {line}. Save the dataset again from its "
                                           "original file.", file=f"{folder.name}/{RECORDS}", line=number))
            records.append(record)
    if not records:
        raise DatasetError(Message("{file} holds no records. Save the dataset again from its original file.",
                                   file=f"{folder.name}/{RECORDS}"))
    return records, read_json(folder / REPORT, {}) or {}
