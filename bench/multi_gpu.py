"""Several GPUs through the job queue, as a person's run uses them: the same run on one GPU, then on all of
them (accelerate launch, data-parallel), then with FSDP-QLoRA (the 4-bit model sharded across the GPUs).

No model hub on the GPU machine: the model is a real architecture's shape with random weights, with SmolLM2's
tokenizer and chat template (pass --tokenizer-from, a folder holding them); the data are chat rows whose
lengths spread like a real chat dataset's. Tokens per second are the run's own figures (metrics.jsonl,
tokens counted across every process) from the end of step --warmup to the end of the run.

    python bench/multi_gpu.py --tokenizer-from DIR --shape qwen2.5-3b
Writes bench/results/multi_gpu.json.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import SHAPES, TARGETS, chat_lengths, make_model_dir  # noqa: E402

WORDS = ("the ship sails north under a grey sky while the crew sings of home and gold and the long sea road "
         "captain wind harbour lantern map island storm anchor rope deck compass tide").split()


def make_dataset(path: Path, rows: int, seed: int) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for length in chat_lengths(rows, seed, 2000):
            words = [rng.choice(WORDS) for _ in range(length)]
            cut = max(1, length // 4)  # a short question, a longer answer
            f.write(json.dumps({"messages": [{"role": "user", "content": " ".join(words[:cut])},
                                             {"role": "assistant", "content": " ".join(words[cut:])}]}) + "\n")
    return path


def measure(queue, config, warmup: int) -> dict:
    run = queue.submit(config, name=f"{len(config.gpus)}gpu{'-fsdp' if config.fsdp else ''}")
    started = time.time()
    state = queue.wait(run.id, timeout=900)
    steps = [m for m in run.metrics() if "tokens" in m]
    first, last = next((m for m in steps if m["step"] == warmup), None), steps[-1] if steps else None
    peaks: dict[str, float] = {}
    for sample in run.gpu_samples():
        if "used_gb" in sample:
            peaks[sample["device"]] = max(peaks.get(sample["device"], 0), sample["used_gb"])
    result = {"state": state, "seconds": round(time.time() - started, 1), "steps": len(steps),
              "tok_s": round((last["tokens"] - first["tokens"]) / (last["time"] - first["time"]), 1) if first else None,
              "nvml_peak_used_gb": peaks,
              "adapter_saved": run.has_adapter()}
    if state != "completed":
        result["log_tail"] = run.log_tail(40)
    print(json.dumps(result, indent=2), flush=True)
    return result


def main() -> None:
    import torch

    from studio.config import TrainConfig
    from studio.jobs import JobQueue
    from studio.workspace import Workspace

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer-from", required=True, type=Path)
    parser.add_argument("--shape", choices=SHAPES, default="qwen2.5-3b")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--fsdp-steps", type=int, default=6)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "multi_gpu.json"))
    args = parser.parse_args()

    gpus = list(range(torch.cuda.device_count()))
    root = Path(tempfile.mkdtemp())
    model = make_model_dir(args.shape, root, args.tokenizer_from)
    data = make_dataset(root / "chat.jsonl", args.steps * args.batch * len(gpus) + 64, seed=0)
    workspace = Workspace.at(root / "workspace")
    queue = JobQueue(workspace, devices=[str(g) for g in gpus], poll=1.0)
    base = dict(model=str(model), dataset=str(data), quantization="4bit", lora_r=16, lora_alpha=32,
                lora_dropout=0.0, target_modules=TARGETS, batch_size=args.batch, max_length=2048,
                max_steps=args.steps, val_fraction=0.0, warmup_ratio=0.0, save_steps=10**6, logging_steps=1,
                optimizer="adamw_torch")
    one = measure(queue, TrainConfig(**base, gpus=gpus[:1]), args.warmup)
    every = measure(queue, TrainConfig(**base, gpus=gpus), args.warmup)
    fsdp = measure(queue, TrainConfig(**{**base, "max_steps": args.fsdp_steps}, gpus=gpus, fsdp=True), 1)
    queue.close()
    result = {"gpu": torch.cuda.get_device_name(), "gpus": len(gpus), "model_shape": args.shape,
              "batch_per_gpu": args.batch, "timed_steps": args.steps - args.warmup,
              "one_gpu_tok_s": one["tok_s"], "all_gpus_tok_s": every["tok_s"],
              "scaling": round(every["tok_s"] / one["tok_s"], 3) if one["tok_s"] and every["tok_s"] else None,
              "fsdp_ok": fsdp["state"] == "completed" and fsdp["adapter_saved"], "fsdp_tok_s": fsdp["tok_s"],
              "runs": {"one_gpu": one, "all_gpus": every, "fsdp": fsdp}, "torch": torch.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
