"""Training speed and memory: LoRA Studio's engine against the plain recipe and TRL's best, side by side on one GPU.

The plain recipe is what a careful person writes from the transformers + peft + bitsandbytes docs: NF4
base (double quantisation, bf16 compute), prepare_model_for_kbit_training, LoRA, padded batches, gradient
checkpointing, SDPA attention, transformers' Trainer. TRL's best is the fastest QLoRA SFT set-up TRL's own
docs describe (see run_trl_best). LoRA Studio's engine is studio.training.trainer's build_trainer, exactly as
a run uses it. All see sequences drawn alike (random token ids with lengths drawn like a chat dataset's; the
plain recipe and the engine the very same batches), the same model shape (random weights), rank, target
modules and batch size.

    python bench/train_throughput.py --shape llama2-7b     # on the GPU machine
    python bench/train_throughput.py --shape llama2-7b --packed-only --packed-batches 4,8   # packed MFU only
    python bench/train_throughput.py --shape tiny --steps 4 --warmup 1   # a smoke run on the CPU
    python bench/train_throughput.py --shape llama2-7b --method dpo   # preference tuning (DPO) next to SFT
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHAPES = {
    "llama2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
    "qwen2.5-3b": dict(model_type="qwen2", hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                       num_attention_heads=16, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    # a 128k vocabulary: the output layer and the loss are a large share of the memory
    "llama3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064),
    "tiny": dict(model_type="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, vocab_size=1000),
}
# Dense bf16 peak of the card, for model FLOPs utilisation.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def chat_lengths(count: int, seed: int, max_length: int, median: int = 300) -> list[int]:
    """Token lengths spread like a chat dataset's: log-normal, median 300 tokens unless told, a long tail, capped."""
    rng = random.Random(seed)
    return [max(16, min(max_length, int(rng.lognormvariate(math.log(median), 0.9)))) for _ in range(count)]


