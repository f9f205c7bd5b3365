"""ModelPool: base models loaded once per (model, quantisation) and shared by every chat user, with LoRA
adapters attached to them by name.

One copy of each base serves the base model and all of its adapters: each batch row names its adapter
(see routing.py), so switching adapters, or answering with the base and an adapter side by side, changes
nothing in the model. What does change the model (attaching or removing an adapter) takes the base's
write lock, so it waits for running generations and they wait for it. A semaphore bounds how many
generations run at once over the whole pool.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
import warnings
from collections import Counter, OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..messages import Message
from ..models import MODEL_LOADS, free_memory, load_base_model, load_tokenizer, parameter_count
from . import routing
from .adapters import AdapterError, AdapterSource, base_mismatch, check_fits, key_in_slot, read_adapter
from .rwlock import ReadWriteLock

QUANTIZATIONS = ("auto", "4bit", "8bit", "none")
AUTO_16BIT_SHARE = 0.4  # "auto" loads 16-bit weights when they take under this share of free GPU memory

# Every base and adapter load in this process goes one at a time (see studio.models.MODEL_LOADS); the lock
# is always taken before a base's write lock.

_LACKS_LAYERS = "the weights file lacks some of the layers its adapter_config.json names"

# peft warns when an evicted adapter was its "active" one; the pool never uses peft's active adapter.
warnings.filterwarnings("ignore", message=r"Adapter \S+ was active which is now deleted")


@dataclass(frozen=True)
class AdapterInfo:
    name: str  # the adapter's own name (AdapterSource.name)
    slot: str  # the name of the LoRA layers that hold it in the shared model (they may have held others before)
    path: Path
    load_s: float  # how long attaching it took: the "adapter swap time" when it was not cached
    warning: str = ""


class _Closed(Exception):
    """The pooled base was unloaded while a request waited for it; the request starts over."""


class PooledBase:
    """One loaded base model and the adapters attached to it, most recently used last."""

    def __init__(self, path: str, quantization: str, model, tokenizer, load_s: float, max_adapters: int):
        self.path, self.quantization, self.load_s = path, quantization, load_s
        self.model = model  # the transformers model; peft puts its LoRA layers into it in place
        self.tokenizer = tokenizer
        self.lock = ReadWriteLock()  # read: generating; write: attaching or removing adapters
        self.closed = False
        self._peft = None  # the PeftModel around self.model, once an adapter is attached
        self._lora_layers: dict = {}  # the model's LoRA layers by module name, as of peft's last walk
        # Names for new LoRA layers, never an adapter's own name: after a swap, layers named after one adapter
        # would hold another's weights. Of one length, so that no name is part of another (peft matches
        # an adapter's tensors by substring).
        self._slot_names = (f"slot{number:08d}" for number in itertools.count(1))
        self._max_adapters = max_adapters
        self._adapters: OrderedDict[str, AdapterInfo] = OrderedDict()
        self._pins: Counter[str] = Counter()  # adapters that requests are about to use or are using
        self._book = threading.Lock()  # guards _adapters and _pins

    @property
    def label(self) -> str:
        return f"{Path(self.path).name} ({self.quantization})"

    def adapters(self) -> list[AdapterInfo]:
        with self._book:
            return list(self._adapters.values())

    @contextmanager
    def pinned(self, sources: list[AdapterSource | None]):
        """Attach the adapters that are not yet attached and keep all of them from being evicted while
        inside. Yields, per source, its AdapterInfo (None for the base) and whether it was loaded now."""
        infos: list[AdapterInfo | None] = []
        loaded_now: list[bool] = []
        try:
            for source in sources:
                info, loaded = self._pin(source) if source else (None, False)
                infos.append(info)
                loaded_now.append(loaded)
            yield infos, loaded_now
        finally:
            with self._book:
                for info in infos:
                    if info:
                        self._pins[info.name] -= 1

    def _pin(self, source: AdapterSource) -> tuple[AdapterInfo, bool]:
        with self._book:
            info = self._take(source.name)
        if info:
            return info, False
        with MODEL_LOADS, self.lock.write():
            if self.closed:
                raise _Closed
            with self._book:
                info = self._take(source.name)  # attached by another request while this one waited
            if info:
                return info, False
            started = time.perf_counter()
            check_fits(source, self.model, self.label)
            with self._book:
                full = len(self._adapters) >= self._max_adapters
                idle = [info for info in self._adapters.values() if not self._pins[info.name]]
            slot = (self._swap_into(idle[0], source) if full and idle else None) or self._attach(source)
            info = AdapterInfo(source.name, slot, source.path, time.perf_counter() - started,
                               base_mismatch(source, self.path))
            with self._book:
                self._adapters[source.name] = info
                self._pins[source.name] += 1
                idle = [info for info in self._adapters.values() if not self._pins[info.name]]
                victims = idle[:max(0, len(self._adapters) - self._max_adapters)]
                for victim in victims:
                    del self._adapters[victim.name]
            for victim in victims:
                self._peft.delete_adapter(victim.slot)
            return info, True

    def _take(self, name: str) -> AdapterInfo | None:
        """The attached adapter, pinned and marked most recently used (the caller holds _book)."""
        info = self._adapters.get(name)
        if info:
            self._adapters.move_to_end(name)
            self._pins[name] += 1
        return info

    def _swap_into(self, victim: AdapterInfo, source: AdapterSource) -> str | None:
        """Evict the idle victim by copying the source's weights into its LoRA layers (peft's hot-swap) rather
        than building new layers: 111 ms against 146-194 ms beside an attached adapter on a 7B shape
        (bench/chat_latency.py). Returns the slot; None, and _attach does the load, when the two differ in
        layers or rank (the victim stays) or the copy fails (the victim is gone). The caller holds the write
        lock."""
        from peft import LoraConfig
        from peft.utils import load_peft_weights
        from peft.utils.hotswap import hotswap_adapter_from_state_dict

        config = LoraConfig.from_pretrained(str(source.path))
        config.inference_mode = True
        held = self._peft.peft_config[victim.slot]
        # The same layers of the same sizes; scaling (alpha, rsLoRA) is set anew, dropout is off in chat.
        if _layout(config) != _layout(held):
            return None
        with self._book:
            if self._pins[victim.name] or self._adapters.get(victim.name) is not victim:
                return None  # a request took it up meanwhile
            del self._adapters[victim.name]  # from here on no request can take it up
        try:
            weights = load_peft_weights(str(source.path), device=str(self.model.device))
            hotswap_adapter_from_state_dict(self._peft, {key_in_slot(key, victim.slot): tensor
                                                         for key, tensor in weights.items()}, victim.slot, config)
        except Exception:  # noqa: BLE001 - _attach loads it the ordinary way and says what is wrong with it
            self._peft.delete_adapter(victim.slot)
            return None
        self._peft.peft_config[victim.slot] = config
        return victim.slot

    def _attach(self, source: AdapterSource) -> str:
        """Load the adapter into new LoRA layers and return their slot (the caller holds the write lock)."""
        from peft import PeftModel

        first, slot = self._peft is None, next(self._slot_names)
        try:
            if self._load_plain(source, slot):
                return slot
            # peft's general load. low_cpu_mem_usage: the new layers are made empty and take the file's tensors,
            # instead of being initialised at random only to be overwritten.
            if first:
                self._peft = PeftModel.from_pretrained(self.model, str(source.path), adapter_name=slot,
                                                       low_cpu_mem_usage=True)
            else:
                self._peft.load_adapter(str(source.path), adapter_name=slot, low_cpu_mem_usage=True)
            if any(weight.is_meta for name, weight in self._peft.named_parameters() if f".{slot}." in name):
                raise ValueError(_LACKS_LAYERS)
            self._new_layers()
            return slot
        except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways; the user needs one message
            if first and self._has_lora_layers():  # peft had begun rewriting the model's layers: drop this copy
                self._release()
            elif slot in self._peft.peft_config:
                self._peft.delete_adapter(slot)
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200].rstrip(".")
            raise AdapterError(Message("Could not load the adapter at {path} onto {model}: {reason}. Save or train "
                                       "the adapter again, or pick another one.",
                                       path=str(source.path), model=self.label, reason=reason)) from None

    def _load_plain(self, source: AdapterSource, slot: str) -> bool:
        """Load an adapter of plain LoRA matrices (no DoRA or other variant, one rank) by giving its tensors to
        its layers directly, where peft's load takes a state_dict() of the whole model to find them (on a
        4-bit 7B, every layer's quantisation state). Beside attached adapters it also skips peft's injection,
        which walks every module of the model and of every attached adapter: when an attached adapter's config
        picks the same layers, each of its layers makes the new slot itself (update_layer). bench/chat_latency.py
        times both. False, with nothing changed, for any other adapter: peft loads it. ValueError when the
        weights file does not match its adapter_config.json."""
        import dataclasses

        import torch
        from peft import LoraConfig, PeftModel
        from peft.utils import load_peft_weights

        config = LoraConfig.from_pretrained(str(source.path))
        # The file's weights replace any initialisation; chat never trains, so no dropout (peft's own load
        # turns it off by putting the whole model in eval mode).
        config.inference_mode, config.init_lora_weights, config.lora_dropout = True, False, 0.0
        variant = any(field.metadata.get("is_lora_variant") and getattr(config, field.name)
                      for field in dataclasses.fields(config))
        # Beside attached adapters: one whose config picks the same layers has the layers this one needs.
        neighbour = None if self._peft is None else next(
            (name for name, held in self._peft.peft_config.items() if _targets(held) == _targets(config)), None)
        if (variant or config.lora_bias or config.rank_pattern or config.alpha_pattern
                or (self._peft is not None and neighbour is None)):
            return False  # decided from the config alone: peft's load reads the file, once
        weights = _plain_lora_weights(load_peft_weights(str(source.path), device="cpu"))
        if weights is None:
            return False
        if self._peft is None:
            self._peft = PeftModel(self.model, config, adapter_name=slot, low_cpu_mem_usage=True)
            self._new_layers()
            _check_layers(self._layers_of(slot), weights)
        else:
            _check_layers(self._layers_of(neighbour), weights)
            self._peft.peft_config[slot] = config  # first, so that delete_adapter can undo a half-done add
            with torch.device("meta"):  # empty: the file's tensors take their place below
                for name in weights:
                    self._lora_layers[name].update_layer(slot, config.r, config.lora_alpha, config)
        for name, (a, b) in weights.items():
            layer = self._lora_layers[name]
            if a.shape != layer.lora_A[slot].weight.shape or b.shape != layer.lora_B[slot].weight.shape:
                raise ValueError(f"the weights of {name} have other sizes than adapter_config.json says (rank "
                                 f"{config.r}): {tuple(a.shape)} and {tuple(b.shape)}")
            device = layer.get_base_layer().weight.device
            # peft's default (autocast_adapter_dtype): adapter weights of fewer than 32 bits are held in float32
            dtype = torch.float32 if a.element_size() < 4 else a.dtype
            layer.lora_A[slot].weight = torch.nn.Parameter(a.to(device, dtype), requires_grad=False)
            layer.lora_B[slot].weight = torch.nn.Parameter(b.to(device, dtype), requires_grad=False)
        return True

    def _new_layers(self) -> None:
        """After peft has put LoRA layers into the model: chat mode, routing, and the layers' index."""
        from peft.tuners.lora import LoraLayer

        self.model.eval()
        routing.install(self.model)
        self._lora_layers = {name: module for name, module in self._peft.named_modules()
                             if isinstance(module, LoraLayer)}

    def _layers_of(self, slot: str) -> set[str]:
        return {name for name, layer in self._lora_layers.items() if slot in layer.lora_A}

    def _has_lora_layers(self) -> bool:
        from peft.tuners.lora import LoraLayer

        return any(isinstance(module, LoraLayer) for module in self.model.modules())

    def close(self) -> None:
        """Unload, once the generations running on this model have ended."""
        with self.lock.write():
            self._release()

    def _release(self) -> None:
        self.closed = True
        self.model = self._peft = None
        self._lora_layers = {}
        with self._book:
            self._adapters.clear()


