"""One training run, start to end, inside the child process: QLoRA with trl's SFTTrainer, or its DPOTrainer for
preference pairs (training/preference.py)."""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import replace

from ..config import ConfigError, TrainConfig, check_data_fits
from ..messages import Message, text_of
from ..models import ModelNotFound, compute_dtype, load_base_model, load_tokenizer, resolve_model
from ..runs import Run, start_adapter
from ..workspace import Workspace
from .attention import use_varlen_attention
from .compiled_layers import compiled_layers_callback, compiles
from .curves import draw_curves
from .memory import choose_checkpointing, liger_installed, sequences_per_batch
from .recorder import RunRecorder
from .targets import resolve_target_modules

# FSDP with a 4-bit base (FSDP-QLoRA): the 4-bit weights are stored in the compute dtype
# (studio.models.quantization_config sets bnb_4bit_quant_storage) so FSDP can shard them like any other weight.
FSDP_QLORA = {"auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "cpu_ram_efficient_loading": True,
              "state_dict_type": "SHARDED_STATE_DICT"}

OOM_ADVICE = Message("The GPU ran out of memory. Try, in this order: a smaller batch size with more gradient "
                     "accumulation steps, a shorter max length, the 'Small GPU (under 16 GB)' preset, or a smaller "
                     "model.")


def train_run(run: Run, workspace: Workspace) -> str:
    """Train the run in its folder and return how it ended: completed, stopped or failed.

    Under `accelerate launch` every GPU's process runs this; only the main one writes the run folder."""
    import torch

    main = is_main_process()
    if main:
        run.set_status(state="running", pid=os.getpid(), started=time.time(), message="")
    state, message = "failed", ""
    try:
        state, early_stop = _train(run, run.config, workspace)
        message = Message("Stopped; the adapter trained so far is saved.") if state == "stopped" else \
            early_stop or Message("Finished.")
    except torch.OutOfMemoryError:
        message = OOM_ADVICE
    except (ConfigError, ModelNotFound, ValueError) as e:
        message = text_of(e)
        traceback.print_exc()
    except Exception as e:  # noqa: BLE001 - whatever happened, the run folder must say so
        message = Message("Training failed: {error_type}: {error}. The log below has the details.",
                          error_type=type(e).__name__, error=str(e))
        traceback.print_exc()
    if main or state == "failed":
        print(message, flush=True)
    if main:
        run.set_status(state=state, message=message, ended=time.time(), pid=None)
    elif state == "failed" and run.state == "running":
        # Another GPU's process failed (out of memory on the longest rows, say): the launcher then ends the
        # main one before it can write anything, so this process says why, once.
        run.set_status(state="failed", message=message, ended=time.time(), pid=None)
    if main:  # after the status: a picture that cannot be drawn must not leave the run 'running'
        try:
            draw_curves(run)
        except Exception:  # noqa: BLE001 - the charts in the page come from metrics.jsonl all the same
            traceback.print_exc()
    return state


def is_main_process() -> bool:
    """True in a one-process run, and in the first process of a multi-GPU one (torchrun sets RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def process_count() -> int:
    """How many processes train this run together: one per GPU under accelerate launch (torchrun sets it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _train(run: Run, config: TrainConfig, workspace: Workspace) -> tuple[str, Message | None]:
    """How the run ended, and what early stopping did, if it ended the run."""
    from datasets import Dataset

    from ..data import is_pairs, load_records, split, tokenize_pair, tokenize_record

    model_path = resolve_model(config.model, workspace, progress=lambda m: print(m, flush=True))
    tokenizer = load_tokenizer(model_path)
    records, _report = load_records(config.dataset, workspace)
    if not records:
        raise ValueError(Message("The dataset {dataset} has no valid rows to train on.", dataset=config.dataset))
    check_data_fits(config, is_pairs(records))
    adapter = start_adapter(workspace, config)
    train_records, val_records = split(records, config.val_fraction, config.seed)
    tokenize = tokenize_pair if config.method == "dpo" else tokenize_record

    def tokenized(part):
        return Dataset.from_list([tokenize(tokenizer, r, config.max_length) for r in part])

    train_set = tokenized(train_records)
    val_set = tokenized(val_records) if val_records else None
    say = print if is_main_process() else (lambda *a, **k: None)
    say(f"{len(train_set)} training and {len(val_records)} validation examples", flush=True)
    if adapter:
        say(f"Going on from the adapter of {config.start_from}: its rank and layers are kept", flush=True)

    recorder = RunRecorder(run)
    trainer = build_trainer(config, model_path, tokenizer, train_set, val_set, str(run.checkpoints_dir), [recorder],
                            adapter)
    checkpoint = run.latest_checkpoint()
    if checkpoint:
        say(f"Resuming from {checkpoint.name}", flush=True)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if val_set is not None and not recorder.stopped and not _evaluated_last_step(trainer.state):
        trainer.evaluate()  # the final validation loss, logged like the others
    if trainer.is_fsdp_enabled:  # the adapter as one file for chat and merge, gathered from every GPU's shard
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(run.adapter_dir))  # the adapter and the tokenizer, written by the main process only
    if adapter and is_main_process():
        from .preference import drop_reference

        drop_reference(run.adapter_dir)
    say(f"Adapter saved to {run.adapter_dir}", flush=True)
    if recorder.stopped:  # a stop must be quick; its report card can be made on demand
        return "stopped", None
    early_stop = _early_stop_note(trainer, config)  # said in the final status, and printed there
    if config.report_card and is_main_process():
        if trainer.is_fsdp_enabled:  # each process holds a shard: none can answer alone
            print("No report card here: the model is sharded across the GPUs. Press Evaluate in the Train tab for "
                  "one.", flush=True)
        else:
            _report_card(run, trainer.model, tokenizer, config, records)
    return "completed", early_stop


