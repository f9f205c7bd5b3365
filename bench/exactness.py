"""Is the fast path exact? One batch through LoRA Studio's engine and through the plain padded recipe, before any
update: the same loss and the same LoRA gradients, within bf16 tolerance.

The engine (studio.training.trainer.build_trainer, exactly as a run uses it) lays a batch's rows end to end
(padding-free), keeps attention inside each row with PyTorch's variable-length kernel and fuses RMSNorm, SwiGLU
and RoPE (Liger) and the LM head with the loss (trl). It takes one real training step, stopped before the
optimizer moves the weights: the batch it was fed, its loss, each sequence's loss and every LoRA gradient are kept.
The reference is the textbook computation on the same sequences: each one its own row, padded to the longest,
an attention mask, SDPA (eager on the CPU), the full logits and transformers' own loss, with labels rebuilt from
the original rows (not from the engine's batch). Both start from the same 4-bit base and the same LoRA weights,
drawn from one seed with B non-zero, so that every LoRA weight, A included, gets a gradient; the LoRA weights are
in the dtype trl gives them on a 4-bit base (bf16) on both sides, so only batching, kernels and masks differ.

Checked: the default path (chat-length rows, not packed) and the packed path (`packing: true`: several sequences
share a row and must not see each other; compared with each sequence alone). Two more computations give the
tolerance its meaning: the floor, the reference against itself with another correct attention kernel (eager
against SDPA) on the same batch, is how far apart two right answers land in bf16; and a leak, the packed
sequences fed to the reference two to a row with nothing keeping them apart, must land outside the tolerance,
else this bench could not see a wrong mask on random weights.

    python bench/exactness.py --shapes llama2-7b,qwen2.5-3b      # on the GPU machine
    python bench/exactness.py --shapes tiny --max-length 128 --median-length 30 --quantization none  # CPU smoke
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import tempfile
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.train_throughput import SHAPES, TARGETS, chat_lengths, free_gpu, make_model_dir, sequences  # noqa: E402

# The tolerance: each difference from the reference (of the loss, the worst sequence's loss, the gradients as
# one vector and the worst LoRA matrix) may be at most twice the floor's, plus one bf16 unit roundoff. Why not
# a fixed number: bf16 keeps 8 significant bits, each layer passes its rounding on, forward and backward, and on
# random weights a gradient is mostly cancellation (near-uniform attention), so how far two right answers land
# depends on the shape and the batch: on an H200, 15% of the gradient's norm on the Llama-2-7B shape, 8% on the
# Qwen2.5-3B shape, while the loss agrees to 2e-4. The engine swaps several kernels at once (attention, norms,
# SwiGLU, RoPE, the LM head and loss), hence twice; the roundoff (2^-9) keeps a tiny floor (float32 on the CPU)
# from asking for more than bf16 can give. A wrong mask moved the gradients by 97% there.
FLOOR_FACTOR, ROUNDOFF = 2.0, 2.0**-9
CHECKED = ("loss_rel", "row_loss_rel_max", "grad_rel", "grad_rel_worst_matrix")
LORA_STD = 0.02  # B's spread: the adapter moves each projection's output by about a tenth, like a trained one


def seed_lora(model, seed: int) -> None:
    """The same LoRA weights in any model with the same layers: each drawn from the seed and its own name."""
    for name, param in model.named_parameters():
        if "lora_" not in name:
            continue
        generator = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()))
        std = param.shape[1] ** -0.5 if "lora_A" in name else LORA_STD  # A: (r, in), like kaiming's spread
        param.data.copy_(torch.randn(param.shape, generator=generator) * std)


def lora_gradients(model) -> dict[str, torch.Tensor]:
    return {name: param.grad.detach().float().cpu() for name, param in model.named_parameters()
            if "lora_" in name and param.grad is not None}


def engine_step(model_dir: Path, rows: list[dict], args, **overrides) -> dict:
    """One step of the engine as a run takes it, stopped before the optimizer changes anything."""
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback

    from studio.config import TrainConfig
    from studio.training.trainer import build_trainer

    free_gpu()
    config = TrainConfig(**{**dict(model=str(model_dir), dataset="bench", quantization=args.quantization,
                                   lora_r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=TARGETS,
                                   batch_size=args.batch, grad_accum=1, max_length=args.max_length, max_steps=1,
                                   gradient_checkpointing="auto", optimizer="adamw_torch", val_fraction=0.0,
                                   seed=args.seed, warmup_ratio=0.0, save_steps=10**6), **overrides}).validate()
    seen = {}

    class Capture(TrainerCallback):
        def on_train_begin(self, args_, state, control, model=None, **kwargs):
            seed_lora(model, args.seed)  # after trl has cast the adapter and Liger has patched the layers

        def on_pre_optimizer_step(self, args_, state, control, model=None, **kwargs):
            seen["grads"] = lora_gradients(model)
            seen["lora_dtype"] = str(next(p.dtype for n, p in model.named_parameters() if "lora_" in n))

    trainer = build_trainer(config, str(model_dir), AutoTokenizer.from_pretrained(model_dir),
                            Dataset.from_list(rows), None, tempfile.mkdtemp(), [Capture()])
    trainer.args.max_grad_norm = 0  # the raw gradients: clipping would rescale them

    def fused_outputs(module, _args, inputs, outputs):  # trl's fused LM head: each token's log-probability
        if getattr(outputs, "log_probs", None) is not None:
            seen.update(inputs={k: v.detach().cpu() for k, v in inputs.items() if torch.is_tensor(v)},
                        log_probs=outputs.log_probs.detach().float().cpu())

    trainer.model.register_forward_hook(fused_outputs, with_kwargs=True)
    original = trainer.compute_loss

    def recording(*args_, **kwargs):
        loss = original(*args_, **kwargs)
        seen["loss"] = loss.item()
        return loss

    trainer.compute_loss = recording
    trainer.train()
    seen["attention"] = trainer.model.config._attn_implementation
    seen["liger"] = bool(trainer.args.use_liger_kernel)
    seen["compiled_layers"] = any(type(c).__name__ == "CompiledLayers" for c in trainer.callback_handler.callbacks)
    seen["checkpointing"] = bool(trainer.args.activation_checkpointing)
    del trainer
    free_gpu()
    return seen


def split_batch(seen: dict) -> tuple[list[list[int]], list[float]]:
    """The engine's padding-free batch cut back into its sequences, and each sequence's mean loss."""
    ids = seen["inputs"]["input_ids"][0]
    starts = (seen["inputs"]["position_ids"][0] == 0).nonzero().flatten().tolist() + [len(ids)]
    labels = seen["inputs"]["labels"][0]
    nll = -seen["log_probs"][0]  # position t scores label t + 1; zero where that label is ignored
    counted = labels[1:] != -100
    pieces, losses = [], []
    for start, end in zip(starts, starts[1:]):
        pieces.append(ids[start:end].tolist())
        tokens = counted[start:end - 1].sum().item()
        losses.append(nll[start:end - 1].sum().item() / max(tokens, 1))
    return pieces, losses


def reference_step(model, rows: list[list[list[int]]], originals: dict, pad_id: int, attention: str) -> dict:
    """The textbook step: each row padded to the longest, transformers' own loss over the full logits. A row is
    its sequences laid end to end with nothing between them: one sequence a row is the reference; several make
    the deliberate leak."""
    import torch.nn.functional as F

    model.set_attn_implementation(attention)
    device = next(model.parameters()).device
    longest = max(sum(map(len, row)) for row in rows)
    ids = torch.full((len(rows), longest), pad_id)
    mask = torch.zeros_like(ids)
    target = torch.full_like(ids, -100)
    for at, row in enumerate(rows):
        tokens = [t for piece in row for t in piece]
        ids[at, :len(tokens)] = torch.tensor(tokens)
        mask[at, :len(tokens)] = 1
        target[at, :len(tokens)] = torch.tensor([t for piece in row for t in originals[tuple(piece)]])
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):  # as Trainer's bf16
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=target.to(device))
    out.loss.backward()
    with torch.no_grad():  # each row's mean loss, counted as transformers' loss counts it
        shifted = target[:, 1:].to(device)
        nll = F.cross_entropy(out.logits[:, :-1].float().transpose(1, 2), shifted, reduction="none")
        row_losses = (nll.sum(1) / (shifted != -100).sum(1).clamp(min=1)).tolist()
    result = {"loss": out.loss.item(), "row_losses": row_losses, "grads": lora_gradients(model)}
    model.zero_grad(set_to_none=True)
    return result


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def gradient_rel(grads: dict, ref_grads: dict) -> float:
    """All LoRA gradients as one vector."""
    names = [n for n in ref_grads if n in grads]
    return relative(torch.cat([grads[n].flatten() for n in names]), torch.cat([ref_grads[n].flatten() for n in names]))


def compare(loss: float, row_losses: list[float], grads: dict, ref: dict) -> dict:
    """Relative differences from the reference: of the loss, of each sequence's loss (the worst), of the LoRA
    gradients (all matrices as one vector, and the worst single matrix)."""
    missing = sorted(set(ref["grads"]) - set(grads))
    errors = {name: relative(grads[name], g) for name, g in ref["grads"].items() if name in grads}
    worst = max(errors, key=errors.get)
    return {"loss": round(loss, 6), "reference_loss": round(ref["loss"], 6),
            "loss_rel": abs(loss - ref["loss"]) / abs(ref["loss"]),
            "row_loss_rel_max": max(abs(a - b) / abs(b) for a, b in zip(row_losses, ref["row_losses"])),
            "grad_rel": gradient_rel(grads, ref["grads"]),
            "grad_rel_worst_matrix": errors[worst], "worst_matrix": worst, "lora_matrices": len(errors),
            "missing_gradients": missing}


def reference_model(model_dir: Path, args, lora_dtype: torch.dtype):
    """The plain recipe's model: the same quantised base, LoRA by peft's get_peft_model, the same LoRA weights."""
    from peft import LoraConfig, get_peft_model

    from studio.models import load_base_model

    model = load_base_model(str(model_dir), args.quantization)
    model.gradient_checkpointing_enable({"use_reentrant": False})  # recomputing repeats the same arithmetic
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                                             target_modules=TARGETS, task_type="CAUSAL_LM"))
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.data = param.data.to(lora_dtype)
    seed_lora(model, args.seed)
    model.train()
    return model


def check_shape(shape: str, args) -> dict:
    from transformers import AutoTokenizer

    model_dir = make_model_dir(shape, Path(args.models))
    vocab = SHAPES[shape]["vocab_size"]
    attention = "sdpa" if torch.cuda.is_available() else "eager"

    def rows_of(count: int, seed: int) -> list[dict]:
        # The first third of each row is the prompt, which the loss skips: the engine's label masking is checked too.
        data = sequences(chat_lengths(count, seed, args.max_length, args.median_length), vocab, seed)
        return [{"input_ids": ids, "assistant_masks": [0] * (len(ids) // 3) + [1] * (len(ids) - len(ids) // 3)}
                for ids in data]

    default_rows, packed_rows = rows_of(args.batch, args.seed), rows_of(args.packed_sequences, args.seed + 1)
    originals = {tuple(r["input_ids"]): [t if m else -100 for t, m in zip(r["input_ids"], r["assistant_masks"])]
                 for r in default_rows + packed_rows}  # the labels, from the rows themselves

    default = engine_step(model_dir, default_rows, args)
    packed = engine_step(model_dir, packed_rows, args, packing=True, batch_size=args.packed_batch)
    reference = reference_model(model_dir, args, getattr(torch, default["lora_dtype"].removeprefix("torch.")))
    pad_id = AutoTokenizer.from_pretrained(model_dir).pad_token_id

    other = "eager" if attention == "sdpa" else "sdpa"
    result = {"model_shape": shape, "reference_attention": attention, "floor_attention": other,
              "engine": {k: default[k] for k in ("attention", "liger", "compiled_layers", "checkpointing",
                                                      "lora_dtype")}}
    for name, seen in (("default", default), ("packed", packed)):
        pieces, row_losses = split_batch(seen)
        unknown = [len(p) for p in pieces if tuple(p) not in originals]
        if unknown:  # the engine cut or merged sequences: nothing to compare them with, and a bug in itself
            result[name] = {"sequences": len(pieces), "not_original_rows": unknown, "within_tolerance": False}
            continue
        alone = [[p] for p in pieces]
        ref = reference_step(reference, alone, originals, pad_id, attention)
        alt = reference_step(reference, alone, originals, pad_id, other)
        floor = compare(alt["loss"], alt["row_losses"], alt["grads"], ref)
        allowed = {k: FLOOR_FACTOR * floor[k] + ROUNDOFF for k in CHECKED}
        engine = compare(seen["loss"], row_losses, seen["grads"], ref)
        result[name] = {"rows": len(pieces) if name == "default" else args.packed_batch, "sequences": len(pieces),
                        "tokens": sum(map(len, pieces)), **engine, "floor": {k: floor[k] for k in CHECKED},
                        "allowed": allowed, "within_tolerance": not engine["missing_gradients"] and
                        all(engine[k] <= allowed[k] for k in CHECKED)}
        print(shape, name, json.dumps(result[name]), flush=True)
        if name == "packed":  # the same sequences two to a row, free to attend across: what a wrong mask does
            leak = reference_step(reference, [pieces[i:i + 2] for i in range(0, len(pieces), 2)], originals, pad_id,
                                  attention)
            result["leak"] = {"loss_rel": abs(leak["loss"] - ref["loss"]) / abs(ref["loss"]),
                              "grad_rel": gradient_rel(leak["grads"], ref["grads"])}
            result["leak"]["outside_tolerance"] = any(result["leak"][k] > allowed[k] for k in ("loss_rel", "grad_rel"))
            print(shape, "leak", json.dumps(result["leak"]), flush=True)
    result["exact"] = all(result[n]["within_tolerance"] for n in ("default", "packed"))
    del reference
    free_gpu()
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=lambda text: text.split(","), default=["llama2-7b", "qwen2.5-3b"])
    parser.add_argument("--batch", type=int, default=8, help="rows of the default (not packed) batch")
    parser.add_argument("--packed-batch", type=int, default=2, help="packed rows of the packed batch")
    parser.add_argument("--packed-sequences", type=int, default=24, help="chat-length sequences to pack")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--quantization", choices=("4bit", "none"), default="4bit",
                        help="of the base; 'none' for a quick check on the CPU, where 4-bit matmuls are slow")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--median-length", type=int, default=300, help="median tokens of a sequence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=tempfile.gettempdir(), help="where the random models are written")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "exactness.json"))
    args = parser.parse_args(argv)

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    command = "python bench/exactness.py " + " ".join(argv if argv is not None else sys.argv[1:])
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    for shape in args.shapes:
        result = check_shape(shape, args)
        results[shape] = {"gpu": gpu, "date": datetime.date.today().isoformat(), "command": command,
                          "torch": torch.__version__, "tolerance": {"floor_factor": FLOOR_FACTOR, "roundoff": ROUNDOFF},
                          **result}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")  # after each shape: a run cut short keeps what it had
    for shape in args.shapes:  # the short table, last
        r = results[shape]
        parts = []
        for part in ("default", "packed"):
            got, floor = r[part], r[part].get("floor", {})
            parts.append(" ".join(f"{what} {got.get(key, math.nan):.1e} (floor {floor.get(key, math.nan):.1e})"
                                  for what, key in (("loss", "loss_rel"), ("grad", "grad_rel"))))
        leak = r.get("leak", {}).get("grad_rel", math.nan)
        print(f"{shape}: {'EXACT' if r['exact'] else 'MISMATCH'}", *(f"{part} {text}" for part, text in
              zip(("default", "packed"), parts)), f"leak grad {leak:.1e}", sep="; ",
              flush=True)
    return results


if __name__ == "__main__":
    main()
