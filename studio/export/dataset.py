"""The run's saved dataset, as far as an export needs it: its row counts for the card, its first examples
for the merge check. A dataset given as a plain data file has neither, and the export goes on without them."""
from __future__ import annotations

import json
from pathlib import Path

from ..data import pair_conversations
from ..data.store import RECORDS, REPORT
from ..workspace import Workspace, read_json, safe_name


def dataset_folder(workspace: Workspace, spec: str) -> Path | None:
    """The saved dataset that TrainConfig.dataset names (by name or by folder), if there is one."""
    text = (spec or "").strip()
    for folder in (workspace.datasets / safe_name(text, "dataset"), Path(text).expanduser()):
        if text and (folder / RECORDS).is_file():
            return folder
    return None


def dataset_report(workspace: Workspace, spec: str) -> dict:
    folder = dataset_folder(workspace, spec)
    report = read_json(folder / REPORT, {}) if folder else {}
    return report if isinstance(report, dict) else {}


def first_examples(workspace: Workspace, spec: str, limit: int) -> list[dict]:
    """Up to `limit` records ({"messages": [...]} or {"text": ...}) from the top of the saved dataset; a preference
    pair as its prompt with the chosen answer."""
    folder = dataset_folder(workspace, spec)
    if folder is None:
        return []
    examples = []
    with open(folder / RECORDS, encoding="utf-8") as f:
        for line in f:
            if len(examples) == limit:
                break
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a damaged line is the data tab's to report; the check just uses the next one
            if isinstance(record, dict) and "chosen" in record:
                record = pair_conversations(record)[0]
            if isinstance(record, dict) and ("messages" in record or isinstance(record.get("text"), str)):
                examples.append(record)
    return examples
