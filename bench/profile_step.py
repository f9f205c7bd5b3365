"""Where a training step's time goes: torch.profiler over a few steps of LoRA Studio's engine.

    python bench/profile_step.py --shape qwen2.5-3b     # on the GPU machine; prints the top operators
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as bench  # noqa: E402  (the same models, data and engine settings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=bench.SHAPES, default="qwen2.5-3b")
    parser.add_argument("--models", default=tempfile.gettempdir())
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--trace", help="write a Chrome trace here")
    args = parser.parse_args()

    from transformers import TrainerCallback

    model_dir = bench.make_model_dir(args.shape, Path(args.models))
    data = bench.sequences(bench.chat_lengths(10 * args.batch, 0, 2048), bench.SHAPES[args.shape]["vocab_size"], 0)
    profiler = torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA],
        schedule=torch.profiler.schedule(wait=3, warmup=2, active=3, repeat=1))

    class Step(TrainerCallback):
        def on_train_begin(self, *a, **k):
            profiler.start()

        def on_step_end(self, *a, **k):
            profiler.step()

        def on_train_end(self, *a, **k):
            profiler.stop()

    run = argparse.Namespace(rank=16, batch=args.batch, max_length=2048, steps=10, warmup=3, seed=0)
    result = bench.run_studio(model_dir, data, run, extra_callbacks=[Step()])
    print("LoRA Studio", result)
    averages = profiler.key_averages()
    print(averages.table(sort_by="self_cuda_time_total", row_limit=args.rows))
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if args.trace:
        profiler.export_chrome_trace(args.trace)


if __name__ == "__main__":
    main()
