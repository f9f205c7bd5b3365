"""An adapter folder as chat sees it: is it a LoRA adapter chat can serve, and does it fit this base model?

Everything here is checked before the shared model is touched, so a wrong folder costs the user an error
message and costs nobody else their loaded model.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..messages import Message

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")

# Saved LoRA tensors: base_model.model.<layer path>.lora_A.weight (lora_embedding_A for embeddings).
_LORA_KEY = re.compile(r"^base_model\.model\.(?P<layer>.+)\."
                       r"(?:lora_(?P<ab>[AB])\.weight|lora_embedding_(?P<eab>[AB]))$")


class AdapterError(ValueError):
    """An adapter chat cannot use; the message says why and what to pick instead."""


@dataclass(frozen=True)
class AdapterSource:
    path: Path
    name: str  # the adapter's name inside the shared model: the folder and the version of its weights
    base_model: str  # what the adapter says it was trained on ('' when it does not say)


def read_adapter(path) -> AdapterSource:
    """The adapter in a folder, or AdapterError saying what is wrong with the folder."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise AdapterError(Message("No adapter folder at {folder}. Pick a training run, or the folder that holds "
                                   "adapter_config.json.", folder=str(folder)))
    config_path = folder / "adapter_config.json"
    if not config_path.exists():
        if (folder / "adapter").is_dir():
            raise AdapterError(Message("{folder} looks like a run folder; its adapter is in {adapter}.",
                                       folder=str(folder), adapter=str(folder / "adapter")))
        raise AdapterError(Message("{folder} is not a peft adapter folder: it has no adapter_config.json. Pick the "
                                   "folder a training run saved its adapter to (it holds adapter_config.json and "
                                   "adapter_model.safetensors).", folder=str(folder)))
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AdapterError(Message("{file} is damaged (not valid JSON). Save the adapter again.",
                                   file=str(config_path))) from None
    weights = next((folder / w for w in WEIGHT_FILES if (folder / w).exists()), None)
    if weights is None:
        raise AdapterError(Message("{folder} has adapter_config.json but no adapter weights ({files}); the training "
                                   "run may not have finished saving it.", folder=str(folder),
                                   files=" or ".join(WEIGHT_FILES)))
    _check_supported(folder, config)
    stat = weights.stat()
    version = f"{folder.resolve()}|{weights.name}|{stat.st_mtime_ns}|{stat.st_size}"
    # A retrained run overwrites its adapter folder; a new version of the weights gets a new name.
    name = "adapter_" + hashlib.sha1(version.encode()).hexdigest()[:12]
    return AdapterSource(folder.resolve(), name, str(config.get("base_model_name_or_path") or ""))


def _check_supported(folder: Path, config: dict) -> None:
    kind = config.get("peft_type")
    if kind != "LORA":
        raise AdapterError(Message("{folder} holds an adapter of kind {kind}; chat serves LoRA and QLoRA adapters "
                                   "(what LoRA Studio trains).", folder=str(folder), kind=kind or "unknown"))
    # These kinds cannot share one model between users: peft mixes adapters within a batch only for plain
    # LoRA layers.
    if config.get("use_dora"):
        raise AdapterError(Message("{folder} is a DoRA adapter, which chat cannot serve next to other adapters. Merge "
                                   "it into its base model and chat with the merged model instead.",
                                   folder=str(folder)))
    extra = config.get("modules_to_save") or config.get("trainable_token_indices") or config.get("target_parameters")
    if extra:
        raise AdapterError(Message("{folder} also retrains whole layers or parameters ({extra}), which chat cannot "
                                   "serve next to other adapters. Merge it into its base model and chat with the "
                                   "merged model.", folder=str(folder), extra=str(extra)))


def check_fits(source: AdapterSource, model, model_label: str) -> None:
    """AdapterError when the adapter's layers are missing from the model or have other sizes: it was
    trained for a different base model."""
    trained_for = Message(" It was trained for '{base}'; chat with it on that model.", base=source.base_model) \
        if source.base_model else ""
    for key, shape in _tensor_shapes(source.path).items():
        match = _LORA_KEY.match(key)
        if not match:
            continue
        layer = match["layer"]
        try:
            module = model.get_submodule(layer)
        except AttributeError:
            raise AdapterError(Message("The adapter at {path} does not fit {model}: it changes a layer '{layer}' that "
                                       "this model does not have.{trained_for}", path=str(source.path),
                                       model=model_label, layer=layer, trained_for=trained_for)) from None
        sizes = _in_out(module)
        if sizes is None:  # a layer kind without plain sizes: peft checks it while loading
            continue
        # lora_A is (rank, in), lora_B is (out, rank).
        is_a = (match["ab"] or match["eab"]) == "A"
        if (shape[-1] if is_a else shape[0]) != (sizes[0] if is_a else sizes[1]):
            raise AdapterError(Message("The adapter at {path} does not fit {model}: layer '{layer}' has size "
                                       "{size_in}x{size_out} in this model, the adapter expects another size."
                                       "{trained_for}", path=str(source.path), model=model_label, layer=layer,
                                       size_in=sizes[0], size_out=sizes[1], trained_for=trained_for))


def key_in_slot(key: str, slot: str) -> str:
    """A saved adapter tensor's name as the shared model calls it in that slot (lora_A.weight ->
    lora_A.<slot>.weight)."""
    match = _LORA_KEY.match(key)
    if not match:
        return key
    if match["ab"]:
        return f"base_model.model.{match['layer']}.lora_{match['ab']}.{slot}.weight"
    return f"base_model.model.{match['layer']}.lora_embedding_{match['eab']}.{slot}"


def _tensor_shapes(folder: Path) -> dict[str, list[int]]:
    """The saved tensors' shapes: from the safetensors header alone (a 7B adapter's weights are 160 MB),
    or by loading an older .bin file."""
    weights = folder / WEIGHT_FILES[0]
    if weights.exists():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights), framework="pt") as saved:
                return {key: saved.get_slice(key).get_shape() for key in saved.keys()}
        except SafetensorError as e:
            raise AdapterError(Message("{file} is damaged ({reason}). Save or train the adapter again.",
                                       file=str(weights), reason=str(e))) from None
    from peft.utils import load_peft_weights

    return {key: list(tensor.shape) for key, tensor in load_peft_weights(str(folder), device="cpu").items()}


def _in_out(module) -> tuple[int, int] | None:
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return module.in_features, module.out_features
    if hasattr(module, "num_embeddings"):
        return module.num_embeddings, module.embedding_dim
    return None


def base_mismatch(source: AdapterSource, model_path: str) -> str:
    """A warning when the adapter names a different base model than the one it is attached to; the sizes
    fit (a fine-tune of the same architecture) so it loads, but answers may be poor."""
    if not source.base_model:
        return ""
    said, used = Path(source.base_model).name.lower(), Path(str(model_path)).name.lower()
    if said == used:
        return ""
    return Message("This adapter was trained on '{base}' and is attached to '{model}'. It loads, but its answers are "
                   "only meaningful on the model it was trained on.", base=source.base_model, model=str(model_path))
