"""Enough training for small datasets: the one rule for how many updates, and at what learning rate, a preset
gives a dataset of a few dozen examples.

A preset's passes (epochs) suit thousands of rows. Sixteen examples, three passes, four a step: twelve updates at
2e-4, and the loss falls while the answers stay the base model's; forty updates at 1e-3 answer prompts the run
never saw in the data's style (docs/benchmarks.md, "Small data"). So when a preset would make fewer than
MIN_UPDATES updates, the passes are raised until it makes that many (at most MAX_PASSES) and the learning rate to
at least SMALL_DATA_LR. So many passes can overfit: the Train tab warns when the validation loss turns up while
the training loss falls (training/advisor.py), and the report card says when the run memorised its examples.
Whatever a person set by hand (passes, a step limit, the learning rate) wins; datasets large enough keep the
preset's values. Preference pairs (DPO) get the passes too, but keep the preset's learning rate: DPO moves an
adapter much further per update than imitation does (in tests/test_preference.py three updates at 5e-4 turn the
held-out pairs' preference around, where imitation needs forty at 1e-3 to change the answers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..config import TrainConfig
from ..data import training_count
from ..messages import Message

MIN_UPDATES = 40
MAX_PASSES = 40
SMALL_DATA_LR = 1e-3
RULED = ("epochs", "max_steps", "learning_rate")  # the settings this rule may choose
# Tokens a second the embedded model trains at on a 2-core CPU (bench/results/small_data.json): how long a first
# run will take, before this machine has a run of its own to measure.
EMBEDDED_CPU_TOKENS_PER_S = 50


@dataclass(frozen=True)
class Schedule:
    examples: int  # trained on, after the validation split
    passes: float
    updates: int
    learning_rate: float
    raised: bool  # whether the rule raised the preset's values

    def summary(self, minutes: float | None = None) -> Message:
        """In plain words, e.g. '16 examples: 15 passes, 60 updates, learning rate 0.0005, about 2 minutes'."""
        pace = Message(", about {minutes:.0f} minutes on this machine", minutes=max(1.0, minutes)) \
            if minutes is not None else ""
        words = Message("{examples} examples: {passes:g} passes, {updates} updates, learning rate {lr:g}{pace}.",
                        examples=self.examples, passes=round(self.passes, 1), updates=self.updates,
                        lr=self.learning_rate, pace=pace)
        if self.raised:
            return Message("{plan} A small dataset needs more passes to change how the model answers, so they were "
                           "raised from the preset's. Set the passes, steps or learning rate in Advanced settings to "
                           "choose yourself.", plan=words)
        return words


def expected_minutes(schedule: Schedule, config: TrainConfig, mean_tokens: float | None, workspace) -> float | None:
    """How long the schedule takes here: at the speed of this model's latest run of the same method on this machine,
    else, for supervised runs of the embedded model on a CPU, at the measured one; None when nothing says."""
    import statistics

    from ..models import EMBEDDED
    from ..runs import list_runs

    if not mean_tokens:
        return None
    speed = None
    for run in list_runs(workspace):
        try:
            same = (run.config.model, run.config.method) == (config.model, config.method)
        except (ValueError, OSError):
            continue
        measured = [m["tokens_per_s"] for m in run.metrics() if m.get("tokens_per_s")] if same else []
        if measured:
            speed = statistics.median(measured)
            break
    if speed is None and config.model == EMBEDDED and config.method == "sft" and not _has_gpu():
        speed = EMBEDDED_CPU_TOKENS_PER_S
    if speed is None:
        return None
    examples_seen = schedule.updates * config.batch_size * config.grad_accum * max(1, len(config.gpus))
    sides = 2 if config.method == "dpo" else 1  # a pair trains on both of its answers, each after the prompt
    return examples_seen * sides * min(mean_tokens, config.max_length) / speed / 60


def _has_gpu() -> bool:
    from ..gpu import list_gpus

    return bool(list_gpus())


def updates_per_pass(examples: int, config: TrainConfig) -> int:
    """Optimizer updates in one pass over `examples`, as the trainer counts them (at least one)."""
    processes = max(1, len(config.gpus))
    return max(1, math.ceil(examples / (config.batch_size * processes)) // config.grad_accum)


def plan(config: TrainConfig, rows: int, hand_set: set[str] = frozenset()) -> Schedule:
    """The schedule a run of `config` on `rows` valid rows gets; `hand_set` names the settings a person chose."""
    examples = training_count(rows, config.val_fraction)
    per_pass = updates_per_pass(examples, config)
    if config.max_steps > 0:
        return Schedule(examples, config.max_steps / per_pass, config.max_steps, config.learning_rate, False)
    updates = math.ceil(config.epochs * per_pass)
    if updates >= MIN_UPDATES or set(hand_set) & set(RULED):
        return Schedule(examples, config.epochs, updates, config.learning_rate, False)
    passes = min(MAX_PASSES, math.ceil(MIN_UPDATES / per_pass))
    learning_rate = config.learning_rate if config.method == "dpo" else max(config.learning_rate, SMALL_DATA_LR)
    return Schedule(examples, passes, passes * per_pass, learning_rate, True)


def apply(config: TrainConfig, rows: int, hand_set: set[str] = frozenset()) -> tuple[TrainConfig, Schedule]:
    """The config as the run will train it, and its schedule."""
    schedule = plan(config, rows, hand_set)
    if not schedule.raised:
        return config, schedule
    return replace(config, epochs=float(schedule.passes), learning_rate=schedule.learning_rate), schedule


def hand_set_fields(settings: dict, preset_settings: dict) -> set[str]:
    """The ruled settings whose value differs from what the preset says (or from the defaults it leaves)."""
    defaults = TrainConfig()
    return {f for f in RULED if f in settings and not _equal(settings[f], preset_settings.get(f, getattr(defaults, f)))}


def _equal(value, preset_value) -> bool:
    """Whether a form's value (a number, or its text) is the preset's."""
    try:
        return float(value) == float(preset_value)
    except (TypeError, ValueError):
        return False
