"""How fast could the Chat tab write on a GPU with a static cache and compiled decoding? (issue 16, point 6)

studio.inference decodes eagerly today: each new token is one Python pass over every 4-bit and LoRA layer, so a
7B model on an H200 is bound by kernel launches, not by the GPU. This probe measures, on one random-weight model of
the 7B shape in 4-bit with a rank-16 adapter on all seven projections, greedy decoding of a fixed-length answer:
eager (as the Chat tab does it) and with transformers' static cache and its compiled forward ("reduce-overhead":
CUDA graphs), for the base and for the adapter through peft's active adapter, and side by side (base and adapter
as two rows of one batch, through the Chat tab's per-row routing). transformers 5.23 turns compilation
off for bitsandbytes models (its quantizer says "not compileable"); the probe turns it on to see whether it works
and what it gives. Each variant that fails is recorded with its error rather than stopping the probe. On a CPU
(the tests' smoke run) transformers compiles nothing, so both rows are eager there.

    python bench/chat_compiled_probe.py --out bench/results/chat_compiled_probe_h200.json   # on the GPU machine
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.train_throughput import make_model_dir  # noqa: E402


def timed_answer(model, ids, new_tokens: int, **generate_kwargs) -> dict:
    """Greedy answer of exactly new_tokens tokens: time to the first token and tokens a second after it."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Clock(StoppingCriteria):
        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores, **kwargs):
            synchronize()
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    clock = Clock()
    synchronize()
    start = time.perf_counter()
    model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                   stopping_criteria=StoppingCriteriaList([clock]), **generate_kwargs)
    return {"first_token_ms": round(1000 * (clock.times[0] - start), 1),
            "tokens_per_s": round((len(clock.times) - 1) / (clock.times[-1] - clock.times[0]), 1)}


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(name: str, model, ids, args, **generate_kwargs) -> dict:
    try:
        started = time.perf_counter()
        first = timed_answer(model, ids, args.new_tokens, **generate_kwargs)  # compiles, when compiled
        warm_s = time.perf_counter() - started
        runs = [timed_answer(model, ids, args.new_tokens, **generate_kwargs) for _ in range(args.repeats)]
        result = {"first_call_s": round(warm_s, 1), "first_call": first,
                  "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                  "first_token_ms": statistics.median(r["first_token_ms"] for r in runs)}
    except Exception as e:  # noqa: BLE001 - a probe: what failed, and where, is the finding
        result = {"error": f"{type(e).__name__}: {e}"[:600], "where": traceback.format_exc()[-1500:]}
    print(name, result, flush=True)
    return result


def main(argv=None) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from studio.inference import routing
    from studio.models import load_base_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama2-7b")
    parser.add_argument("--models", default="/tmp/models")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results/chat_compiled_probe.json")
    args = parser.parse_args(argv)

    folder = make_model_dir(args.shape, Path(args.models))
    model = load_base_model(str(folder), "4bit")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = {"input_ids": torch.randint(2, model.config.vocab_size, (1, 40), device=model.device)}
    ids["attention_mask"] = torch.ones_like(ids["input_ids"])
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, init_lora_weights=False, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])).eval()
    pad = {"pad_token_id": tokenizer.pad_token_id or 0}

    results = {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "shape": args.shape, "new_tokens": args.new_tokens,
               "torch": torch.__version__, "date": datetime.date.today().isoformat(),
               "command": "python bench/chat_compiled_probe.py " + " ".join(argv or sys.argv[1:])}
    with model.disable_adapter():
        results["eager_base"] = measure("eager, base", model, ids, args, **pad)
    results["eager_adapter"] = measure("eager, adapter", model, ids, args, **pad)
    # Side by side as the Chat tab does it: base and adapter as two rows of one batch, each LoRA layer routing its
    # rows through the thread's adapter names (tokens a second are per answer: the batch's steps a second)
    routing.install(model)
    pair = {name: tensor.repeat(2, 1) for name, tensor in ids.items()}
    side_by_side = [routing.BASE, "default"]
    with routing.route(side_by_side):
        results["eager_side_by_side_routed"] = measure("eager, side by side, routed", model, pair, args, **pad)

    # transformers says bitsandbytes models are not compileable; say they are, to see
    quantizer = type(model.base_model.model.hf_quantizer)
    refused = quantizer.is_compileable
    quantizer.is_compileable = property(lambda self: True)
    static = {"cache_implementation": "static", **pad}
    try:
        with model.disable_adapter():
            results["compiled_base"] = measure("static cache + compiled, base", model, ids, args, **static)
        results["compiled_adapter"] = measure("static cache + compiled, adapter", model, ids, args, **static)
        with routing.route(side_by_side):
            results["compiled_side_by_side_routed"] = measure("static cache + compiled, side by side, routed", model,
                                                              pair, args, **static)
    finally:
        quantizer.is_compileable = refused
    if torch.cuda.is_available():
        results["peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
