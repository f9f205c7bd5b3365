"""The "will it fit?" estimate against torch's measured peak: the engine trains real shapes (random weights) on
batches of a known token count, with activations kept and recomputed, and each peak is set beside
studio.training.memory.estimate for the same run. The estimate's constants come from these figures.

    python bench/memory_calibration.py --shape llama2-7b --shape qwen2.5-3b     # on the GPU machine
Writes bench/results/memory_calibration.json.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import SHAPES, TARGETS, make_model_dir, run_studio, sequences  # noqa: E402


def main() -> None:
    import torch
    from transformers import AutoConfig

    from studio.config import TrainConfig
    from studio.training.memory import estimate, model_shape

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", choices=SHAPES)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--batches", default="1,4", help="batch sizes to measure, each of --length tokens a row")
    parser.add_argument("--checkpointing", default="on,off", help="which settings to measure each batch with")
    parser.add_argument("--models", default=tempfile.gettempdir())
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory_calibration.json"))
    args = parser.parse_args()

    out = Path(args.out)
    # Runs of other shapes, lengths and settings already in the file stay: one invocation measures a few.
    result = json.loads(out.read_text()) if out.exists() else {"cases": []}
    result.update(gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", torch=torch.__version__)
    for shape in args.shape or ["llama2-7b"]:
        model_dir = make_model_dir(shape, Path(args.models))
        dims = model_shape(AutoConfig.from_pretrained(model_dir))
        for checkpointing in args.checkpointing.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                run = argparse.Namespace(rank=16, batch=batch, max_length=args.length, steps=3, warmup=1, seed=0)
                data = sequences([args.length] * batch * run.steps, SHAPES[shape]["vocab_size"], 0)
                config = TrainConfig(dataset="d", batch_size=batch, max_length=args.length, lora_r=16,
                                     target_modules=TARGETS, gradient_checkpointing=checkpointing)
                case = {"shape": shape, "rows": batch, "row_tokens": args.length, "tokens": batch * args.length,
                        "checkpointing": checkpointing,
                        "estimated_gb": estimate(dims, config, tokens=batch * args.length).total_gb}
                try:
                    case["measured_peak_gb"] = run_studio(model_dir, data, run,
                                                          gradient_checkpointing=checkpointing)["peak_gb"]
                except torch.OutOfMemoryError:  # larger batches of this setting will not fit either
                    case.update(measured_peak_gb=None, out_of_memory=True)
                print(json.dumps(case), flush=True)
                same = ("shape", "rows", "row_tokens", "checkpointing")
                result["cases"] = [c for c in result["cases"] if [c.get(k) for k in same] != [case[k] for k in same]]
                result["cases"].append(case)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(result, indent=2) + "\n")  # kept if the machine is taken back
                if case.get("out_of_memory"):
                    gc.collect()
                    torch.cuda.empty_cache()
                    break


if __name__ == "__main__":
    main()
