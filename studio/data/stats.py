"""Numbers about a dataset for the report and the UI: token lengths, a histogram, the train/val split."""
from __future__ import annotations

import math
import random
import statistics

from ..messages import Message
from .errors import DatasetError


def token_stats(lengths: list[int], max_length: int) -> dict:
    """min, median, p95 (nearest rank: the smallest length that 95% of records do not exceed), max, mean,
    how many are longer than max_length, and count. All None (counts 0) for no lengths."""
    if not lengths:
        return {"min": None, "median": None, "p95": None, "max": None, "mean": None, "over_limit": 0, "count": 0}
    ordered = sorted(lengths)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[math.ceil(0.95 * len(ordered)) - 1],
        "max": ordered[-1],
        "mean": round(statistics.fmean(ordered), 1),
        "over_limit": sum(1 for n in ordered if n > max_length),
        "count": len(ordered),
    }


def histogram(lengths: list[int], bins: int = 20) -> dict:
    """{"counts": [...], "edges": [...]}: bins equal-width bins from min to max (edges has bins + 1 values;
    a value on an inner edge counts in the bin to its right, the maximum in the last bin)."""
    if not lengths:
        return {"counts": [], "edges": []}
    low, high = min(lengths), max(lengths)
    if high == low:
        high = low + 1  # one value: one bin of width 1 still has a visible bar
    bins = max(1, int(bins))
    width = (high - low) / bins
    counts = [0] * bins
    for n in lengths:
        counts[min(int((n - low) / width), bins - 1)] += 1
    return {"counts": counts, "edges": [low + i * width for i in range(bins + 1)]}


def training_count(rows: int, val_fraction: float) -> int:
    """How many of `rows` records split() keeps for training."""
    held_out = min(max(round(rows * val_fraction), 1), rows - 1) if val_fraction > 0 and rows >= 2 else 0
    return rows - held_out


def split(records: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """Training and validation records, the same for the same seed; both keep the records' order.
    With val_fraction > 0 and at least two records, validation gets at least one and training keeps one."""
    if not 0 <= val_fraction < 1:
        raise DatasetError(Message("The validation fraction must be at least 0 and below 1 (got {value}).",
                                   value=val_fraction))
    n = len(records)
    chosen = set(random.Random(seed).sample(range(n), n - training_count(n, val_fraction)))
    train = [r for i, r in enumerate(records) if i not in chosen]
    val = [r for i, r in enumerate(records) if i in chosen]
    return train, val