@dataclass
class Session:
    """What one generation runs with: the base, and per batch row the adapter it uses."""
    base: PooledBase
    names: list[str]  # per row: the adapter's name in the model, or routing.BASE
    adapters: list[AdapterInfo | None]
    loaded_now: list[bool]  # per row: whether this request had to load the adapter
    waited_s: float  # time spent waiting for a free generation slot


class ModelPool:
    """Loaded base models, least recently used first, at most max_bases of them; per base at most
    max_adapters adapters kept attached; at most max_concurrent generations running at once."""

    def __init__(self, max_bases: int = 1, max_adapters: int = 4, max_concurrent: int = 2):
        if min(max_bases, max_adapters, max_concurrent) < 1:
            raise ValueError("max_bases, max_adapters and max_concurrent must each be at least 1")
        self.max_bases, self.max_adapters, self.max_concurrent = max_bases, max_adapters, max_concurrent
        self._bases: OrderedDict[tuple[str, str], PooledBase] = OrderedDict()
        self._lock = threading.Lock()  # guards _bases
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._auto: dict[str, str] = {}  # what "auto" chose per model: sizing a model up is not free

    def base(self, model_path: str, quantization: str = "auto") -> PooledBase:
        """The pooled base for this model and quantisation, loaded now if it is not loaded."""
        model_path = str(model_path)
        if quantization == "auto":
            if model_path not in self._auto:
                self._auto[model_path] = choose_quantization(model_path, "auto")
            quantization = self._auto[model_path]
        key = (model_path, choose_quantization(model_path, quantization))
        with self._lock:
            if (found := self._touch(key)) is not None:
                return found
        with MODEL_LOADS:
            with self._lock:
                if (found := self._touch(key)) is not None:
                    return found
                victims = []
                while len(self._bases) >= self.max_bases:
                    victims.append(self._bases.popitem(last=False)[1])
            for victim in victims:
                victim.close()
            if victims:
                free_memory()
            base = _load(key[0], key[1], self.max_adapters)
            with self._lock:
                self._bases[key] = base
            return base

    def _touch(self, key) -> PooledBase | None:
        base = self._bases.get(key)
        if base is not None and base.closed:  # a failed first adapter load left it unusable
            del self._bases[key]
            return None
        if base is not None:
            self._bases.move_to_end(key)
        return base

    @contextmanager
    def session(self, model_path: str, quantization: str, adapters: list[str | None]):
        """A Session to generate with: one batch row per entry of adapters (an adapter folder, or None for
        the base model). Adapters are attached first if needed; inside, they stay attached and the model
        unchanged, and this generation holds one of the max_concurrent slots."""
        sources = [read_adapter(a) if a else None for a in adapters]
        for _attempt in range(3):
            base = self.base(model_path, quantization)
            try:
                with base.pinned(sources) as (infos, loaded_now):
                    asked = time.perf_counter()
                    with self._slots:
                        waited = time.perf_counter() - asked
                        with base.lock.read():
                            if base.closed:
                                raise _Closed
                            names = [info.slot if info else routing.BASE for info in infos]
                            yield Session(base, names, infos, loaded_now, waited)
                            return
            except _Closed:
                continue
        raise RuntimeError(f"{Path(model_path).name} was unloaded three times while this answer waited for it "
                           "(other users are switching models). Try again, or ask the administrator to keep "
                           "more models loaded.")


