"""Where an adapter's first load goes: wall-clock per phase of peft's load, with and without
low_cpu_mem_usage, then a cProfile of one more load.

Loads six random r16 adapters on all seven projections into one base in turn (each a first load, with
the earlier ones still attached), alternating low_cpu_mem_usage, timing peft's phases by wrapping them.

    python bench/adapter_load_profile.py --model DIR            # on the GPU machine, DIR a 7B-shaped model
Writes bench/results/adapter_load_profile.json and prints the profile's top entries.
"""
from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import TARGETS  # noqa: E402


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_phases(spent: dict) -> None:
    """Wrap peft's load phases so each adds its wall-clock seconds to spent."""
    import peft.peft_model
    from peft.tuners.tuners_utils import BaseTuner

    phases = ((peft.peft_model, ("set_peft_model_state_dict", "load_peft_weights")),
              (BaseTuner, ("inject_adapter", "_remap_adapter_state_dict_for_load", "_mark_only_adapters_as_trainable",
                           "set_adapter", "_cast_adapter_dtype")))
    for owner, names in phases:
        for name in names:
            real = getattr(owner, name)

            @functools.wraps(real)
            def timed(*args, _real=real, _name=name, **kwargs):
                synchronize()
                started = time.perf_counter()
                try:
                    return _real(*args, **kwargs)
                finally:
                    synchronize()
                    spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - started

            setattr(owner, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model folder")
    parser.add_argument("--quantization", default="4bit", choices=("4bit", "8bit", "none"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "adapter_load_profile.json"))
    args = parser.parse_args()

    from peft import LoraConfig, PeftModel, get_peft_model

    from studio.models import load_base_model

    model = load_base_model(args.model, args.quantization)
    folder = Path(tempfile.mkdtemp())
    for seed in range(1, 8):
        torch.manual_seed(seed)
        peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, init_lora_weights=False))
        peft.save_pretrained(folder / f"a{seed}")
        model = peft.unload()

    spent: dict[str, float] = {}
    time_phases(spent)
    loads = []
    started = time.perf_counter()
    peft = PeftModel.from_pretrained(model, folder / "a1", adapter_name="a1")
    synchronize()
    loads.append({"load": "a1 (PeftModel.from_pretrained)", "s": time.perf_counter() - started, **spent})
    for seed, low in ((2, False), (3, True), (4, False), (5, True), (6, False)):
        spent.clear()
        started = time.perf_counter()
        peft.load_adapter(folder / f"a{seed}", adapter_name=f"a{seed}", low_cpu_mem_usage=low)
        synchronize()
        loads.append({"load": f"a{seed} low_cpu_mem_usage={low}", "s": time.perf_counter() - started, **spent})
    profiler = cProfile.Profile()
    profiler.enable()
    peft.load_adapter(folder / "a7", adapter_name="a7", low_cpu_mem_usage=True)
    synchronize()
    profiler.disable()

    loads = [{key: round(value, 4) if isinstance(value, float) else value for key, value in load.items()}
             for load in loads]
    for load in loads:
        print(load)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
    print(text.getvalue())
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": device, "model": args.model, "quantization": args.quantization,
                                          "loads": loads}, indent=2) + "\n")


if __name__ == "__main__":
    main()
