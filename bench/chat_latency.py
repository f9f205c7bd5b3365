"""Chat latency and memory of studio.inference on whatever device is here.

    swap_cached_ms          time until an answer can start with another adapter that is already attached
                            (median): with per-row routing nothing in the model changes, so this is the pool's
                            bookkeeping and locks
    first_load_ms           attaching an adapter the first time: checking it fits, reading it, putting it into the
                            model (median of first_loads_ms: the first adapter on the base, then more beside it)
    first_load_full_pool_ms the same when every adapter place of the base is taken: the new adapter's weights
                            are copied into the least recently used adapter's layers (median)
    side_by_side_mem_ratio  memory while answering base + adapter side by side in one batch, over memory while
                            answering with the base alone (process RSS on the CPU, torch.cuda.max_memory_allocated
                            on a GPU); a second copy of the base for the comparison would make it about 2
    merged_vs_base_speed    greedy writing speed of the 16-bit base with the adapter merged in (merge_and_unload,
                            as Export does), over the same base without it (median time between tokens, timed in
                            turns), beside the same ratio for a second plain copy of the base (the host's noise)
                            and, on a GPU, the ratio of kernel time per token
    plus time to first token and tokens per second: the base, an adapter (routed per row, and through peft's
    ordinary active adapter for comparison), and base + adapter side by side.

    python bench/chat_latency.py                       # the embedded SmolLM2-135M, rank 16
    python bench/chat_latency.py --model Qwen/Qwen2.5-1.5B-Instruct --adapter-rank 64
Writes bench/results/chat.json (--out to write elsewhere; the CPU figures are in chat_cpu.json).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "Write a short story about a lighthouse keeper."


def make_adapters(model_path: str, rank: int, targets, folder: str, seeds: tuple[int, ...]) -> None:
    """Random non-zero LoRA adapters, made in a child process so their model never counts in this one's memory."""
    import torch
    from peft import LoraConfig, get_peft_model

    from studio.models import load_base_model

    model = load_base_model(model_path, "none" if not torch.cuda.is_available() else "4bit")
    for seed in seeds:
        torch.manual_seed(seed)
        peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets,
                                                init_lora_weights=False))
        peft.save_pretrained(Path(folder) / f"seed{seed}")
        model = peft.unload()


def token_intervals(model, tokenizer, max_new_tokens: int) -> list[float]:
    """Seconds between consecutive tokens of a greedy answer exactly max_new_tokens long."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Clock(StoppingCriteria):
        def __init__(self):
            self.times: list[float] = []

        def __call__(self, input_ids, scores, **kwargs):
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    text = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    clock = Clock()
    model.generate(**ids, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                   stopping_criteria=StoppingCriteriaList([clock]))
    return [later - earlier for earlier, later in zip(clock.times, clock.times[1:])]


def tokens_per_s(model, tokenizer, max_new_tokens: int) -> float:
    """Greedy writing speed of a model, timed from the first token to the last."""
    intervals = token_intervals(model, tokenizer, max_new_tokens)
    return len(intervals) / sum(intervals)


def kernel_seconds_per_token(model, tokenizer, max_new_tokens: int) -> float | None:
    """GPU kernel time per written token (torch.profiler): what the model costs the card, free of the host's
    Python timing. None without a GPU."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        return None
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        token_intervals(model, tokenizer, max_new_tokens)
    return sum(event.self_device_time_total for event in profiler.key_averages()) / 1e6 / max_new_tokens


def merged_vs_base_speed(model_path: str, adapter: str, max_new_tokens: int, repeats: int = 6) -> dict:
    """A 16-bit base, a second copy with the adapter merged in (peft's merge_and_unload, as the Export tab
    does) and, as a control, a third plain copy of the base: the merged one should write exactly as fast,
    and the control shows how closely this host can tell. Timed in turns whose order flips each round, so
    drift in clocks or load falls on all alike; speed is one over the median time between two tokens over
    all turns, so a pause of the host does not decide the comparison. GPU kernel time per token is the
    same comparison without the host's Python."""
    import gc

    from peft import PeftModel

    from studio.models import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(model_path)
    models = {"base": load_base_model(model_path, "none"),
              "merged": PeftModel.from_pretrained(load_base_model(model_path, "none"), adapter).merge_and_unload(),
              "base_copy": load_base_model(model_path, "none")}
    intervals = {name: [] for name in models}
    for model in models.values():
        token_intervals(model, tokenizer, 8)  # warm up
    gc.collect()
    gc.disable()
    try:
        for round_ in range(repeats):
            for name in (list(models) if round_ % 2 == 0 else reversed(list(models))):
                intervals[name] += token_intervals(models[name], tokenizer, max_new_tokens)
    finally:
        gc.enable()
    speed = {name: 1 / statistics.median(times) for name, times in intervals.items()}
    kernel = {name: kernel_seconds_per_token(model, tokenizer, 32) for name, model in models.items()}
    result = {"base16_tokens_per_s": round(speed["base"], 2), "merged_tokens_per_s": round(speed["merged"], 2),
              "merged_vs_base_speed": round(speed["merged"] / speed["base"], 4),
              "base_copy_vs_base_speed": round(speed["base_copy"] / speed["base"], 4)}
    if kernel["base"]:
        result.update({"base16_kernel_ms_per_token": round(1000 * kernel["base"], 3),
                       "merged_vs_base_kernel_time": round(kernel["merged"] / kernel["base"], 4),
                       "base_copy_vs_base_kernel_time": round(kernel["base_copy"] / kernel["base"], 4)})
    return result


