"""Which adapter each batch row uses, decided per thread, so users sharing one model never see each other's.

peft's LoRA layers already compute a batch whose rows use different adapters (their `adapter_names`
keyword, "__base__" for a row without one). But peft hands that keyword to the layers through forward
hooks it registers on the shared model for the length of one `generate(adapter_names=...)` call: when two
threads generate at once, both threads' hooks fire on every layer and one thread's rows run with the
other's adapters (seen in peft 0.21.2: 4 of 6 concurrent answers came out wrong). Here each LoRA layer
gets one permanent hook instead, which reads the rows' adapters from the calling thread. Nothing about
the model changes while it generates, and peft's global active adapter is never consulted.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

BASE = "__base__"  # peft's name for "no adapter" in adapter_names

_current = threading.local()


@contextmanager
def route(adapter_names: list[str]):
    """While inside, row i of every forward pass this thread runs uses adapter_names[i]."""
    previous = getattr(_current, "names", None)
    _current.names = list(adapter_names)
    try:
        yield
    finally:
        _current.names = previous


def _inject_adapter_names(module, args, kwargs):
    names = getattr(_current, "names", None)
    if names is not None:
        kwargs["adapter_names"] = names
    return args, kwargs


def install(model) -> None:
    """Give every LoRA layer of the model the routing hook, once (call again after each adapter load:
    an adapter aimed at other layers brings new ones)."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer) and not getattr(module, "_studio_routed", False):
            module.register_forward_pre_hook(_inject_adapter_names, with_kwargs=True)
            module._studio_routed = True
