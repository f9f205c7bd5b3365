"""Plain-language advice read off a run's curves, as an experienced person would give it."""
from __future__ import annotations

import math

from ..runs import Run


def advise(run: Run) -> list[str]:
    """What the curves say so far, most important first; empty until there is enough to judge."""
    status = run.status()
    metrics = [m for m in run.metrics() if "event" not in m]
    losses = [m["loss"] for m in metrics if "loss" in m]
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    advice = []
    if "out of memory" in status.get("message", ""):
        advice.append("Out of memory: choose the 'Small GPU (under 16 GB)' preset, or lower the batch size and raise "
                      "gradient accumulation to keep the same effective batch, or shorten the max length.")
    if any(not math.isfinite(x) for x in losses) or (len(losses) >= 4 and losses[-1] > 3 * min(losses[:3])):
        advice.append("The loss blew up: lower the learning rate (halve it) and start again.")
    elif len(losses) >= 8:
        early, late = _mean(losses[:3]), _mean(losses[-3:])
        if late > early * 0.98:
            advice.append("The loss is not falling: raise the learning rate (for example 2e-4 → 4e-4) or the rank, "
                          "and check in the Dataset tab that the answers are really what you want the model to learn.")
    if len(evals) >= 3 and evals[-1] > evals[-2] > evals[-3] and len(losses) >= 2 and losses[-1] < losses[0]:
        advice.append("Overfitting: the validation loss rises while the training loss falls. Use a smaller rank, more "
                      "dropout, fewer epochs, or turn on early stopping; the checkpoint with the lowest validation "
                      "loss is the one to keep.")
    if not advice and len(losses) >= 8:
        advice.append("Healthy: the loss is falling steadily.")
    return advice


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
