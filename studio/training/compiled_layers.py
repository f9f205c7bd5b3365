"""torch.compile over each decoder layer while a run trains on the GPU.

On chat-length batches the GPU waits on Python: a 7B step launches thousands of small kernels (the 4-bit matrix
products, LoRA's small ones, norms, RoPE), and launching them takes longer than running them (docs/benchmarks.md,
"The default path, compiled").
Compiling each decoder layer turns its many small operations into a few fused kernels called from one graph. Liger's
layer kernels are left out then: inductor fuses the same operations itself, and Liger's Triton kernels do not
compile inside its graphs. trl's fused LM head and loss stay as they are, outside the layers.

Compiled only on one GPU, for supervised runs that keep their activations (the measured and checked path: with
gradient checkpointing on, compiling bought nothing, so those runs keep Liger's kernels and their measured memory);
an error while compiling falls back to running that layer eagerly. STUDIO_COMPILE=0 turns it off (an administrator's
escape hatch, and how the benches measure the difference).
"""
from __future__ import annotations

import os


def compiles(method: str, processes: int, checkpointing: bool) -> bool:
    """Whether a run with this method, on this many processes, with or without gradient checkpointing, trains
    through compiled layers."""
    import torch

    return (torch.cuda.is_available() and method == "sft" and processes == 1 and not checkpointing
            and os.environ.get("STUDIO_COMPILE", "1") != "0")


def compiled_layers_callback(backend: str = "inductor"):
    """A TrainerCallback compiling the model's decoder layers when training begins and restoring them when it ends,
    so that the report card's answers, written token by token, run eagerly. backend: torch.compile's (inductor
    generates the fused kernels; the tests take a quicker one on the CPU)."""
    from transformers import TrainerCallback
    from transformers.modeling_layers import GradientCheckpointingLayer

    class CompiledLayers(TrainerCallback):
        def __init__(self):
            self.layers = []  # the layers compiled while training, restored when it ends

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            import torch._dynamo

            torch._dynamo.reset()  # graphs of an earlier model in this process (a bench's) would count to its limit
            torch._dynamo.config.suppress_errors = True  # an unfamiliar layer runs eagerly instead of failing
            self.layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
            for layer in self.layers:
                # The first step compiles for its batch's size, the second for any size: every later batch,
                # whatever its token count, reuses that graph (one graph for all layers: they share their code).
                layer.compile(backend=backend)
            print(f"Compiling the model's {len(self.layers)} layers: the first two steps take longer.", flush=True)

        def on_train_end(self, args, state, control, **kwargs):
            for layer in self.layers:
                layer._compiled_call_impl = None  # what nn.Module.compile set: the layer's eager call again
            self.layers = []

    return CompiledLayers()
