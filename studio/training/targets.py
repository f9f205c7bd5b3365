"""Which layers LoRA goes into, for the architecture at hand."""
from __future__ import annotations

from ..config import ConfigError
from ..messages import Message

# Llama-style names (also Qwen, Mistral, Gemma, Phi-3) and what other families call the same layers.
_SYNONYMS = {
    "q_proj": ("c_attn", "query_key_value", "Wqkv", "qkv_proj", "query"),
    "k_proj": ("c_attn", "query_key_value", "Wqkv", "qkv_proj", "key"),
    "v_proj": ("c_attn", "query_key_value", "Wqkv", "qkv_proj", "value"),
    "o_proj": ("c_proj", "dense", "out_proj"),
    "gate_proj": ("c_fc", "w1", "fc1", "gate_up_proj"),
    "up_proj": ("c_fc", "w3", "fc1", "dense_h_to_4h", "gate_up_proj"),
    "down_proj": ("c_proj", "w2", "fc2", "dense_4h_to_h"),
}
_NEVER = {"lm_head", "embed_out", "output"}  # the output head stays frozen: it is huge and tied to the embeddings


def linear_layer_names(model) -> set[str]:
    """The short names of the model's linear layers (plain, GPT-2 Conv1D or bitsandbytes-quantised)."""
    names = set()
    for full_name, module in model.named_modules():
        kind = type(module).__name__
        if kind in ("Linear", "Conv1D", "Linear4bit", "Linear8bitLt"):
            short = full_name.rsplit(".", 1)[-1]
            if short not in _NEVER:
                names.add(short)
    return names


def resolve_target_modules(model, wanted: list[str] | str) -> list[str] | str:
    """The layer names to give peft; raises ConfigError naming the model's layers when nothing fits."""
    available = linear_layer_names(model)
    if not available:
        raise ConfigError(Message("LoRA cannot be placed in {model}: it has no linear layers.",
                                  model=type(model).__name__))
    if wanted in ("auto", "all-linear", ["auto"], ["all-linear"]):
        return "all-linear"
    resolved: list[str] = []
    for name in wanted:
        for candidate in (name, *_SYNONYMS.get(name, ())):
            if candidate in available:
                if candidate not in resolved:
                    resolved.append(candidate)
                break
    if not resolved:
        raise ConfigError(Message(
            "target_modules: this model has no layers named {wanted}. Its linear layers are: {available}. Pick some "
            "of these, or 'all-linear'.", wanted=", ".join(wanted), available=", ".join(sorted(available))))
    return resolved