def full_pool_loads(model_path: str, quantization: str, filling: list[str], fresh: list[str]) -> list[float]:
    """Seconds to attach each fresh adapter to a base whose adapter places are all taken: each takes over
    the layers of the least recently used one (the pool's hot-swap)."""
    from studio.inference import ModelPool

    pool = ModelPool(max_adapters=len(filling), max_concurrent=1)
    loads = []
    for adapter in [*filling, *fresh]:
        with pool.session(model_path, quantization, [adapter]) as session:
            loads.append(session.adapters[0].load_s)
    pool.base(model_path, quantization).close()
    return loads[len(filling):]


def memory_now() -> float:
    """Bytes in use: the peak of GPU memory allocated since the last reset, or the process's resident memory."""
    import psutil
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated())
    return float(psutil.Process().memory_info().rss)


def main(argv=None) -> int:
    from studio.config import TrainConfig
    from studio.models import EMBEDDED, resolve_model
    from studio.workspace import Workspace

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=EMBEDDED, help="a model folder, hub id or .gguf file (default: embedded)")
    parser.add_argument("--adapter-rank", type=int, default=16)
    parser.add_argument("--targets", default=",".join(TrainConfig().target_modules),
                        help="LoRA target modules, comma separated, or all-linear (default: the studio's default)")
    parser.add_argument("--quantization", default="auto", choices=("auto", "4bit", "8bit", "none"))
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--swaps", type=int, default=50, help="cached adapter switches to time")
    parser.add_argument("--first-loads", type=int, default=4, help="first adapter loads to time")
    parser.add_argument("--merged-tokens", type=int, default=64, help="tokens written when timing merged vs base")
    parser.add_argument("--workspace", help="where the embedded model is converted (default: ./workspace)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "chat.json"))
    args = parser.parse_args(argv)

    import torch

    from studio.inference import GenerationSettings, ModelPool, chat, compare

    model_path = resolve_model(args.model, Workspace.at(args.workspace), progress=print)
    targets = args.targets if args.targets == "all-linear" else \
        [t.strip() for t in args.targets.split(",") if t.strip()]
    scratch = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    try:
        child = multiprocessing.get_context("spawn").Process(
            target=make_adapters, args=(model_path, args.adapter_rank, targets, str(scratch), (1, 2)))
        child.start()
        child.join()
        if child.exitcode:
            raise SystemExit(f"making the test adapters failed (exit {child.exitcode})")
        first, second = str(scratch / "seed1"), str(scratch / "seed2")
        # Copies are distinct adapters to the pool: each is a first load.
        fresh = [str(shutil.copytree(first, scratch / f"copy{i}")) for i in range(args.first_loads)]

        pool = ModelPool(max_adapters=len(fresh) + 2, max_concurrent=1)
        settings = GenerationSettings(temperature=0, max_new_tokens=args.max_new_tokens)
        base = pool.base(model_path, args.quantization)
        chat(pool, model_path, PROMPT, settings=settings, quantization=args.quantization).collect()  # warm up
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        base_alone = chat(pool, model_path, PROMPT, settings=settings, quantization=args.quantization).collect()[0]
        base_mem = memory_now()

        with pool.session(model_path, args.quantization, [first]) as session:
            loads = [session.adapters[0].load_s]
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        side = compare(pool, model_path, PROMPT, left=None, right=first, settings=settings,
                       quantization=args.quantization).collect()
        side_mem = memory_now()
        alone = chat(pool, model_path, PROMPT, adapter=first, settings=settings,
                     quantization=args.quantization).collect()[0]
        peft_active = tokens_per_s(base.model, base.tokenizer, args.max_new_tokens)  # peft's own active adapter

        for adapter in [second, *fresh]:
            with pool.session(model_path, args.quantization, [adapter]) as session:
                loads.append(session.adapters[0].load_s)

        swaps = []
        for i in range(args.swaps):
            started = time.perf_counter()
            with pool.session(model_path, args.quantization, [(first, second)[i % 2]]) as session:
                swaps.append(time.perf_counter() - started)
                if session.loaded_now[0]:
                    raise SystemExit("a cached adapter was loaded again: raise max_adapters")

        result = {
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "model": model_path,
            "quantization": base.quantization,
            "adapter_rank": args.adapter_rank,
            "adapter_targets": targets,
            "swap_cached_ms": round(1000 * statistics.median(swaps), 3),
            "first_load_ms": round(1000 * statistics.median(loads), 1),
            "first_loads_ms": [round(1000 * load, 1) for load in loads],  # in order: more adapters already attached
            "side_by_side_mem_ratio": round(side_mem / base_mem, 4),
            "memory_measure": "torch.cuda.max_memory_allocated" if torch.cuda.is_available() else "process RSS",
            "base_mem_mb": round(base_mem / 2**20, 1),
            "side_by_side_mem_mb": round(side_mem / 2**20, 1),
            "max_new_tokens": args.max_new_tokens,
            "base_tokens_per_s": round(base_alone.tokens_per_s, 2),
            "adapter_tokens_per_s": round(alone.tokens_per_s, 2),
            "adapter_tokens_per_s_peft_active_adapter": round(peft_active, 2),
            "side_by_side_tokens_per_s_per_answer": round(min(a.tokens_per_s for a in side), 2),
            "adapter_first_token_ms": round(1000 * alone.first_token_s, 1),
            "side_by_side_first_token_ms": round(1000 * side[1].first_token_s, 1),
            "torch_threads": torch.get_num_threads(),
        }
        base.close()
        result["first_load_full_pool_ms"] = round(1000 * statistics.median(
            full_pool_loads(model_path, args.quantization, [first, second], fresh)), 1)
        print("first loads into a full pool", result["first_load_full_pool_ms"], "ms", flush=True)
        # The chat models' memory back before the 16-bit copies load.
        result.update(merged_vs_base_speed(model_path, first, args.merged_tokens))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