def _targets(config) -> tuple:
    """What decides which layers an adapter's config gives LoRA layers."""
    return (_as_set(config.target_modules), _as_set(config.exclude_modules), config.layers_to_transform,
            config.layers_pattern)


def _layout(config) -> tuple:
    """What decides the shapes of an adapter's LoRA layers."""
    return (*_targets(config), config.r, config.rank_pattern, config.lora_bias)


def _as_set(names):
    return set(names) if isinstance(names, (list, set, tuple)) else names  # a list, or a regex or "all-linear"


def _check_layers(config_layers: set[str], weights: dict) -> None:
    """ValueError when the weights file and its adapter_config.json disagree about the layers."""
    if config_layers - set(weights):
        raise ValueError(_LACKS_LAYERS)
    if set(weights) - config_layers:
        raise ValueError("the weights file holds layers its adapter_config.json does not name")


def _plain_lora_weights(weights: dict) -> dict | None:
    """{module name in the PeftModel: (lora_A, lora_B)} when the saved tensors are plain LoRA matrices and
    nothing else; None otherwise."""
    pairs: dict[str, dict] = {}
    for key, tensor in weights.items():
        module, _dot, kind = key.rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            return None
        pairs.setdefault(module, {})[kind[0]] = tensor
    if any(len(pair) != 2 for pair in pairs.values()):
        return None
    return {module: (pair["A"], pair["B"]) for module, pair in pairs.items()}


