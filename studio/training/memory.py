"""Will it fit? An estimate of a run's peak GPU memory before it starts, from the model's shape."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import TrainConfig

_BYTES_PER_WEIGHT = {"4bit": 0.5 + 0.5 / 64 * 2, "8bit": 1.0 + 4 / 64, "none": 2.0}  # plus quantisation scales
_GB = 2**30
# Framework overhead on top of the sum: the CUDA context, allocator slack, workspace buffers.
_OVERHEAD_GB = 0.6


@dataclass
class Estimate:
    weights_gb: float
    adapter_gb: float
    activations_gb: float
    total_gb: float
    gpu_gb: float | None  # the smallest visible GPU's memory, None without a GPU

    @property
    def fits(self) -> bool | None:
        return None if self.gpu_gb is None else self.total_gb <= self.gpu_gb * 0.95

    def summary(self) -> str:
        parts = (f"about {self.total_gb:.1f} GB (model {self.weights_gb:.1f}, adapter and optimizer "
                 f"{self.adapter_gb:.2f}, activations {self.activations_gb:.1f})")
        if self.gpu_gb is None:
            return f"Needs {parts}. No GPU here: it trains on the CPU, slowly."
        verdict = "fits" if self.fits else "does NOT fit — pick the 'Small GPU' preset, a shorter max length or a smaller batch"
        return f"Needs {parts}; the GPU has {self.gpu_gb:.0f} GB: {verdict}."


def model_shape(model_config) -> dict:
    """The numbers the estimate needs, from a transformers config."""
    c = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    hidden = c.hidden_size
    heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or hidden // heads
    return {"hidden": hidden, "intermediate": getattr(c, "intermediate_size", None) or 4 * hidden,
            "layers": c.num_hidden_layers, "vocab": c.vocab_size, "heads": heads, "kv_heads": kv_heads,
            "head_dim": head_dim, "tied": bool(getattr(c, "tie_word_embeddings", False))}


def estimate(shape: dict, config: TrainConfig, gpu_gb: float | None = None) -> Estimate:
    h, i, n, v = shape["hidden"], shape["intermediate"], shape["layers"], shape["vocab"]
    q_out, kv_out = shape["heads"] * shape["head_dim"], shape["kv_heads"] * shape["head_dim"]
    # (in, out) of each projection a LoRA can go into, per layer
    layer_linears = {"q_proj": (h, q_out), "k_proj": (h, kv_out), "v_proj": (h, kv_out), "o_proj": (q_out, h),
                     "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    per_layer = sum(a * b for a, b in layer_linears.values())
    embeddings = v * h * (1 if shape["tied"] else 2)  # kept in 16 bits by bitsandbytes
    weights = n * per_layer * _BYTES_PER_WEIGHT[config.quantization] + embeddings * 2

    targets = list(layer_linears) if isinstance(config.target_modules, str) else config.target_modules
    lora_params = n * sum(config.lora_r * sum(layer_linears[t]) for t in targets if t in layer_linears)
    adapter = lora_params * (4 + 4 + 8)  # fp32 weights, gradients, and two Adam moments

    tokens = config.batch_size * config.max_length
    if config.gradient_checkpointing:
        # one hidden state kept per layer, plus one layer's worth recomputed during backward
        activations = tokens * h * 2 * n + tokens * (10 * h + 4 * i) * 2
    else:
        activations = tokens * (10 * h + 4 * i) * 2 * n
    logits = tokens * v * 4 * 2  # float32 logits and their gradient
    total = (weights + adapter + activations + logits) / _GB + _OVERHEAD_GB
    return Estimate(round(weights / _GB, 2), round(adapter / _GB, 3), round((activations + logits) / _GB, 2),
                    round(total, 2), gpu_gb)


def estimate_for(model_path: str, config: TrainConfig) -> Estimate:
    """The estimate for a model folder or hub id and the smallest visible GPU."""
    from transformers import AutoConfig

    from ..gpu import list_gpus
    from ..models import allow_remote_code

    gpus = list_gpus()
    gpu_gb = min((g["total_gb"] for g in gpus), default=None)
    return estimate(model_shape(AutoConfig.from_pretrained(model_path, trust_remote_code=allow_remote_code())),
                    config, gpu_gb)
