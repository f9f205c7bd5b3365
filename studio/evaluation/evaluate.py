"""Report cards for runs: right after training, with the model still loaded, or later, on demand, against the
run's own data or any other dataset. Each is saved in the run folder: report.json for the run's own data,
reports/<dataset>.json for other data. Data of preference pairs gets a pair card (pair_card.py), whatever method
the run trained with."""
from __future__ import annotations

from pathlib import Path

from ..config import TrainConfig
from ..data import is_pairs, load_records
from ..runs import Run
from ..workspace import Workspace, read_json, safe_name, write_json
from .pair_card import PAIRS_SCORED, make_pair_card
from .report_card import choose_examples, make_report_card


def card_path(run: Run, data: str | None = None) -> Path:
    """Where a run's report card for `data` lives (None, or the data it trained on: report.json)."""
    if not data or data == _trained_on(run):
        return run.path / "report.json"
    return run.path / "reports" / f"{safe_name(Path(data).stem if Path(data).suffix else data, 'data')}.json"


def _trained_on(run: Run) -> str | None:
    try:
        return run.config.dataset
    except (ValueError, OSError):  # an unreadable run.yaml: its own card is report.json all the same
        return None


def read_card(run: Run, data: str | None = None) -> dict | None:
    return read_json(card_path(run, data), None)


def evaluate_trained(run: Run, model, tokenizer, config: TrainConfig, records: list[dict],
                     progress=print) -> dict:
    """The report card of a run that just trained, on the examples it held out (the model is a PeftModel)."""
    card = _make(model, tokenizer, records, config, False, progress)
    return _save(run, card, data=None, data_label=config.dataset)


def evaluate_run(run: Run, workspace: Workspace, data: str | None = None, progress=print) -> dict:
    """Load the run's base model and adapter and make its report card for `data` (default: its own data)."""
    from peft import PeftModel

    from ..models import load_base_model, load_tokenizer, resolve_model

    config = run.config
    if not run.has_adapter():
        raise FileNotFoundError(f"Run {run.id} has no adapter yet: evaluate it once it has finished or stopped.")
    same = not data or data == config.dataset
    records, _ = load_records(data or config.dataset, workspace)
    model_path = resolve_model(config.model, workspace, progress=progress)
    progress(f"Loading {config.model} and the adapter of {run.id}")
    tokenizer = load_tokenizer(model_path)
    model = PeftModel.from_pretrained(load_base_model(model_path, config.quantization, config.double_quant),
                                      str(run.adapter_dir))
    card = _make(model, tokenizer, records, config, not same, progress)
    return _save(run, card, data=data, data_label=data or config.dataset)


def _make(model, tokenizer, records: list[dict], config: TrainConfig, other_data: bool, progress) -> dict:
    if is_pairs(records):
        source, pairs, training = choose_examples(records, config.val_fraction, config.seed, other_data, usable=list,
                                                  limit=PAIRS_SCORED)
        return make_pair_card(model, tokenizer, source, pairs, training, progress)
    source, examples, training = choose_examples(records, config.val_fraction, config.seed, other_data)
    return make_report_card(model, tokenizer, source, examples, training, progress)


def _save(run: Run, card: dict, data: str | None, data_label: str) -> dict:
    card = {"run": run.id, "data": data_label, **card}
    path = card_path(run, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, card)
    return card
