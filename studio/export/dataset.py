"""The run's saved dataset, as far as an export needs it: its row counts for the card, its first examples
for the merge check. A dataset given as a plain data file has neither, and the export goes on without them."""
from __future__ import annotations

import json
from collections import Counter
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


def held_out_examples(workspace: Workspace, config) -> list:
    """The examples the run's report card answers (those it held out, else its first training examples); none when
    its data cannot be read any more."""
    from ..data import load_records
    from ..evaluation.report_card import choose_examples

    try:
        records, _ = load_records(config.dataset, workspace)
    except (ValueError, OSError):  # a dataset deleted or moved since training: the fixed texts do instead
        return []
    return choose_examples(records, config.val_fraction, config.seed, other_data=False)[1]


def system_prompt(workspace: Workspace, spec: str) -> str | None:
    """The system prompt the dataset trained with: the one that opens at least half of its conversations."""
    folder = dataset_folder(workspace, spec)
    if folder is None:
        return None
    openings, conversations = Counter(), 0
    with open(folder / RECORDS, encoding="utf-8") as f:
        for line in f:
            try:
                messages = json.loads(line).get("messages")
            except (ValueError, AttributeError):
                continue
            if isinstance(messages, list) and messages:
                conversations += 1
                if isinstance(messages[0], dict) and messages[0].get("role") == "system":
                    openings[messages[0].get("content") or ""] += 1
    prompt, count = (openings.most_common(1) or [(None, 0)])[0]
    return prompt if prompt and count * 2 >= conversations else None
