"""Preference tuning (DPO) on the engine: trl's DPOTrainer, fed pairs that studio.data already tokenized.

The reference DPO measures the model against is where the adapter started, with no second copy of the model:
for a new adapter, the base with the adapter switched off; for an adapter taken over from a finished run, trl's
frozen copy of that adapter (named "ref"), so the run learns to prefer the chosen answers starting from, and held
close to, what that run taught.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from trl import DPOTrainer

REFERENCE = "ref"  # trl's name for the frozen copy of a starting adapter


class PairTrainer(DPOTrainer):
    """DPOTrainer over rows that hold prompt_ids, chosen_ids and rejected_ids already: tokenized by
    studio.data.tokenize_pair, with the mask the Dataset tab shows, not tokenized again by trl."""

    def _prepare_dataset(self, dataset, *args, **kwargs):
        return dataset


def drop_reference(adapter_dir: str | Path) -> None:
    """peft saves every adapter of a model, trl's reference copy in a folder of its own beside the trained one:
    the run's result is the trained adapter alone, as chat and export expect it."""
    shutil.rmtree(Path(adapter_dir) / REFERENCE, ignore_errors=True)
