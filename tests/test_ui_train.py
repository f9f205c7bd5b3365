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


def small_style_dataset(workspace, tokenizer, tmp_path, rows=16):
    from studio.data import inspect_file, save_dataset

    path = tmp_path / "style.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Name a colour, number {i}.", "output": f"Arr, {i} be blue!"})
                            + "\n" for i in range(rows)))
    save_dataset(workspace, "style", path, inspect_file(path, tokenizer, max_length=1024))


def test_the_plan_for_a_small_dataset_is_said_before_start(workspace, tokenizer, tmp_path, embedded_model_dir):
    from types import SimpleNamespace

    from app_server import with_embedded_model
    from studio.config import load_presets
    from studio.models import EMBEDDED_LABEL
    from studio.training import small_data
    from studio.ui.train_tab import FIELDS, schedule_text, settings_from

    small_style_dataset(with_embedded_model(workspace, embedded_model_dir), tokenizer, tmp_path)
    studio, presets = SimpleNamespace(workspace=workspace), load_presets()
    values = settings_from(presets["chatbot"])
    _, plan = small_data.apply(build_config("style", EMBEDDED_LABEL, "chatbot", values), 16)
    text = schedule_text(studio, presets, "style", EMBEDDED_LABEL, "chatbot", values)
    assert f"14 examples: {plan.passes:g} passes, {plan.updates} updates" in text and "minutes on this machine" in text
    assert "raised from the preset's" in text
    values[FIELDS.index("epochs")] = 2  # set by hand: the person's choice stands
    assert "14 examples: 2 passes, 8 updates, learning rate 0.0002" in schedule_text(
        studio, presets, "style", EMBEDDED_LABEL, "chatbot", values)


def test_will_it_fit_counts_the_picked_datasets_real_lengths(workspace, tokenizer, tmp_path, embedded_model_dir,
                                                             monkeypatch):
    import re
    from types import SimpleNamespace

    from app_server import with_embedded_model
    from studio.config import load_presets
    from studio.models import EMBEDDED_LABEL
    from studio.training import memory
    from studio.ui.train_tab import fit_text, settings_from

    monkeypatch.setattr(memory, "estimate", _on_a_gpu(memory.estimate))
    small_style_dataset(with_embedded_model(workspace, embedded_model_dir), tokenizer, tmp_path)
    studio, values = SimpleNamespace(workspace=workspace), settings_from(load_presets()["chatbot"])
    assumed, real = fit_text(studio, EMBEDDED_LABEL, values), fit_text(studio, EMBEDDED_LABEL, values, dataset="style")
    gigabytes = [float(re.search(r"about ([\d.]+) GB", text).group(1)) for text in (assumed, real)]
    assert gigabytes[1] < gigabytes[0] and "this dataset's longest examples" in real and "max length" in assumed


def _on_a_gpu(estimate):
    """The estimate as on a 24 GB GPU, so that activations count as they do there."""
    return lambda shape, config, gpu_gb=None, tokens=None, liger=True: estimate(shape, config, 24.0, tokens, liger)
