"""TrainConfig: the one description of a training run, saved as run.yaml in its run folder."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from .messages import Message

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"

QUANTIZATIONS = ("4bit", "8bit", "none")
OPTIMIZERS = ("adamw_torch", "paged_adamw_8bit", "adamw_8bit")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
# auto: keep activations when they fit in the GPU's memory (faster), recompute them when not (see training/memory.py)
CHECKPOINTING = ("auto", "on", "off")
# sft: imitate the answers (supervised); dpo: prefer the chosen answer of each pair over the rejected one
METHODS = ("sft", "dpo")


class ConfigError(ValueError):
    """A setting outside its allowed values; the message names the field and the range."""


@dataclass
class TrainConfig:
    model: str = "embedded"
    dataset: str = ""
    preset: str = "chatbot"
    method: str = "sft"
    beta: float = 0.1  # DPO: how closely the model is held to where it started (higher: closer)
    start_from: str = ""  # DPO: a finished run (id or folder) whose adapter this run goes on training
    quantization: str = "4bit"
    double_quant: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    learning_rate: float = 2e-4
    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1024
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    optimizer: str = "adamw_torch"
    gradient_checkpointing: str = "auto"
    packing: bool = False
    val_fraction: float = 0.1
    seed: int = 42
    logging_steps: int = 1
    eval_steps: int = 0
    save_steps: int = 50
    early_stopping_patience: int = 0
    report_card: bool = True  # base vs adapter on held-out prompts when the run ends (studio/evaluation)
    gpus: list[int] = field(default_factory=list)
    fsdp: bool = False

    # field -> (lowest, highest) for numbers, or the allowed values for choices
    _RANGES = {
        "lora_r": (1, 1024),
        "lora_alpha": (1, 4096),
        "lora_dropout": (0.0, 0.9),
        "learning_rate": (1e-7, 1e-2),
        "epochs": (0.01, 100),
        "max_steps": (-1, 10_000_000),
        "batch_size": (1, 1024),
        "grad_accum": (1, 1024),
        "max_length": (16, 131072),
        "warmup_ratio": (0.0, 0.5),
        "weight_decay": (0.0, 1.0),
        "val_fraction": (0.0, 0.5),
        "seed": (0, 2**31 - 1),
        "logging_steps": (1, 100_000),
        "eval_steps": (0, 1_000_000),
        "save_steps": (1, 1_000_000),
        "early_stopping_patience": (0, 1000),
        "beta": (0.01, 1.0),
        "method": METHODS,
        "quantization": QUANTIZATIONS,
        "optimizer": OPTIMIZERS,
        "lr_scheduler": SCHEDULERS,
        "gradient_checkpointing": CHECKPOINTING,
    }

    def validate(self) -> "TrainConfig":
        """Coerce types and check ranges; raises ConfigError naming every bad field."""
        errors = []
        if isinstance(self.gradient_checkpointing, bool):  # run.yaml files from before 'auto' existed
            self.gradient_checkpointing = "on" if self.gradient_checkpointing else "off"
        for f in fields(self):
            value = getattr(self, f.name)
            try:
                setattr(self, f.name, _coerce(f.type, value))
            except (TypeError, ValueError):
                errors.append(Message("{field}: expected {type}, got {value!r}", field=f.name, type=f.type,
                                      value=value))
                continue
            allowed = self._RANGES.get(f.name)
            value = getattr(self, f.name)
            if isinstance(allowed, tuple) and allowed and isinstance(allowed[0], str):
                if value not in allowed:
                    errors.append(Message("{field} must be one of {allowed} (got {value!r})", field=f.name,
                                          allowed=", ".join(allowed), value=value))
            elif allowed and not (allowed[0] <= value <= allowed[1]):
                errors.append(Message("{field} must be between {low} and {high} (got {value!r})", field=f.name,
                                      low=allowed[0], high=allowed[1], value=value))
        if not self.dataset:
            errors.append(Message("dataset: choose a dataset to train on"))
        if not self.model:
            errors.append(Message("model: choose a base model"))
        if not self.target_modules:
            errors.append(Message("target_modules: name at least one layer, or 'auto'"))
        if self.start_from and self.method != "dpo":
            errors.append(Message("{field}: only a preference (DPO) run goes on from another run's adapter; choose "
                                  "that method, or start from a new adapter", field="start_from"))
        if self.fsdp and self.quantization == "8bit":  # FSDP shards 4-bit (FSDP-QLoRA) or 16-bit weights only
            errors.append(Message("fsdp: sharding works with quantization 4bit or none; choose one of them, or "
                                  "turn sharding off"))
        if errors:
            raise ConfigError(Message.joined("; ", errors))
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        from .workspace import write_atomic

        write_atomic(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(Message("unknown settings: {unknown} (known: {known})", unknown=", ".join(unknown),
                                      known=", ".join(sorted(known))))
        return cls(**data).validate()

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(Message("{path} is not valid YAML: {error}", path=str(path), error=str(e))) from None
        if not isinstance(data, dict):
            raise ConfigError(Message("{path} must hold settings as 'name: value' lines", path=str(path)))
        return cls.from_dict(data)


def _coerce(type_name, value):
    """run.yaml and UI fields arrive as strings or numbers; turn them into the declared type."""
    t = str(type_name)
    if t == "bool":
        if isinstance(value, str):
            if value.lower() in ("true", "yes", "1", "on"):
                return True
            if value.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        return bool(value)
    if t == "int":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    if t == "float":
        return float(value)
    if t == "str":
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    if t.startswith("list[int]"):
        return [int(v) for v in (value or [])]
    if t.startswith("list[str]"):  # a list of module names, or one word such as 'auto' / 'all-linear'
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            return parts[0] if len(parts) == 1 and parts[0] in ("auto", "all-linear") else parts
        return [str(v) for v in value]
    return value


# ---- presets ---------------------------------------------------------------------------------------

@dataclass
class Preset:
    name: str
    title: str
    description: str
    settings: dict
    builtin: bool = True


def load_presets(user_dir: Path | None = None) -> dict[str, Preset]:
    """Built-in presets from presets/*.yaml, then a user's own ones (which may not replace a built-in)."""
    presets: dict[str, Preset] = {}
    sources = [(PRESETS_DIR, True)] + ([(Path(user_dir), False)] if user_dir else [])
    for folder, builtin in sources:
        for path in sorted(folder.glob("*.yaml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            name = path.stem
            if name in presets and not builtin:
                continue
            presets[name] = Preset(name, data.get("title", name), data.get("description", ""),
                                   data.get("settings", {}), builtin)
    return presets


def save_user_preset(user_dir: Path, name: str, title: str, description: str, settings: dict) -> Path:
    from .workspace import safe_name, write_atomic

    TrainConfig.from_dict({**settings, "dataset": settings.get("dataset") or "x"})  # refuse bad values now
    keep = {k: v for k, v in settings.items() if k not in ("model", "dataset", "preset", "gpus", "start_from")}
    stem = safe_name(name, "")
    if not stem:  # nothing but punctuation: refused rather than saved over a made-up name
        raise ConfigError(Message("'{name}' cannot be used as a preset name. Use letters or digits of any language, "
                                  "'-' and '_'.", name=name))
    path = Path(user_dir) / f"{stem}.yaml"
    if (PRESETS_DIR / path.name).exists():
        raise ConfigError(Message("'{name}' is a built-in preset; save yours under another name", name=path.stem))
    write_atomic(path, yaml.safe_dump({"title": title or name, "description": description,
                                       "settings": keep}, sort_keys=False, allow_unicode=True))
    return path


def check_data_fits(config: TrainConfig, pairs: bool) -> None:
    """Refuse, before a run starts, data its method cannot learn from: DPO needs preference pairs, and supervised
    training examples with one answer each."""
    if config.method == "dpo" and not pairs:
        raise ConfigError(Message("{field}: preference tuning (DPO) learns from pairs of a chosen and a rejected answer, "
                                  "and {dataset} holds none. Pick a dataset of pairs (prompt, chosen, rejected), or "
                                  "the supervised method.", field="method", dataset=config.dataset))
    if config.method != "dpo" and pairs:
        raise ConfigError(Message("{field}: {dataset} holds preference pairs, which supervised training cannot learn "
                                  "from. Pick the 'Preference (DPO)' preset, or a dataset of examples with one answer "
                                  "each.", field="method", dataset=config.dataset))


def config_from_preset(preset: Preset, **overrides) -> TrainConfig:
    return TrainConfig.from_dict({**preset.settings, "preset": preset.name, **overrides})


def suggest_for_size(rows: int, mean_tokens: float | None = None, max_length: int | None = None) -> dict:
    """Rank, learning rate and epochs that usually work for a dataset of this many rows; and packing, when
    its rows average under half the max length and there are enough of them to fill steps. Under 1,000 rows
    only the rank: the passes and learning rate of small datasets are training/small_data.py's rule."""
    if rows < 1000:
        tip = {"lora_r": 8, "lora_alpha": 16, "why": "under 1,000 rows: a small rank is enough"}
    elif rows <= 10_000:
        tip = {"lora_r": 16, "lora_alpha": 32, "learning_rate": 2e-4, "epochs": 2.0,
               "why": "1,000 to 10,000 rows: a medium rank, two or three passes"}
    else:
        tip = {"lora_r": 32, "lora_alpha": 64, "learning_rate": 1e-4, "epochs": 1.0,
               "why": "over 10,000 rows: a larger rank, one or two passes are enough"}
    # Full steps: 2x the tokens per second on a 7B model (docs/benchmarks.md). Few rows packed would leave
    # too few steps to watch.
    if rows >= 1000 and mean_tokens and max_length and mean_tokens <= max_length / 2:
        tip["packing"] = True
    return tip
