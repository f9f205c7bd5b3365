"""End to end on the CPU: the job queue trains the embedded model with QLoRA in child processes."""
import os
import signal
import time
from pathlib import Path

import pytest

from studio.config import TrainConfig
from studio.jobs import JobQueue
from studio.runs import Run
from conftest import PIRATE

STORIES = Path(__file__).parent / "data" / "stories.txt"  # raw text: plain language modelling
# Small enough for two CPU cores: a step of two short conversations takes a second or two.
# Their report cards are left out: test_report_card.py and the pirate run's tests (test_journey.py) test those.
QUICK = dict(batch_size=2, learning_rate=1e-3, val_fraction=0.1, eval_steps=4, save_steps=2, max_length=64,
             lora_r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], quantization="4bit", warmup_ratio=0.0,
             report_card=False)


def quick_config(model_dir, **overrides) -> TrainConfig:
    return TrainConfig(**{"model": str(model_dir), "dataset": str(PIRATE), **QUICK, **overrides})


def wait_for(condition, timeout=240, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def queue(workspace):
    q = JobQueue(workspace, devices=[""], stop_timeout=60, poll=0.2)
    yield q
    q.close()


def assert_adapter_loads(run: Run, model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), run.adapter_dir)
    assert any("lora_A" in name for name, _ in model.named_parameters())


def lora_b_weights(adapter_dir: Path) -> dict:
    """The adapter's LoRA B matrices. peft starts every one at zero, so a B still all zero was never trained."""
    from safetensors.torch import load_file

    return {name: w for name, w in load_file(adapter_dir / "adapter_model.safetensors").items() if "lora_B" in name}


def test_two_queued_runs_train_one_after_the_other(queue, embedded_model_dir):
    first = queue.submit(quick_config(embedded_model_dir, max_steps=8, gradient_checkpointing="on"), name="first")
    second = queue.submit(quick_config(embedded_model_dir, max_steps=2, dataset=str(STORIES), val_fraction=0.0),
                          name="second")
    assert [r.id for r in queue.queue()][:2] == [first.id, second.id]
    assert queue.wait(first.id, timeout=400) == "completed", first.log_tail()
    assert queue.wait(second.id, timeout=400) == "completed", second.log_tail()
    assert second.status()["started"] >= first.status()["ended"]
    assert len([m for m in second.metrics() if "loss" in m]) == 2 and second.has_adapter()

    metrics = first.metrics()
    start = next(m for m in metrics if m.get("event") == "start")
    assert start["train_mode"] is True and start["gradient_checkpointing"] is True
    # 'auto' (the default) keeps the activations when they fit, as a few short rows do anywhere
    assert next(m for m in second.metrics() if m.get("event") == "start")["gradient_checkpointing"] is False
    assert "Gradient checkpointing off" in second.log_path.read_text()
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 8 and min(losses[-3:]) < losses[0]
    assert any("eval_loss" in m and "perplexity" in m for m in metrics)
    assert all(m["tokens_per_s"] > 0 for m in metrics if "loss" in m)
    assert first.curves_path.stat().st_size > 10_000
    samples = first.gpu_samples()
    assert samples[0]["event"] == "no-gpu" and any(s.get("used_gb", 0) > 0.2 for s in samples)
    assert_adapter_loads(first, embedded_model_dir)


def test_stop_mid_run_leaves_a_loadable_adapter(queue, embedded_model_dir):
    run = queue.submit(quick_config(embedded_model_dir, max_steps=500))
    wait_for(lambda: any(m.get("step", 0) >= 2 for m in run.metrics() if "loss" in m), what="two steps")
    queue.stop(run.id)
    assert queue.wait(run.id, timeout=120) == "stopped"
    assert "adapter trained so far is saved" in run.status()["message"]
    assert_adapter_loads(run, embedded_model_dir)
    trained = lora_b_weights(run.adapter_dir)  # q_proj and v_proj of every layer
    assert trained and all(w.abs().max() > 0 for w in trained.values()), "the saved adapter was never trained"


