"""A TrainerCallback that writes the run folder as training goes, and honours a Stop request.

In a multi-GPU run every process has one; only the main process writes, and a stop is decided by all of them
together, so no process waits at a collective step for one that already stopped."""
from __future__ import annotations

import json
import math
import signal
import time

from transformers import TrainerCallback

from ..runs import Run
from ..workspace import append_jsonl, write_atomic


# A checkpoint at least this often: a run killed (a power cut, the app restarted) resumes from at most this long ago.
CHECKPOINT_EVERY_S = 5 * 60
# What trl's DPOTrainer logs about the pairs, by the name metrics.jsonl gives it: the reward margin (how much more
# the model now favours the chosen answer than the rejected one, against where it started) and how often the
# chosen answer wins.
PAIR_METRICS = {"rewards/margins": "reward_margin", "rewards/accuracies": "reward_accuracy",
                "eval_rewards/margins": "eval_reward_margin", "eval_rewards/accuracies": "eval_reward_accuracy"}


class RunRecorder(TrainerCallback):
    def __init__(self, run: Run):
        self.run = run
        self.stopped = False
        self._signalled = False
        self._started = time.time()
        self._first_step = 0
        self._tokens_at = (time.time(), 0)
        self._saved_at = time.time()
        # The job queue asks for a stop with a file; a plain SIGTERM (Ctrl-C, kill) means the same.
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_signalled", True))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._started = self._saved_at = time.time()
        self._first_step = state.global_step  # not 0 when resuming
        self._tokens_at = (time.time(), state.num_input_tokens_seen)
        if not state.is_world_process_zero:
            return
        self._drop_metrics_after(state.global_step)
        # Whether training really runs in train mode with checkpointing on, for the log and the tests. Under
        # FSDP its own wrapper recomputes, which the model does not know about.
        fsdp_recomputes = bool((args.fsdp_config or {}).get("activation_checkpointing")) if args.fsdp else False
        append_jsonl(self.run.path / "metrics.jsonl", {
            "event": "start", "step": state.global_step, "max_steps": state.max_steps, "time": time.time(),
            "train_mode": bool(model.training) if model is not None else None,
            "gradient_checkpointing": fsdp_recomputes or bool(getattr(model, "is_activation_checkpointing", False))
            if model is not None else None,
        })

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == self._first_step and model is not None and not model.training:
            raise RuntimeError("the model is in eval mode at the first training step")

    def on_save(self, args, state, control, **kwargs):
        self._saved_at = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        due = time.time() - self._saved_at >= CHECKPOINT_EVERY_S  # a kill loses minutes, whatever save_steps says
        asked = self.run.stop_requested or self._signalled
        if args.world_size > 1:  # every process saves and stops together, or they wait for each other for ever
            due, asked = _asked_anywhere(due, args.device), _asked_anywhere(asked, args.device)
        if due:
            control.should_save = True
        if asked:
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True  # a checkpoint to resume from, besides the adapter saved at the end

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        logs = logs or {}
        now = time.time()
        done = state.global_step - self._first_step
        elapsed = now - self._started
        record = {"step": state.global_step, "max_steps": state.max_steps, "epoch": round(state.epoch or 0, 4),
                  "time": now, "elapsed": round(elapsed, 2)}
        if done > 0:
            record["eta"] = round(elapsed / done * (state.max_steps - state.global_step), 1)
        for key in ("loss", "eval_loss", "learning_rate", "grad_norm"):
            if key in logs:
                record[key] = float(logs[key])
        record.update({name: float(logs[key]) for key, name in PAIR_METRICS.items() if key in logs})
        if "eval_loss" in record and "eval_reward_margin" not in record:  # DPO's loss is no likelihood
            record["perplexity"] = math.exp(min(record["eval_loss"], 50))
        if "loss" in logs:
            then, tokens_then = self._tokens_at
            record["tokens"] = state.num_input_tokens_seen
            record["tokens_per_s"] = round((state.num_input_tokens_seen - tokens_then) / max(now - then, 1e-6), 1)
            self._tokens_at = (now, state.num_input_tokens_seen)
            peak = _cuda_peak_gb()
            if peak is not None:
                record["peak_mem_gb"] = peak
        append_jsonl(self.run.path / "metrics.jsonl", record)

    def _drop_metrics_after(self, step: int) -> None:
        """On resume, forget what was logged after the checkpoint: those steps are trained again."""
        path = self.run.path / "metrics.jsonl"
        if step == 0 or not path.exists():
            return
        kept = [r for r in self.run.metrics() if r.get("step", 0) <= step]
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def _asked_anywhere(asked: bool, device) -> bool:
    """Whether any process says yes (a stop file can appear between two processes' checks, clocks differ)."""
    import torch
    import torch.distributed as dist

    flag = torch.tensor([int(asked)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _cuda_peak_gb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)
