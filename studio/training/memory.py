"""Will it fit? An estimate of a run's peak GPU memory before it starts, from the model's shape."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import TrainConfig
from ..messages import Message

_BYTES_PER_WEIGHT = {"4bit": 0.5 + 0.5 / 64 * 2, "8bit": 1.0 + 4 / 64, "none": 2.0}  # plus quantisation scales
_GB = 2**30
# Framework overhead on top of the sum: the CUDA context, allocator slack, workspace buffers.
_OVERHEAD_GB = 0.6
# Bytes a token's activations take: in one decoder layer, per hidden and per intermediate unit; outside the
# layers (embeddings, loss, gradients in flight), per hidden unit; and in the output head's float32 logits and
# their gradient, which Liger's fused loss never materialises. Fitted (least squares, relative error) to
# torch's peak on an H100: the Llama-2-7B and Qwen2.5-3B shapes, 1,024 to 32,768 tokens a batch, activations
# kept and recomputed; the estimate is 0.3-1.7 GB above all 22 runs (bench/memory_calibration.py).
_LAYER_BYTES_PER_TOKEN = (14.5, 6.5)
# Without Liger, RMSNorm, SwiGLU and RoPE keep their unfused intermediates too. Not measured (every calibration
# run had Liger): counted as twice the layer's bytes, to err on the safe side.
_UNFUSED_LAYER_FACTOR = 2
_OUTSIDE_BYTES_PER_TOKEN = 13
_LOGIT_BYTES_PER_TOKEN = 8
_USABLE = 0.9  # the share of a GPU's memory a run may plan to use; the rest absorbs fragmentation


@dataclass
class Estimate:
    weights_gb: float
    adapter_gb: float
    activations_gb: float
    total_gb: float
    gpu_gb: float | None  # the memory it has to fit in; None without a GPU
    checkpointing: bool  # whether activations are recomputed (the setting, or what 'auto' chose)

    @property
    def fits(self) -> bool | None:
        return None if self.gpu_gb is None else self.total_gb <= self.gpu_gb * _USABLE

    def summary(self) -> Message:
        how = Message(", recomputed to save memory") if self.checkpointing else Message(", kept: faster")
        parts = Message("about {total:.1f} GB (model {weights:.1f}, adapter and optimizer {adapter:.2f}, activations "
                        "{activations:.1f}{how})", total=self.total_gb, weights=self.weights_gb,
                        adapter=self.adapter_gb, activations=self.activations_gb, how=how)
        if self.gpu_gb is None:
            return Message("Needs {parts}. No GPU here: it trains on the CPU, slowly.", parts=parts)
        verdict = Message("fits") if self.fits else \
            Message("does NOT fit — pick the 'Small GPU' preset, a shorter max length or a smaller batch")
        return Message("Needs {parts}; the GPU has {gpu:.0f} GB: {verdict}.", parts=parts, gpu=self.gpu_gb,
                       verdict=verdict)


def sequences_per_batch(config: TrainConfig) -> int:
    """Rows the model takes in at once: a batch of preference pairs holds each pair's chosen and rejected side."""
    return config.batch_size * (2 if config.method == "dpo" else 1)


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


def estimate(shape: dict, config: TrainConfig, gpu_gb: float | None = None, tokens: int | None = None,
             liger: bool = True) -> Estimate:
    """Peak memory of a run on a GPU; `tokens` is the largest batch's token count (default: its rows x max
    length); liger: Liger's kernels are installed (setup.sh puts them on GPU machines).
    With gradient_checkpointing 'auto', activations are kept when everything fits in gpu_gb, else recomputed."""
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

    tokens = tokens or sequences_per_batch(config) * config.max_length
    one_layer = tokens * (_LAYER_BYTES_PER_TOKEN[0] * h + _LAYER_BYTES_PER_TOKEN[1] * i) * \
        (1 if liger else _UNFUSED_LAYER_FACTOR)
    outside = tokens * h * _OUTSIDE_BYTES_PER_TOKEN + (0 if liger else tokens * v * _LOGIT_BYTES_PER_TOKEN)

    def total(checkpointing: bool) -> tuple[float, float]:
        # checkpointing keeps one 16-bit hidden state per layer, and the activations of the layer being
        # recomputed during the backward pass
        activations = (tokens * h * 2 * n + one_layer if checkpointing else one_layer * n) + outside
        return activations, (weights + adapter + activations) / _GB + _OVERHEAD_GB

    checkpointing = config.gradient_checkpointing == "on"
    if config.gradient_checkpointing == "auto":
        checkpointing = gpu_gb is not None and total(False)[1] > gpu_gb * _USABLE
    activations, total_gb = total(checkpointing)
    return Estimate(round(weights / _GB, 2), round(adapter / _GB, 3), round(activations / _GB, 2),
                    round(total_gb, 2), gpu_gb, checkpointing)


def estimate_for(model_path: str, config: TrainConfig, tokens: int | None = None) -> Estimate:
    """The estimate for a model folder or hub id and the smallest visible GPU; `tokens` as for estimate()."""
    from transformers import AutoConfig

    from ..gpu import list_gpus
    from ..models import allow_remote_code

    gpus = list_gpus()
    gpu_gb = min((g["total_gb"] for g in gpus), default=None)
    return estimate(model_shape(AutoConfig.from_pretrained(model_path, trust_remote_code=allow_remote_code())),
                    config, gpu_gb, tokens, liger=liger_installed())


def choose_checkpointing(model_path: str, config: TrainConfig, tokens: int) -> bool:
    """Whether the run recomputes activations: as set, or for 'auto', only when keeping them for its largest
    batch (`tokens`) would not fit in the memory free on this process's GPU (or in free RAM on the CPU)."""
    import os

    import torch
    from transformers import AutoConfig

    from ..models import allow_remote_code

    if config.gradient_checkpointing != "auto":
        return config.gradient_checkpointing == "on"
    if torch.cuda.is_available():
        free = _least_free_on_run_gpus()
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    shape = model_shape(AutoConfig.from_pretrained(model_path, trust_remote_code=allow_remote_code()))
    fused = torch.cuda.is_available() and liger_installed()
    return estimate(shape, config, free / _GB, tokens, liger=fused).checkpointing


def _least_free_on_run_gpus() -> int:
    """Bytes free on the run's fullest GPU. Read through NVML: asking torch before the process has chosen
    its GPU would open a CUDA context on GPU 0 in every process of a multi-GPU run; and every process reads
    the same GPUs, so all of them decide alike (FSDP hangs when they recompute differently)."""
    import os

    import torch

    from ..gpu import list_gpus

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # the queue names the run's GPUs here, in NVML's order
    gpus = list_gpus()
    mine = [g for g in gpus if visible is None or str(g["index"]) in visible.split(",")]
    if not mine:  # NVML missing, or GPUs named by UUID: this process's own GPU
        return torch.cuda.mem_get_info(int(os.environ.get("LOCAL_RANK", "0")))[0]
    return int(min(g["free_gb"] for g in mine) * _GB)


def liger_installed() -> bool:
    """Liger's fused Triton kernels (GPU only) are there to use: setup.sh installs them on GPU machines."""
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None