def choose_quantization(model_path: str, requested: str = "auto") -> str:
    """'4bit', '8bit' or 'none' as asked; for 'auto', 16-bit weights where they fit comfortably on the GPU,
    else 4-bit, and on the CPU full precision (bitsandbytes on the CPU is slower, and only small models
    are chatted with there)."""
    if requested not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)} (got {requested!r})")
    if requested != "auto":
        return requested
    import torch

    if not torch.cuda.is_available():
        return "none"
    free, _total = torch.cuda.mem_get_info()
    return "none" if parameter_count(model_path) * 2 < AUTO_16BIT_SHARE * free else "4bit"


def _load(path: str, quantization: str, max_adapters: int) -> PooledBase:
    if quantization == "8bit":
        logging.getLogger("bitsandbytes.autograd._functions").addFilter(_drop_int8_cast_notice)
    started = time.perf_counter()
    model = load_base_model(path, quantization)
    model.eval()
    # Every adapter load needs peft, and importing it takes seconds (5 s on a 2-core machine): better paid
    # with the base than by the first adapter someone picks.
    import peft  # noqa: F401
    tokenizer = load_tokenizer(path)
    # Encoding once now settles the fast tokenizer's padding/truncation state, so the encodes that
    # generations later run from many threads only read it (changing it from two threads fails).
    tokenizer("")
    return PooledBase(path, quantization, model, tokenizer, time.perf_counter() - started, max_adapters)


def _drop_int8_cast_notice(record: logging.LogRecord) -> bool:
    # bitsandbytes logs this for every 8-bit matrix product of every token when running on the CPU.
    return not record.getMessage().startswith("MatMul8bitLt: inputs will be cast")