def make_model_dir(shape: str, root: Path, tokenizer_from: Path | None = None) -> Path:
    """A model of the shape with random weights, written once under root. Its tokenizer: a copy of a real one
    (tokenizer_from; the vocabulary is widened to hold every id it writes), for benches that chat or train
    on text; else a synthetic one that only knows its pad token, for benches that feed token ids."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    folder = root / f"random-{shape}"
    if (folder / "config.json").exists():
        return folder
    spec = dict(SHAPES[shape])
    if tokenizer_from:  # SmolLM2's 49,152 ids are more than Llama-2's 32,000
        spec["vocab_size"] = max(spec["vocab_size"], len(AutoTokenizer.from_pretrained(tokenizer_from)))
    config = AutoConfig.for_model(spec.pop("model_type"), **spec, max_position_embeddings=4096)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(folder)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # else torch keeps the model's 13 GB cached, taken for every run after
    if tokenizer_from:
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            shutil.copy(Path(tokenizer_from) / name, folder / name)
    else:
        PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<pad>": 0, "<unk>": 1}, "<unk>")),
                                pad_token="<pad>", eos_token="<pad>", unk_token="<unk>").save_pretrained(folder)
    return folder


class Stopwatch:
    """A TrainerCallback timing the steps after warm-up, and the tokens they trained."""

    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        self.warmup = warmup
        self.start = self.end = None
        watch = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                if state.global_step == watch.warmup:
                    watch.start = (time.perf_counter(), state.num_input_tokens_seen)
                watch.end = (time.perf_counter(), state.num_input_tokens_seen)

        self.callback = _Callback()

    def tokens_per_second(self) -> float:
        return (self.end[1] - self.start[1]) / (self.end[0] - self.start[0])


def sequences(lengths: list[int], vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed + 1)
    return [[rng.randrange(2, vocab) for _ in range(n)] for n in lengths]


def run_plain_recipe(model_dir, data, args) -> dict:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig,
                              DataCollatorForSeq2Seq, Trainer, TrainingArguments)

    free_gpu()
    on_gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, attn_implementation="sdpa", dtype=torch.bfloat16 if on_gpu else torch.float32,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_use_double_quant=True,
                                               bnb_4bit_compute_dtype=torch.bfloat16 if on_gpu else torch.float32),
        device_map={"": 0} if on_gpu else {"": "cpu"})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=TARGETS,
                                             lora_dropout=0.0, task_type="CAUSAL_LM"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = Dataset.from_list([{"input_ids": ids, "labels": ids, "attention_mask": [1] * len(ids)} for ids in data])
    watch = Stopwatch(args.warmup)
    trainer = Trainer(
        model=model, train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest"),
        callbacks=[watch.callback],
        args=TrainingArguments(
            output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch, max_steps=args.steps,
            learning_rate=2e-4, gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
            bf16=on_gpu, logging_steps=1000, save_strategy="no", report_to="none", disable_tqdm=True,
            include_num_input_tokens_seen="non_padding", seed=args.seed, dataloader_num_workers=0))
    return _measure(trainer, watch)


def run_studio(model_dir, data, args, extra_callbacks=(), **overrides) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer

    from studio.config import TrainConfig
    from studio.training.trainer import build_trainer

    free_gpu()
    config = TrainConfig(**{**dict(model=str(model_dir), dataset="bench", quantization="4bit", lora_r=args.rank,
                                   lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=TARGETS,
                                   batch_size=args.batch, grad_accum=1, max_length=args.max_length,
                                   max_steps=args.steps, gradient_checkpointing="auto", optimizer="adamw_torch",
                                   val_fraction=0.0, seed=args.seed, warmup_ratio=0.0, save_steps=10**6,
                                   logging_steps=1000), **overrides}).validate()
    # token id lists for SFT; for DPO, pairs as studio.data.tokenize_pair makes them
    rows = data if config.method == "dpo" else [{"input_ids": ids, "assistant_masks": [1] * len(ids)} for ids in data]
    dataset = Dataset.from_list(rows)
    watch = Stopwatch(args.warmup)
    trainer = build_trainer(config, str(model_dir), AutoTokenizer.from_pretrained(model_dir), dataset, None,
                            tempfile.mkdtemp(), [watch.callback, *extra_callbacks])
    return {**_measure(trainer, watch), "targets": TARGETS if isinstance(config.target_modules, str) else
            config.target_modules,
            "compiled_layers": any(type(c).__name__ == "CompiledLayers" for c in trainer.callback_handler.callbacks)}


def run_trl_best(model_dir, data, args) -> dict:
    """TRL's fastest documented QLoRA SFT set-up, put together from its docs as a TRL user would: the NF4 model
    with the best attention transformers has on this machine (FlashAttention 2 when flash-attn is installed,
    else SDPA), SFTTrainer with packing (best-fit decreasing, which trains padding-free: no padding, sequences
    kept apart by their position ids), Liger's kernels (`use_liger_kernel`), and gradient checkpointing off
    (TRL turns it on by default; its Liger page says the memory Liger saves lets it go, for speed)."""
    import importlib.util

    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from studio.training.memory import liger_installed

    free_gpu()
    on_gpu = torch.cuda.is_available()
    attention = "flash_attention_2" if on_gpu and importlib.util.find_spec("flash_attn") else "sdpa"
    compute = torch.bfloat16 if on_gpu else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, attn_implementation=attention, dtype=compute, device_map={"": 0} if on_gpu else {"": "cpu"},
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute))
    watch = Stopwatch(args.warmup)
    trainer = SFTTrainer(
        model=model, train_dataset=Dataset.from_list([{"input_ids": ids} for ids in data]),
        processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[watch.callback],
        peft_config=LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=TARGETS, lora_dropout=0.0,
                               task_type="CAUSAL_LM"),
        args=SFTConfig(
            output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch, max_steps=args.steps,
            learning_rate=2e-4, max_length=args.max_length, packing=True, use_liger_kernel=on_gpu and liger_installed(),
            activation_checkpointing=False, bf16=on_gpu, use_cpu=not on_gpu, logging_steps=1000, save_strategy="no",
            report_to="none", disable_tqdm=True, include_num_input_tokens_seen="all", seed=args.seed,
            dataloader_num_workers=0))
    return {**_measure(trainer, watch), "attention": attention, "liger": bool(trainer.args.use_liger_kernel)}


def free_gpu() -> None:
    """Hand back what the run before this one in the process held. Its trainer and model hold each other, so
    only a collection frees them: without it their memory would count in the next run's peak (up to 2.8 GB
    on a 7B shape) and, cached by torch, look taken to `gradient_checkpointing: auto`."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _measure(trainer, watch) -> dict:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.args.shuffle_dataset = False
    trainer.train()
    return {"tok_s": round(watch.tokens_per_second(), 1), "checkpointing": bool(trainer.args.activation_checkpointing),
            "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None}


def matmul_params(shape: str) -> int:
    """Parameters that take part in each token's matrix products (the output head included)."""
    s = SHAPES[shape]
    h, i, n, v = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"], s["vocab_size"]
    head = h // s["num_attention_heads"]
    kv = s["num_key_value_heads"] * head
    return n * (2 * h * h + 2 * h * kv + 3 * h * i) + v * h


def model_flops_utilisation(result: dict, shape: str) -> float | None:
    """Share of the card's dense bf16 peak: LoRA on a frozen base costs 2N forward + 2N for the input
    gradients per token, + 2N when activations are recomputed."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = next((tf for name, tf in PEAK_TFLOPS.items() if name in gpu), None)
    flops = (6 if result["checkpointing"] else 4) * matmul_params(shape)
    return round(result["tok_s"] * flops / (peak * 1e12), 4) if peak else None


def packing_data(vocab: int, batch: int, args) -> list[list[int]]:
    """Enough chat-length rows to fill every step of a packed run (they average about 430 tokens, fewer when
    max_length caps them)."""
    rows_needed = args.steps * batch * args.max_length // min(300, args.max_length)
    return sequences(chat_lengths(rows_needed, args.seed, args.max_length), vocab, args.seed)


def packed_runs(model_dir, vocab: int, args) -> list[dict]:
    """LoRA Studio with packing on (rows laid end to end into full max_length rows), one run per batch size:
    how efficiently the engine uses the card once every step is full."""
    runs = []
    for batch in args.packed_batches:
        data = packing_data(vocab, batch, args)
        run = argparse.Namespace(**{**vars(args), "batch": batch})
        try:
            result = run_studio(model_dir, data, run, packing=True, gradient_checkpointing=args.packed_checkpointing)
        except torch.OutOfMemoryError:
            gc.collect()
            torch.cuda.empty_cache()
            runs.append({"batch": batch, "checkpointing": args.packed_checkpointing, "error": "out of memory"})
            print("LoRA Studio, packed", runs[-1], flush=True)
            continue
        result = {"batch": batch, "tokens_per_step": batch * args.max_length, **result,
                  "mfu": model_flops_utilisation(result, args.shape)}
        result.pop("targets", None)
        print("LoRA Studio, packed", result, flush=True)
        runs.append(result)
    return runs


def compare_recipes(model_dir, data, vocab: int, args) -> dict:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"

    def mfu(result):
        return model_flops_utilisation(result, args.shape)

    baseline = run_plain_recipe(model_dir, data, args)
    print("plain recipe", baseline, flush=True)
    studio = run_studio(model_dir, data, args)  # gradient checkpointing 'auto', as a run has it
    print("LoRA Studio", studio, flush=True)
    try:
        trl = run_trl_best(model_dir, packing_data(vocab, args.batch, args), args)
    except torch.OutOfMemoryError:  # its full rows without recomputation can be too much: say so, keep the rest
        free_gpu()
        trl = {"error": "out of memory"}
    print("TRL's best", trl, flush=True)
    result = {"gpu": gpu, "model_shape": args.shape, "rank": args.rank, "targets": TARGETS, "batch": args.batch,
              "timed_steps": args.steps - args.warmup, "baseline_tok_s": baseline["tok_s"],
              "studio_tok_s": studio["tok_s"], "ratio": round(studio["tok_s"] / baseline["tok_s"], 3),
              "studio_mfu": mfu(studio), "studio_checkpointing": studio["checkpointing"],
              "studio_compiled_layers": studio["compiled_layers"],
              "baseline_peak_gb": baseline["peak_gb"], "studio_peak_gb": studio["peak_gb"],
              **{f"trl_best_{key}": value for key, value in trl.items() if key != "checkpointing"},
              "torch": torch.__version__}
    if "tok_s" in trl:
        result.update(trl_best_mfu=mfu(trl), studio_vs_trl_best=round(studio["tok_s"] / trl["tok_s"], 3))
    if args.with_eager and studio["compiled_layers"]:  # what compiling the layers buys, in the same process
        os.environ["STUDIO_COMPILE"] = "0"
        eager = run_studio(model_dir, data, args)
        del os.environ["STUDIO_COMPILE"]
        print("LoRA Studio, layers not compiled", eager, flush=True)
        result.update(studio_eager_tok_s=eager["tok_s"], studio_eager_mfu=mfu(eager),
                      studio_eager_peak_gb=eager["peak_gb"], compiled_vs_eager=round(studio["tok_s"] / eager["tok_s"], 3))
    if not args.skip_checkpointing_on:
        recomputing = run_studio(model_dir, data, args, gradient_checkpointing="on")
        print("LoRA Studio, checkpointing forced on", recomputing, flush=True)
        result.update({"studio_checkpointing_on_tok_s": recomputing["tok_s"],
                       "studio_checkpointing_on_ratio": round(recomputing["tok_s"] / baseline["tok_s"], 3),
                       "studio_checkpointing_on_mfu": mfu(recomputing),
                       "studio_checkpointing_on_peak_gb": recomputing["peak_gb"]})
    return result


def preference_pairs(data: list[list[int]], vocab: int, seed: int) -> list[dict]:
    """Each sequence as a preference pair: its first third the prompt, the rest the chosen answer, and a rejected
    answer of random ids as long as another sequence's answer."""
    rng = random.Random(seed + 2)
    answers = [len(ids) - len(ids) // 3 for ids in data]
    rng.shuffle(answers)
    return [{"prompt_ids": ids[:len(ids) // 3], "chosen_ids": ids[len(ids) // 3:],
             "rejected_ids": [rng.randrange(2, vocab) for _ in range(n)]} for ids, n in zip(data, answers)]


def dpo_next_to_sft(model_dir, data, vocab: int, args) -> dict:
    """Preference tuning (DPO) next to supervised training, both as the engine runs them, at the same batch size:
    SFT on each pair's prompt and chosen answer, DPO on the pairs. A DPO step takes both answers of every pair
    (padded to the batch's longest: trl has no padding-free DPO) and a forward pass of the reference (the adapter
    switched off). Tokens a second count the real tokens each trains on, so DPO's count both answers."""
    pairs = preference_pairs(data, vocab, args.seed)
    sft = run_studio(model_dir, [p["prompt_ids"] + p["chosen_ids"] for p in pairs], args)
    print("LoRA Studio, SFT", sft, flush=True)
    dpo = run_studio(model_dir, pairs, args, method="dpo")
    print("LoRA Studio, DPO", dpo, flush=True)
    return {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "model_shape": args.shape,
            "rank": args.rank, "batch": args.batch, "timed_steps": args.steps - args.warmup,
            "sft_tok_s": sft["tok_s"], "sft_peak_gb": sft["peak_gb"], "sft_checkpointing": sft["checkpointing"],
            "dpo_tok_s": dpo["tok_s"], "dpo_peak_gb": dpo["peak_gb"], "dpo_checkpointing": dpo["checkpointing"],
            "dpo_vs_sft": round(dpo["tok_s"] / sft["tok_s"], 3), "torch": torch.__version__}


def low_vram_peak(model_dir, vocab: int, args) -> float | None:
    """Peak memory of the low-vram-16gb preset at full 2,048-token context, batch 1."""
    from studio.config import load_presets

    low = load_presets()["low-vram-16gb"].settings
    long_data = sequences([2048] * 6, vocab, args.seed)
    small = argparse.Namespace(**{**vars(args), "batch": 1, "steps": 6, "warmup": 2})
    return run_studio(model_dir, long_data, small,
                      optimizer=low["optimizer"] if torch.cuda.is_available() else "adamw_torch",
                      lora_r=low["lora_r"], lora_alpha=low["lora_alpha"], target_modules=low["target_modules"],
                      gradient_checkpointing=low["gradient_checkpointing"],
                      grad_accum=1, max_length=2048)["peak_gb"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=SHAPES, default="llama2-7b")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=tempfile.gettempdir(), help="where the random models are written")
    parser.add_argument("--packed-batches", type=lambda text: [int(b) for b in text.split(",") if b],
                        default=[4, 8], help="batch sizes of the packed runs, comma separated ('' for none)")
    parser.add_argument("--packed-only", action="store_true", help="measure only the packed runs")
    parser.add_argument("--packed-checkpointing", choices=("auto", "on", "off"), default="auto",
                        help="gradient checkpointing of the packed runs (default: as a run decides)")
    parser.add_argument("--skip-low-vram", action="store_true", help="leave out the low-vram preset's peak")
    parser.add_argument("--skip-checkpointing-on", action="store_true",
                        help="leave out the engine's run with gradient checkpointing forced on")
    parser.add_argument("--with-eager", action="store_true",
                        help="also the engine with its layers not compiled (STUDIO_COMPILE=0), for the difference")
    parser.add_argument("--low-vram-only", action="store_true", help="measure only the low-vram preset's peak")
    parser.add_argument("--method", choices=("sft", "dpo"), default="sft",
                        help="dpo: measure preference tuning next to the engine's SFT, and nothing else")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_throughput.json"))
    args = parser.parse_args(argv)

    model_dir = make_model_dir(args.shape, Path(args.models))
    vocab = SHAPES[args.shape]["vocab_size"]
    data = sequences(chat_lengths(args.steps * args.batch, args.seed, args.max_length), vocab, args.seed)

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    result = results.setdefault(args.shape, {})
    command = "python bench/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def save(**measured) -> None:  # after each part: a run cut short keeps what it measured
        result.update(measured, date=datetime.date.today().isoformat(), command=command)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")

    if args.method == "dpo":
        save(dpo=dpo_next_to_sft(model_dir, data, vocab, args))
        print(json.dumps(result["dpo"], indent=2))
        return result
    if not (args.low_vram_only or args.packed_only):
        save(**compare_recipes(model_dir, data, vocab, args))
    if args.packed_batches and not args.low_vram_only:
        forced = "" if args.packed_checkpointing == "auto" else f"_checkpointing_{args.packed_checkpointing}"
        result["studio_packed" + forced] = packed_runs(model_dir, vocab, args)
        mfus = [run["mfu"] for name, runs in result.items() if name.startswith("studio_packed") and
                isinstance(runs, list) for run in runs if run.get("mfu")]
        save(studio_packed_mfu=max(mfus, default=None))
    if not (args.skip_low_vram or args.packed_only):
        save(low_vram_2k_peak_gb=low_vram_peak(model_dir, vocab, args))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