def _early_stop_note(trainer, config: TrainConfig) -> Message | None:
    """When early stopping ended the run before its last step: where, and which checkpoint the adapter is."""
    state = trainer.state
    if not trainer.args.load_best_model_at_end or state.global_step >= state.max_steps \
            or not state.best_model_checkpoint:
        return None
    return Message("Finished early, at update {step} of {planned}: the validation loss had not improved for "
                   "{patience} evaluations. The adapter is the one from update {best}, with the lowest validation "
                   "loss ({loss:.3f}).", step=state.global_step, planned=state.max_steps,
                   patience=config.early_stopping_patience,
                   best=int(state.best_model_checkpoint.rsplit("-", 1)[1]), loss=state.best_metric)


def _report_card(run: Run, model, tokenizer, config: TrainConfig, records: list[dict]) -> None:
    """Did it work? The answer, in the run folder, made while the trained model is still loaded."""
    from ..evaluation import evaluate_trained

    run.set_status(message=Message("Making the report card: base model and adapter answer the held-out prompts."))
    try:
        card = evaluate_trained(run, model, tokenizer, config, records, progress=lambda m: print(m, flush=True))
    except Exception:  # noqa: BLE001 - the adapter is saved and good; only the card is missing, and can be redone
        traceback.print_exc()
        print("The report card could not be made; evaluate the run again from the Train tab.", flush=True)
        return
    print(f"Report card: {card['verdict_text']} {card['next_step']}", flush=True)


def _evaluated_last_step(state) -> bool:
    return any("eval_loss" in entry and entry.get("step") == state.global_step for entry in state.log_history)


def build_trainer(config: TrainConfig, model_path: str, tokenizer, train_set, val_set, output_dir: str,
                  callbacks: list, start_adapter: str | None = None):
    """The trainer for a config, SFTTrainer or (method dpo) preference.PairTrainer: the engine's one recipe, also
    what bench/ measures. start_adapter: a finished run's adapter to go on training instead of a new one."""
    from peft import LoraConfig, PeftModel
    from transformers import EarlyStoppingCallback
    from trl import SFTTrainer

    checkpointing = choose_checkpointing(model_path, config, largest_batch_tokens(train_set, config))
    if is_main_process():
        print("Gradient checkpointing on: activations are recomputed to fit in memory" if checkpointing else
              "Gradient checkpointing off: the activations fit in memory", flush=True)
    config = replace(config, gradient_checkpointing="on" if checkpointing else "off")
    # The arguments first: with FSDP they tell transformers how to load the model for sharding.
    args = training_arguments(config, output_dir, evaluate=val_set is not None)
    model = load_base_model(model_path, config.quantization, config.double_quant, sharded=bool(args.fsdp))
    preference = config.method == "dpo"
    if not preference:  # DPO's batches are padded, not laid end to end
        use_varlen_attention(model)  # batches are padding-free (see training_arguments)
    if start_adapter:
        model, lora = PeftModel.from_pretrained(model, start_adapter, is_trainable=True), None
    else:
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=resolve_target_modules(model, config.target_modules), task_type="CAUSAL_LM")
    if args.load_best_model_at_end:
        callbacks = [*callbacks, EarlyStoppingCallback(config.early_stopping_patience)]
    if compiles(config.method, process_count(), checkpointing):
        callbacks = [*callbacks, compiled_layers_callback()]
    if preference:
        from .preference import PairTrainer as trainer_class
    else:
        trainer_class = SFTTrainer
    return trainer_class(model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
                         processing_class=tokenizer, peft_config=lora, callbacks=callbacks)


