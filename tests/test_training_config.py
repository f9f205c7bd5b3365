"""Fast tests of the training engine's pieces: settings, presets, where LoRA goes, memory, advice."""
import json

import pytest

from studio.config import ConfigError, TrainConfig, config_from_preset, load_presets, save_user_preset, suggest_for_size
from studio.runs import Run, create_run
from studio.training.advisor import advise
from studio.training.memory import estimate
from studio.training.targets import resolve_target_modules


def test_bad_settings_are_named_with_their_range():
    with pytest.raises(ConfigError) as e:
        TrainConfig(dataset="d", lora_r=0, learning_rate=5, quantization="3bit").validate()
    message = str(e.value)
    assert "lora_r must be between 1 and 1024 (got 0)" in message
    assert "learning_rate must be between" in message
    assert "quantization must be one of 4bit, 8bit, none" in message


def test_missing_dataset_and_unknown_setting_are_refused():
    with pytest.raises(ConfigError, match="dataset"):
        TrainConfig().validate()
    with pytest.raises(ConfigError, match="unknown settings: rank"):
        TrainConfig.from_dict({"dataset": "d", "rank": 8})


def test_yaml_round_trip_and_string_values(tmp_path):
    config = TrainConfig.from_dict({"dataset": "d", "lora_r": "8", "packing": "yes", "target_modules": "q_proj, v_proj"})
    assert (config.lora_r, config.packing, config.target_modules) == (8, True, ["q_proj", "v_proj"])
    config.save(tmp_path / "run.yaml")
    assert TrainConfig.load(tmp_path / "run.yaml") == config
    (tmp_path / "bad.yaml").write_text("lora_r: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainConfig.load(tmp_path / "bad.yaml")


def test_builtin_presets_have_the_promised_settings():
    presets = load_presets()
    expect = {"chatbot": (16, 32, 0.1, ["q_proj", "k_proj", "v_proj", "o_proj"]),
              "code": (32, 64, 0.05, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
              "rag": (8, 16, 0.1, ["q_proj", "v_proj"]),
              "low-vram-16gb": (8, 16, None, ["q_proj", "v_proj"]),
              "balanced-24-48gb": (16, 32, None, ["q_proj", "k_proj", "v_proj", "o_proj"])}
    for name, (r, alpha, dropout, targets) in expect.items():
        config = config_from_preset(presets[name], dataset="d")
        assert (config.lora_r, config.lora_alpha, config.target_modules) == (r, alpha, targets)
        if dropout is not None:
            assert config.lora_dropout == dropout
        assert len(presets[name].description) > 80  # a real paragraph for a non-coder
    low = config_from_preset(presets["low-vram-16gb"], dataset="d")
    assert (low.quantization, low.double_quant, low.batch_size, low.gradient_checkpointing, low.optimizer) == \
        ("4bit", True, 1, "on", "paged_adamw_8bit") and low.grad_accum > 1
    assert config_from_preset(presets["balanced-24-48gb"], dataset="d").quantization == "8bit"


def test_user_preset_is_saved_beside_the_builtins(tmp_path):
    save_user_preset(tmp_path, "My tone", "My tone", "mine", {"lora_r": 4, "learning_rate": 1e-4})
    presets = load_presets(tmp_path)
    assert presets["My-tone"].settings["lora_r"] == 4 and not presets["My-tone"].builtin
    with pytest.raises(ConfigError, match="built-in"):
        save_user_preset(tmp_path, "chatbot", "x", "", {})
    with pytest.raises(ConfigError, match="lora_r"):
        save_user_preset(tmp_path, "broken", "x", "", {"lora_r": -1})


@pytest.mark.parametrize("rows,rank,lr", [(200, 8, None), (5000, 16, 2e-4), (50_000, 32, 1e-4)])
def test_suggestions_follow_dataset_size(rows, rank, lr):
    tip = suggest_for_size(rows)
    assert (tip["lora_r"], tip.get("learning_rate")) == (rank, lr)
    assert ("epochs" in tip) == (lr is not None)  # small datasets' passes are the small-data rule's


def test_packing_is_suggested_for_many_short_rows():
    assert suggest_for_size(5000, 300, 1024)["packing"] is True
    assert "packing" not in suggest_for_size(500, 300, 1024)  # too few rows: packed, too few steps to watch
    assert "packing" not in suggest_for_size(5000, 800, 1024)  # rows already fill most of a step
    assert "packing" not in suggest_for_size(5000)  # lengths unknown


def test_target_modules_for_llama_gpt2_and_unknown_names():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, vocab_size=100))
    assert resolve_target_modules(llama, ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    assert resolve_target_modules(llama, "auto") == "all-linear"
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100))
    assert resolve_target_modules(gpt2, ["q_proj", "k_proj", "v_proj", "o_proj"]) == ["c_attn", "c_proj"]
    assert "c_fc" in resolve_target_modules(gpt2, ["gate_proj", "up_proj", "down_proj"])
    with pytest.raises(ConfigError, match="Its linear layers are: .*q_proj"):
        resolve_target_modules(llama, ["nonexistent"])


