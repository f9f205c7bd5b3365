"""The Train tab's own wording: settings errors by their on-screen names, run messages shown as text, and the
suggestion for a chosen dataset."""
import json

import pytest

from studio.config import ConfigError, TrainConfig
from studio.messages import text_of
from studio.runs import create_run
from studio.ui.i18n import Translator
from studio.ui.train_tab import (ADVANCED, build_config, dataset_suggestion, progress_html, suggestion_text,
                                 with_labels)


def test_a_bad_setting_is_named_as_the_page_labels_it():
    values = [getattr(TrainConfig(), field) for field, _ in ADVANCED]
    values[[f for f, _ in ADVANCED].index("lora_r")] = 0
    with pytest.raises(ConfigError) as refused:
        build_config("d", None, "chatbot", values)
    english, chinese = Translator("en"), Translator("zh-Hant")
    assert english.message(with_labels(text_of(refused.value), english)).startswith(
        "Adapter size (rank r) must be between 1 and 1024")
    shown = chinese.message(with_labels(text_of(refused.value), chinese))
    assert "lora_r" not in shown and chinese("Adapter size (rank r)") in shown


def test_a_run_message_quoting_typed_text_is_shown_as_text_not_markup(workspace):
    run = create_run(workspace, TrainConfig(dataset="d"))
    run.set_status(state="failed", message="No dataset called '<img src=x onerror=alert(1)>'")
    html = progress_html(run)
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_large_dataset_of_short_rows_gets_packing_suggested(workspace, tokenizer, tmp_path):
    from types import SimpleNamespace

    from studio.data import inspect_file, save_dataset

    rows = tmp_path / "short.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"Say {i}.", "output": f"{i}."}) + "\n" for i in range(1200)))
    save_dataset(workspace, "short", rows, inspect_file(rows, tokenizer, max_length=1024))
    studio = SimpleNamespace(workspace=workspace)

    tip = dataset_suggestion(studio, "short", 1024)
    assert tip["rows"] == 1200 and tip["packing"] is True and tip["mean_tokens"] < 100
    text = suggestion_text(tip, 1024)
    assert "1200 examples" in text and f"average {tip['mean_tokens']:.0f} tokens" in text and "packing" in text
    assert "打包" in suggestion_text(tip, 1024, Translator("zh-Hant"))
    # Rows that already fill half the max length, or too few rows to fill steps: no packing.
    assert "packing" not in dataset_suggestion(studio, "short", 2 * int(tip["mean_tokens"]) - 2)
    rows.write_text(rows.read_text().split("\n", 900)[-1])
    save_dataset(workspace, "fewer", rows, inspect_file(rows, tokenizer, max_length=1024))
    assert "packing" not in dataset_suggestion(studio, "fewer", 1024)