def largest_batch_tokens(train_set, config: TrainConfig) -> int:
    """Tokens in the largest batch the run can meet: its longest rows together (a packed batch is always full; a
    batch of pairs holds each pair's two sides, padded to the longest)."""
    if config.packing:
        return config.batch_size * config.max_length
    if config.method == "dpo":
        longest = max(len(p) + max(len(c), len(r)) for p, c, r in
                      zip(train_set["prompt_ids"], train_set["chosen_ids"], train_set["rejected_ids"]))
        return sequences_per_batch(config) * longest
    return sum(sorted((len(ids) for ids in train_set["input_ids"]), reverse=True)[:config.batch_size])


def training_arguments(config: TrainConfig, output_dir: str, evaluate: bool):
    """The SFTConfig (a DPOConfig for method dpo) for a config whose gradient_checkpointing is decided ('on' or
    'off')."""
    import torch
    from trl import DPOConfig, SFTConfig

    # Fractions below 1 are read by transformers as a share of all steps: evaluate ten times a run.
    eval_every = config.eval_steps or 0.1
    early_stop = evaluate and config.early_stopping_patience > 0
    on_gpu = torch.cuda.is_available()
    processes = process_count()
    fsdp = config.fsdp and processes > 1  # alone on one device FSDP has nothing to shard
    checkpointing = config.gradient_checkpointing == "on"
    common = dict(
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
        use_cpu=not on_gpu,  # also what makes several processes on a machine without GPUs train together
        optim=config.optimizer if on_gpu else "adamw_torch",  # paged/8-bit optimizers need CUDA
        # Under FSDP its own activation checkpointing does this without a second gather of the weights.
        activation_checkpointing=checkpointing and not fsdp,
        activation_checkpointing_kwargs={"use_reentrant": False},
        fsdp=fsdp or None,
        fsdp_config={**FSDP_QLORA, "activation_checkpointing": checkpointing} if fsdp else None,
        ddp_find_unused_parameters=False,  # every adapter weight gets a gradient: no need to search each step
        bf16=on_gpu and compute_dtype() == torch.bfloat16,
        fp16=on_gpu and compute_dtype() == torch.float16,
        # Liger's fused Triton kernels (GPU only), unless the layers are compiled (studio/training/compiled_layers.py)
        use_liger_kernel=on_gpu and liger_installed() and not compiles(config.method, processes, checkpointing),
        logging_steps=config.logging_steps,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=eval_every if evaluate else None,
        save_strategy="steps",
        save_steps=eval_every if early_stop else config.save_steps,
        save_total_limit=2,
        load_best_model_at_end=early_stop,
        metric_for_best_model="eval_loss" if early_stop else None,
        seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if config.method == "dpo":
        # trl pads a batch of pairs (its padding-free mode is not available for DPO): count the real tokens only.
        # Rows arrive already cut to max_length (studio.data.tokenize_pair). Plain shuffling: grouping by length
        # reads the lengths of input_ids, which a pair has not.
        return DPOConfig(**common, beta=config.beta, max_length=config.max_length, train_sampling_strategy="random",
                         include_num_input_tokens_seen="non_padding")
    return SFTConfig(
        **common,
        # Rows arrive already cut to max_length (studio.data.tokenize_record); packing needs the length to fill.
        max_length=config.max_length if config.packing else None,
        packing=config.packing,
        # Sequences of a batch are laid end to end with position ids instead of padded to the longest:
        # no compute is spent on padding (transformers keeps attention within each sequence).
        padding_free=True,
        # Over several GPUs every step waits for the slowest: batches of like lengths side by side keep the
        # GPUs evenly loaded (measured in bench/multi_gpu.py). Alone, plain shuffling.
        train_sampling_strategy="group_by_length" if processes > 1 else "random",
        include_num_input_tokens_seen="all",  # padding-free: every token is real
    )
