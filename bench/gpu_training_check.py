"""The real training path on a GPU: job queue -> child process -> 4-bit QLoRA -> adapter, with NVML samples.

No model hub on the GPU machine, so the model is SmolLM2-135M's architecture and tokenizer with random
weights (pass --shape-from, a folder holding its config.json and tokenizer files). Writes a JSON summary.

    python bench/gpu_training_check.py --shape-from DIR --out bench/results/gpu_training_check.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PIRATE = Path(__file__).resolve().parent.parent / "tests" / "data" / "pirate_chat.jsonl"


def main() -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from studio.config import TrainConfig
    from studio.jobs import JobQueue
    from studio.workspace import Workspace

    parser = argparse.ArgumentParser()
    parser.add_argument("--shape-from", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default="bench/results/gpu_training_check.json")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp())
    model_dir = root / "smollm2-random"
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.shape_from), dtype=torch.bfloat16)
    model.save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (Path(args.shape_from) / name).exists():
            shutil.copy(Path(args.shape_from) / name, model_dir / name)

    workspace = Workspace.at(root / "workspace")
    queue = JobQueue(workspace, poll=0.5)
    config = TrainConfig(model=str(model_dir), dataset=str(PIRATE), quantization="4bit", max_steps=args.steps,
                         batch_size=8, learning_rate=1e-3, max_length=256, eval_steps=10, save_steps=20,
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    started = time.time()
    run = queue.submit(config, name="gpu-check")
    state = queue.wait(run.id, timeout=500)
    queue.close()
    metrics = [m for m in run.metrics() if "loss" in m]
    samples = [s for s in run.gpu_samples() if "used_gb" in s]
    summary = {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "state": state, "message": run.status().get("message"),
        "seconds": round(time.time() - started, 1), "steps": len(metrics),
        "first_loss": metrics[0]["loss"] if metrics else None, "last_loss": metrics[-1]["loss"] if metrics else None,
        "median_tokens_per_s": sorted(m["tokens_per_s"] for m in metrics)[len(metrics) // 2] if metrics else None,
        "peak_mem_gb_torch": max((m.get("peak_mem_gb", 0) for m in metrics), default=None),
        "nvml_samples": len(samples), "nvml_max_used_gb": max((s["used_gb"] for s in samples), default=None),
        "adapter_saved": run.has_adapter(), "report_card": (run.path / "report.json").exists(),
        "log_mentions_varlen": "variable-length" in run.log_path.read_text(),
        "log_mentions_compiled_layers": "Compiling the model's" in run.log_path.read_text(),
    }
    print(run.log_tail(15))
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
