"""The small-data rule: enough updates for a few dozen examples, the preset's values for more, hand-set wins."""
import pytest

from studio.config import config_from_preset, load_presets
from studio.training import small_data

CHATBOT = load_presets()["chatbot"]


def chatbot(**overrides):
    return config_from_preset(CHATBOT, dataset="d", **overrides)


def test_a_small_dataset_gets_enough_updates_and_a_higher_learning_rate():
    config, schedule = small_data.apply(chatbot(), rows=16)
    assert schedule.raised and schedule.examples == 14  # 2 of 16 held out for validation
    assert schedule.updates >= small_data.MIN_UPDATES and config.epochs == schedule.passes > CHATBOT.settings["epochs"]
    assert config.learning_rate == small_data.SMALL_DATA_LR > CHATBOT.settings["learning_rate"]
    text = schedule.summary(2.4)
    assert text.startswith(f"14 examples: {schedule.passes:g} passes, {schedule.updates} updates") and "2 minutes" in text


def test_passes_are_capped_for_a_handful_of_rows():
    _, schedule = small_data.apply(chatbot(val_fraction=0.0), rows=1)
    assert schedule.passes == small_data.MAX_PASSES


@pytest.mark.parametrize("rows", [300, 5000])
def test_large_datasets_keep_the_presets_values(rows):
    config, schedule = small_data.apply(chatbot(), rows=rows)
    assert not schedule.raised and config.epochs == CHATBOT.settings["epochs"]
    assert config.learning_rate == CHATBOT.settings["learning_rate"] and "raised" not in schedule.summary()


@pytest.mark.parametrize("setting,value", [("epochs", 2.0), ("learning_rate", 1e-4), ("max_steps", 5)])
def test_what_a_person_sets_by_hand_wins(setting, value):
    form = {**CHATBOT.settings, setting: value}
    hand_set = small_data.hand_set_fields(form, CHATBOT.settings)
    assert hand_set == {setting}
    config, schedule = small_data.apply(chatbot(**{setting: value}), rows=16, hand_set=hand_set)
    assert not schedule.raised and getattr(config, setting) == value
    if setting == "max_steps":
        assert schedule.updates == 5


def test_a_form_showing_the_presets_values_sets_nothing_by_hand():
    form = {"epochs": "3", "learning_rate": "0.0002", "max_steps": -1}  # as text, as a form may hand them over
    assert small_data.hand_set_fields(form, CHATBOT.settings) == set()


def test_updates_count_as_the_trainer_counts_them():
    config = chatbot(batch_size=4, grad_accum=2, gpus=[0, 1])
    assert small_data.updates_per_pass(100, config) == 6  # 13 batches of 4 per GPU, 2 a update
    assert small_data.updates_per_pass(3, config) == 1


def test_the_time_comes_from_this_machines_last_run_of_the_model(workspace, monkeypatch):
    from studio.runs import create_run
    from studio.workspace import append_jsonl

    monkeypatch.setattr(small_data, "_has_gpu", lambda: False)
    config, schedule = small_data.apply(chatbot(model="some/model"), rows=16)
    assert small_data.expected_minutes(schedule, config, 100, workspace) is None  # nothing measured yet
    run = create_run(workspace, config)
    append_jsonl(run.path / "metrics.jsonl", {"step": 1, "loss": 1.0, "tokens_per_s": 400.0})
    minutes = small_data.expected_minutes(schedule, config, 100, workspace)
    assert minutes == pytest.approx(schedule.updates * 4 * 100 / 400 / 60)
    embedded, plan = small_data.apply(chatbot(model="embedded"), rows=16)
    assert small_data.expected_minutes(plan, embedded, 100, workspace) == pytest.approx(
        plan.updates * 4 * 100 / small_data.EMBEDDED_CPU_TOKENS_PER_S / 60)
