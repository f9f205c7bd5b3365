"""How long a GGUF export takes and how large its file is, per type, for a run of the embedded model (or --model):
the merge once, then for each type llama.cpp's conversion, its quantisation and the llama.cpp check, timed from the
export's own progress reports; with each file's size (and the size the Export tab announced before starting), its
agreement with the merged model, its tensor types, and, to show that the check can tell, its agreement with the
base model without the adapter, as if the merge had lost it.

The run's adapter has random, non-zero weights (as in tests/test_export.py): training it first would only add
minutes, and changes nothing here but the numbers the check compares. Besides the wall-clock time, each export
records the CPU time it used (this process and the converter's) and the load average: on a CPU shared with other
work, the CPU time is what the export costs, and about its time on an idle single core.

    python bench/gguf_export.py --out bench/results/gguf_export.json
    python bench/gguf_export.py --model /path/to/a/7B-model-folder --quants q4_k_m --out bench/results/gguf_7b.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PHASES = (  # (phase, the start of the progress message that begins it)
    ("convert", "Converting the merged model"),
    ("quantise", "Quantising to"),
    ("check", "Check: llama.cpp loads the file"),
    ("modelfile, card and zip", "GGUF check:"),
)


def random_adapter_run(workspace, model: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from studio.config import TrainConfig
    from studio.models import resolve_model
    from studio.runs import create_run

    path = resolve_model(model, workspace, progress=lambda _m: None)
    run = create_run(workspace, TrainConfig(model=model, dataset="none", lora_r=8, lora_alpha=16,
                                            target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                    init_lora_weights=False)).save_pretrained(run.adapter_dir)
    run.set_status(state="completed")
    return run


def phases(reports: list[tuple[float, str]], started: float, ended: float) -> dict:
    """Seconds per phase, from when each phase's first progress message came to when the next one's came."""
    starts = [(name, next((t for t, m in reports if m.startswith(prefix)), None)) for name, prefix in PHASES]
    starts = [(name, t) for name, t in starts if t is not None]
    return {name: round((starts[i + 1][1] if i + 1 < len(starts) else ended) - t, 1)
            for i, (name, t) in enumerate(starts)} | {"before conversion": round(starts[0][1] - started, 1)}


def tensor_types(path: Path) -> dict:
    """How many of the file's tensors llama.cpp stored in each type (it falls back to another type where a tensor's
    rows do not split into the blocks of the type asked for). Read with gguf-py: slow, as it parses the vocabulary
    too, so only the benchmark does it."""
    from collections import Counter

    from gguf import GGUFReader

    return dict(Counter(t.tensor_type.name for t in GGUFReader(path).tensors).most_common())


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children (the converter)."""
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--quants", nargs="+", default=["16-bit", "q8_0", "q4_k_m"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import llama_cpp
    import torch

    from studio.export import merge_run
    from studio.export.gguf import expected_size, export_gguf
    from studio.export.gguf_check import check_gguf
    from studio.models import resolve_model
    from studio.workspace import Workspace

    with tempfile.TemporaryDirectory() as root:
        workspace = Workspace.at(Path(root) / "workspace")
        run = random_adapter_run(workspace, args.model)
        base = resolve_model(args.model, workspace, progress=lambda _m: None)
        started, cpu = time.time(), cpu_seconds()
        merged = merge_run(run, workspace=workspace, make_zip=False)
        results = {"date": time.strftime("%Y-%m-%d"),
                   "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                              + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"),
                   "llama_cpp_python": llama_cpp.__version__, "model": args.model,
                   "command": "python " + " ".join(sys.argv),
                   "merge_s": round(time.time() - started, 1), "merge_cpu_s": round(cpu_seconds() - cpu, 1),
                   "merge_check": merged.check.verdict, "exports": []}
        for quant in args.quants:
            reports: list[tuple[float, str]] = []
            started, cpu, load = time.time(), cpu_seconds(), os.getloadavg()[0]
            result = export_gguf(run, quant, workspace=workspace, make_zip=True,
                                 progress=lambda _fraction, message: reports.append((time.time(), str(message))))
            ended = time.time()
            check = result.check
            results["exports"].append({
                "quant": quant, "file_type": check.quant, "total_s": round(ended - started, 1),
                "cpu_s": round(cpu_seconds() - cpu, 1), "load_average": [round(load, 1), round(os.getloadavg()[0], 1)],
                "phases_s": phases(reports, started, ended), "file_bytes": result.size_bytes,
                "file_mb": round(result.size_bytes / 2**20, 1), "zip_bytes": result.zip_path.stat().st_size,
                "announced_bytes": expected_size(base, quant),
                "agreement": round(check.agreement, 4), "positions": check.positions, "floor": check.floor,
                "ok": check.ok, "same_tokens": check.same_tokens, "chat_template": check.chat_template,
                "modelfile_template": check.modelfile_template, "tensor_types": tensor_types(result.gguf_path),
                "prompt": check.prompt, "merged_answer": check.merged_answer, "gguf_answer": check.answer,
                "agreement_beside_the_base_model": round(check_gguf(result.gguf_path, Path(base), check.quant, [],
                                                                    None).agreement, 4)})
            print(json.dumps(results["exports"][-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