def test_killed_run_is_interrupted_and_resumes_from_its_checkpoint(queue, embedded_model_dir):
    import torch

    run = queue.submit(quick_config(embedded_model_dir, max_steps=6, val_fraction=0.0))

    def logged_past_a_checkpoint():
        checkpoint = run.latest_checkpoint()
        return checkpoint is not None and any(m["step"] > int(checkpoint.name.split("-")[1])
                                              for m in run.metrics() if "loss" in m)

    wait_for(logged_past_a_checkpoint, what="a step logged after a checkpoint")
    os.kill(run.status()["pid"], signal.SIGKILL)
    assert queue.wait(run.id, timeout=60) == "interrupted"
    checkpoint_step = int(run.latest_checkpoint().name.split("-")[1])
    # the steps the killed run took after its checkpoint, which the resumed run takes again
    lost = {m["step"]: m for m in run.metrics() if "loss" in m and m["step"] > checkpoint_step}
    assert lost, "the kill came after a newer checkpoint was written"
    queue.resume(run.id)
    assert queue.wait(run.id, timeout=400) == "completed", run.log_tail()
    assert f"Resuming from checkpoint-{checkpoint_step}" in run.log_path.read_text()
    metrics = {m["step"]: m for m in run.metrics() if "loss" in m}
    steps = [m["step"] for m in run.metrics() if "loss" in m]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # no step counted twice after the resume
    # Retaken from the checkpoint's weights, optimizer, schedule and random state, on the same batches, those steps
    # log what they logged before the kill: a resume from fresh weights logs a loss several percent higher at the
    # first of them, a fresh optimizer and schedule another learning rate. Not to the last digit: trl trains a
    # QLoRA adapter in bf16, and transformers loads it back in float32 (measured: 1e-4 apart in the loss).
    for step, before in lost.items():
        again = metrics[step]
        assert again["learning_rate"] == pytest.approx(before["learning_rate"], rel=1e-6), (step, before, again)
        assert again["loss"] == pytest.approx(before["loss"], rel=2e-3), (step, before, again)
        assert again["grad_norm"] == pytest.approx(before["grad_norm"], rel=2e-2), (step, before, again)
    # Adam's own count of updates went on from the checkpoint's: a fresh optimizer would count only 6 - checkpoint
    optimizer = torch.load(run.checkpoints_dir / "checkpoint-6" / "optimizer.pt", weights_only=True)
    assert optimizer["state"] and {int(s["step"]) for s in optimizer["state"].values()} == {6}
    assert_adapter_loads(run, embedded_model_dir)


def test_a_failing_run_says_why(queue, embedded_model_dir, tmp_path):
    empty = tmp_path / "nothing.jsonl"
    empty.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')  # no assistant turn: nothing to learn
    run = queue.submit(TrainConfig(model=str(embedded_model_dir), dataset=str(empty), max_steps=2))
    assert queue.wait(run.id, timeout=200) == "failed"
    assert "no valid rows" in run.status()["message"]


def test_early_stopping_ends_the_run_when_the_validation_loss_rises_and_keeps_the_best(queue, embedded_model_dir,
                                                                                     tmp_path):
    import json
    import random

    from safetensors.torch import load_file

    # Answers that are random letters: memorising the training rows at a high learning rate makes every held-out
    # answer less likely, so the validation loss turns up after a few updates.
    rng = random.Random(0)
    rows = [{"instruction": f"Give code {i}.", "output": "".join(rng.choice("bdfhjkmpqrtvwxz") for _ in range(12))}
            for i in range(24)]
    data = tmp_path / "codes.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = queue.submit(quick_config(embedded_model_dir, dataset=str(data), max_steps=40, learning_rate=1e-2,
                                    val_fraction=0.25, eval_steps=2, early_stopping_patience=2))
    assert queue.wait(run.id, timeout=400) == "completed", run.log_tail()
    evals = [(m["step"], m["eval_loss"]) for m in run.metrics() if "eval_loss" in m]
    last_step = max(m["step"] for m in run.metrics() if "loss" in m)
    best_step, best_loss = min(evals, key=lambda e: e[1])
    assert last_step < 40, f"the run did not stop early: {evals}"
    assert [step for step, _ in evals if step > best_step] == [best_step + 2, best_step + 4]  # patience 2
    message = run.status()["message"]
    assert f"Finished early, at update {last_step} of 40" in message and f"from update {best_step}" in message
    # The adapter saved is the best checkpoint's, not the last update's.
    saved = load_file(run.adapter_dir / "adapter_model.safetensors")
    best = load_file(run.checkpoints_dir / f"checkpoint-{best_step}" / "adapter_model.safetensors")
    last = load_file(run.checkpoints_dir / f"checkpoint-{last_step}" / "adapter_model.safetensors")
    assert saved.keys() == best.keys()
    assert all((saved[k] == best[k]).all() for k in saved)
    assert any((saved[k] != last[k]).any() for k in saved)
