"""The GPU training benches, run small on the CPU: each keeps working here, and the exactness bench can tell a
right computation from a wrong one."""
import json

import pytest


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One folder for the tiny random model both benches write once and share."""
    return tmp_path_factory.mktemp("bench-models")


def test_exactness_bench_passes_the_engine_and_sees_a_leak(models, tmp_path):
    from bench.exactness import main

    out = tmp_path / "exactness.json"
    tiny = main(["--shapes", "tiny", "--max-length", "128", "--median-length", "30", "--batch", "4",
                 "--packed-sequences", "12", "--quantization", "none", "--models", str(models),
                 "--out", str(out)])["tiny"]
    assert tiny["exact"], tiny
    for path in ("default", "packed"):  # every LoRA matrix compared: A and B on 7 projections in 2 layers
        assert tiny[path]["within_tolerance"] and tiny[path]["lora_matrices"] == 2 * 7 * 2
    assert tiny["packed"]["sequences"] > tiny["packed"]["rows"]  # several sequences shared a packed row
    # The same sequences with attention across them must fail, else a wrong mask would pass unseen.
    assert tiny["leak"]["outside_tolerance"], tiny["leak"]
    assert json.loads(out.read_text())["tiny"]["command"].startswith("python bench/exactness.py")


def test_throughput_bench_runs_all_three_recipes(models, tmp_path):
    from bench.train_throughput import main

    out = tmp_path / "throughput.json"
    tiny = main(["--shape", "tiny", "--steps", "2", "--warmup", "1", "--batch", "2", "--max-length", "64",
                 "--packed-batches", "", "--skip-low-vram", "--skip-checkpointing-on", "--models", str(models),
                 "--out", str(out)])
    for run in ("baseline", "studio", "trl_best"):
        assert tiny[f"{run}_tok_s"] > 0
    assert tiny["trl_best_attention"] == "sdpa" and not tiny["trl_best_liger"]  # no flash-attn, no Liger on a CPU
    assert json.loads(out.read_text())["tiny"]["studio_vs_trl_best"] == tiny["studio_vs_trl_best"]


def test_throughput_bench_measures_preference_tuning_next_to_sft(models, tmp_path):
    from bench.train_throughput import main

    out = tmp_path / "dpo.json"
    tiny = main(["--shape", "tiny", "--steps", "2", "--warmup", "1", "--batch", "2", "--max-length", "64",
                 "--method", "dpo", "--models", str(models), "--out", str(out)])["dpo"]
    assert tiny["sft_tok_s"] > 0 and tiny["dpo_tok_s"] > 0
    assert tiny["dpo_vs_sft"] == round(tiny["dpo_tok_s"] / tiny["sft_tok_s"], 3)
    assert json.loads(out.read_text())["tiny"]["dpo"] == tiny


def test_compiled_chat_probe_times_every_variant(models, tmp_path):
    from bench.chat_compiled_probe import main

    out = tmp_path / "probe.json"
    result = main(["--shape", "tiny", "--models", str(models), "--new-tokens", "4", "--repeats", "1",
                   "--out", str(out)])
    for variant in ("eager_base", "eager_adapter", "eager_side_by_side_routed", "compiled_base", "compiled_adapter",
                    "compiled_side_by_side_routed"):
        assert result[variant].get("tokens_per_s", 0) > 0, result[variant]  # an error would be recorded instead
    assert json.loads(out.read_text()) == result