LLAMA_7B = {"hidden": 4096, "intermediate": 11008, "layers": 32, "vocab": 32000, "heads": 32, "kv_heads": 32,
            "head_dim": 128, "tied": False}


def test_memory_estimate_orders_presets_sensibly():
    presets = load_presets()
    low = estimate(LLAMA_7B, config_from_preset(presets["low-vram-16gb"], dataset="d", max_length=2048), gpu_gb=8)
    balanced = estimate(LLAMA_7B, config_from_preset(presets["balanced-24-48gb"], dataset="d"), gpu_gb=8)
    assert 3.5 < low.weights_gb < 4.5  # 6.5B weights in 4 bits plus 16-bit embeddings
    assert low.total_gb < balanced.total_gb
    assert low.fits and not balanced.fits
    assert "does NOT fit" in balanced.summary()


def test_auto_checkpointing_keeps_activations_only_when_they_fit():
    config = TrainConfig(dataset="d", batch_size=8, max_length=2048)  # gradient_checkpointing: auto
    assert config.gradient_checkpointing == "auto"
    roomy, tight = estimate(LLAMA_7B, config, gpu_gb=80, tokens=4096), estimate(LLAMA_7B, config, gpu_gb=24)
    assert not roomy.checkpointing and roomy.fits and "kept: faster" in roomy.summary()
    assert tight.checkpointing and "recomputed" in tight.summary()
    forced = estimate(LLAMA_7B, TrainConfig(dataset="d", gradient_checkpointing="on"), gpu_gb=80, tokens=4096)
    assert forced.checkpointing and forced.activations_gb < roomy.activations_gb
    # Without Liger's fused kernels the layers keep more, and the full logits are materialised.
    unfused = estimate(LLAMA_7B, config, gpu_gb=80, tokens=4096, liger=False)
    assert unfused.activations_gb > 2 * roomy.activations_gb - 0.1
    # run.yaml files written before 'auto' said true or false
    assert TrainConfig.from_dict({"dataset": "d", "gradient_checkpointing": False}).gradient_checkpointing == "off"


def _run_with(folder, records):
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return Run(folder)


def test_advisor_reads_flat_loss_overfitting_and_health(tmp_path):
    flat = _run_with(tmp_path / "flat", [{"step": s, "loss": 2.0} for s in range(10)])
    assert "not falling" in advise(flat)[0]
    falling = [{"step": s, "loss": 2 - s * 0.1} for s in range(10)]
    over = _run_with(tmp_path / "over", falling + [{"step": 10 + s, "eval_loss": 1.0 + s * 0.2} for s in range(3)])
    assert any("Overfitting" in tip for tip in advise(over))
    assert advise(_run_with(tmp_path / "healthy", falling)) == ["Healthy: the loss is falling steadily."]


def test_early_stopping_keeps_the_best_checkpoint_and_evaluates_when_it_saves(tmp_path):
    from studio.training.trainer import training_arguments

    args = training_arguments(TrainConfig(dataset="d", early_stopping_patience=2, eval_steps=5), str(tmp_path),
                              evaluate=True)
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"
    assert args.eval_steps == args.save_steps == 5
    plain = training_arguments(TrainConfig(dataset="d"), str(tmp_path), evaluate=False)
    assert not plain.load_best_model_at_end and plain.eval_strategy == "no" and plain.padding_free


def test_a_checkpoint_is_saved_at_least_every_few_minutes(workspace, monkeypatch):
    from types import SimpleNamespace

    from transformers import TrainerControl

    from studio.training import recorder

    run = create_run(workspace, TrainConfig(dataset="d"))
    clock = [1000.0]
    monkeypatch.setattr(recorder.time, "time", lambda: clock[0])
    watcher = recorder.RunRecorder(run)
    args, state = SimpleNamespace(world_size=1), SimpleNamespace(global_step=1)
    control = TrainerControl()
    clock[0] += recorder.CHECKPOINT_EVERY_S - 1
    watcher.on_step_end(args, state, control)
    assert not control.should_save
    clock[0] += 1
    watcher.on_step_end(args, state, control)
    assert control.should_save  # due, though save_steps is far off
    watcher.on_save(args, state, TrainerControl())
    control = TrainerControl()
    watcher.on_step_end(args, state, control)
    assert not control.should_save  # the clock starts again at each save
