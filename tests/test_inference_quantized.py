"""Per-row adapter routing on bitsandbytes 8-bit and 4-bit layers (what QLoRA runs are chatted with): a batch
of base + adapter rows answers exactly as peft's ordinary one-adapter-at-a-time path on the same weights.
Slow on the CPU (quantised loads and int8 matrix products), so kept apart from test_inference.py."""
import pytest
import torch

from studio.inference import GenerationSettings, ModelPool, compare

PROMPT = "Tell me a story about a cat."
SETTINGS = GenerationSettings(temperature=0, max_new_tokens=6)


@pytest.fixture(scope="module")
def adapter(embedded_model_dir, tmp_path_factory) -> str:
    from peft import LoraConfig, get_peft_model

    from studio.models import load_base_model

    torch.manual_seed(1)
    model = get_peft_model(load_base_model(str(embedded_model_dir), "none"),
                           LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    return str(folder)


def greedy(model, tokenizer) -> str:
    """peft's ordinary path: whatever adapter the model has active, no per-row routing."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=SETTINGS.max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_routing_matches_peft_on_quantized_layers(embedded_model_dir, adapter, quantization):
    from peft.tuners.lora import bnb

    pool = ModelPool()
    base = pool.base(str(embedded_model_dir), quantization)
    plain_base = greedy(base.model, base.tokenizer)  # before any adapter is attached
    side_by_side = compare(pool, str(embedded_model_dir), PROMPT, left=None, right=adapter, settings=SETTINGS,
                           quantization=quantization).collect()
    lora_layer = base.model.get_submodule("model.layers.0.self_attn.q_proj")
    assert isinstance(lora_layer, bnb.Linear8bitLt if quantization == "8bit" else bnb.Linear4bit)
    plain_adapter = greedy(base.model, base.tokenizer)  # the only adapter is peft's active one
    assert plain_base != plain_adapter
    assert [a.text for a in side_by_side] == [plain_base, plain_adapter]
