"""One training run, start to end, inside the child process: QLoRA with trl's SFTTrainer."""
from __future__ import annotations

import os
import time
import traceback

from ..config import ConfigError, TrainConfig
from ..models import ModelNotFound, compute_dtype, load_base_model, load_tokenizer, resolve_model
from ..runs import Run
from ..workspace import Workspace
from .attention import use_varlen_attention
from .curves import draw_curves
from .recorder import RunRecorder
from .targets import resolve_target_modules

OOM_ADVICE = ("The GPU ran out of memory. Try, in this order: a smaller batch size with more gradient "
              "accumulation steps, a shorter max length, the 'Small GPU (under 16 GB)' preset, or a smaller model.")


def train_run(run: Run, workspace: Workspace) -> str:
    """Train the run in its folder and return how it ended: completed, stopped or failed."""
    import torch

    run.set_status(state="running", pid=os.getpid(), started=time.time(), message="")
    state, message = "failed", ""
    try:
        state = _train(run, run.config, workspace)
        message = "Stopped; the adapter trained so far is saved." if state == "stopped" else "Finished."
    except torch.OutOfMemoryError:
        message = OOM_ADVICE
    except (ConfigError, ModelNotFound, ValueError) as e:
        message = str(e)
        traceback.print_exc()
    except Exception as e:  # noqa: BLE001 - whatever happened, the run folder must say so
        message = f"Training failed: {type(e).__name__}: {e}. The log below has the details."
        traceback.print_exc()
    finally:
        draw_curves(run)
    print(message, flush=True)
    run.set_status(state=state, message=message, ended=time.time(), pid=None)
    return state


def _train(run: Run, config: TrainConfig, workspace: Workspace) -> str:
    from datasets import Dataset

    from ..data import load_records, split, tokenize_record

    model_path = resolve_model(config.model, workspace, progress=lambda m: print(m, flush=True))
    tokenizer = load_tokenizer(model_path)
    records, _report = load_records(config.dataset, workspace)
    if not records:
        raise ValueError(f"The dataset {config.dataset} has no valid rows to train on.")
    train_records, val_records = split(records, config.val_fraction, config.seed)

    def tokenized(part):
        return Dataset.from_list([tokenize_record(tokenizer, r, config.max_length) for r in part])

    train_set = tokenized(train_records)
    val_set = tokenized(val_records) if val_records else None
    print(f"{len(train_set)} training and {len(val_records)} validation examples", flush=True)

    recorder = RunRecorder(run)
    trainer = build_trainer(config, model_path, tokenizer, train_set, val_set, str(run.checkpoints_dir), [recorder])
    checkpoint = run.latest_checkpoint()
    if checkpoint:
        print(f"Resuming from {checkpoint.name}", flush=True)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if val_set is not None and not recorder.stopped and not _evaluated_last_step(trainer.state):
        trainer.evaluate()  # the final validation loss, logged like the others
    trainer.model.save_pretrained(run.adapter_dir)
    tokenizer.save_pretrained(run.adapter_dir)
    print(f"Adapter saved to {run.adapter_dir}", flush=True)
    return "stopped" if recorder.stopped else "completed"


def _evaluated_last_step(state) -> bool:
    return any("eval_loss" in entry and entry.get("step") == state.global_step for entry in state.log_history)


def build_trainer(config: TrainConfig, model_path: str, tokenizer, train_set, val_set, output_dir: str,
                  callbacks: list):
    """The SFTTrainer for a config: the engine's one recipe, also what bench/ measures."""
    from peft import LoraConfig
    from transformers import EarlyStoppingCallback
    from trl import SFTTrainer

    model = load_base_model(model_path, config.quantization, config.double_quant)
    use_varlen_attention(model)  # batches are padding-free (see training_arguments)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=resolve_target_modules(model, config.target_modules), task_type="CAUSAL_LM")
    args = training_arguments(config, output_dir, evaluate=val_set is not None)
    if args.load_best_model_at_end:
        callbacks = [*callbacks, EarlyStoppingCallback(config.early_stopping_patience)]
    return SFTTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
                      processing_class=tokenizer, peft_config=lora, callbacks=callbacks)


def training_arguments(config: TrainConfig, output_dir: str, evaluate: bool):
    import torch
    from trl import SFTConfig

    # Fractions below 1 are read by transformers as a share of all steps: evaluate ten times a run.
    eval_every = config.eval_steps or 0.1
    early_stop = evaluate and config.early_stopping_patience > 0
    on_gpu = torch.cuda.is_available()
    return SFTConfig(
        output_dir=output_dir,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        optim=config.optimizer if on_gpu else "adamw_torch",  # paged/8-bit optimizers need CUDA
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=on_gpu and compute_dtype() == torch.bfloat16,
        fp16=on_gpu and compute_dtype() == torch.float16,
        # Rows arrive already cut to max_length (studio.data.tokenize_record); packing needs the length to fill.
        max_length=config.max_length if config.packing else None,
        packing=config.packing,
        # Sequences of a batch are laid end to end with position ids instead of padded to the longest:
        # no compute is spent on padding (transformers keeps attention within each sequence).
        padding_free=True,
        use_liger_kernel=on_gpu and _liger_installed(),  # fused Triton kernels; GPU only
        logging_steps=config.logging_steps,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=eval_every if evaluate else None,
        save_strategy="steps",
        save_steps=eval_every if early_stop else config.save_steps,
        save_total_limit=2,
        load_best_model_at_end=early_stop,
        metric_for_best_model="eval_loss" if early_stop else None,
        include_num_input_tokens_seen="all",  # padding-free: every token is real,
        seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def _liger_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None
