"""The Train tab's own wording: settings errors by their on-screen names, and run messages shown as text."""
import pytest

from studio.config import ConfigError, TrainConfig
from studio.messages import text_of
from studio.runs import create_run
from studio.ui.i18n import Translator
from studio.ui.train_tab import ADVANCED, build_config, progress_html, with_labels


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
