"""Chat with base models and LoRA adapters: a shared model pool, and streamed answers, alone or side by side.

    pool = ModelPool(max_bases=1, max_adapters=4, max_concurrent=2)
    stream = compare(pool, model_path, "Hi!", left=None, right=run.adapter_dir)
    for base_delta, adapter_delta in stream: ...
    stream.answers  # per side: the text, time to first token, tokens per second, adapter load time

Names are imported on first use (PEP 562), so `python -m studio --help`, which imports the chat command,
does not pay for importing torch and transformers.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "ModelPool": "pool", "PooledBase": "pool", "AdapterInfo": "pool", "Session": "pool",
    "QUANTIZATIONS": "pool", "choose_quantization": "pool",
    "AdapterError": "adapters", "AdapterSource": "adapters", "read_adapter": "adapters",
    "GenerationSettings": "generate", "Answer": "generate", "ChatStream": "generate", "ChatError": "generate",
    "Row": "generate", "chat": "generate", "compare": "generate", "conversation": "generate", "render": "generate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
