"""The report card's parts without a model: which examples, the verdict, and how the page shows cards."""
import math

import pytest

from studio.config import TrainConfig
from studio.evaluation.report_card import Example, chrf, choose_examples, judge
from studio.runs import create_run
from studio.ui import report_view
from studio.ui.i18n import Translator
from studio.workspace import write_json


def chat(question, answer, system=None):
    turns = [{"role": "system", "content": system}] if system else []
    return {"messages": turns + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def test_an_example_is_a_conversation_up_to_its_last_answer_or_a_texts_second_half():
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                           {"role": "user", "content": "and?"}, {"role": "assistant", "content": "bye"}]}
    example = Example.of(record)
    assert example.expected == "bye" and [m["content"] for m in example.prompt] == ["hi", "hello", "and?"]
    text = Example.of({"text": "one two three four five six"})
    assert text.prompt + text.expected == "one two three four five six"
    assert Example.of({"messages": [{"role": "assistant", "content": "no question"}]}) is None
    assert Example.of({"text": "too short"}) is None


def test_the_held_out_examples_are_the_ones_training_held_out():
    from studio.data import split

    records = [chat(f"q{i}", f"a{i}") for i in range(20)]
    source, answered, training = choose_examples(records, 0.2, 7, other_data=False)
    _, held_out = split(records, 0.2, 7)
    assert source == "held_out" and [e.expected for e in answered] == [r["messages"][1]["content"] for r in held_out]
    assert not {e.expected for e in training} & {e.expected for e in answered}


def test_without_a_validation_split_the_card_says_it_shows_training_examples():
    source, answered, _ = choose_examples([chat(f"q{i}", f"a{i}") for i in range(5)], 0.0, 1, other_data=False)
    assert source == "training" and len(answered) == 5


def test_other_data_is_sampled_the_same_way_each_time():
    records = [chat(f"q{i}", f"a{i}") for i in range(50)]
    first, again = (choose_examples(records, 0.1, 3, other_data=True) for _ in range(2))
    assert first[0] == "other" and [e.expected for e in first[1]] == [e.expected for e in again[1]]
    assert first[2] == []


def overall(chrf_gain=0.0, gain=1.0, training_gain=None):
    return {"chrf_gain": chrf_gain, "likelihood_gain": gain, "training_likelihood_gain": training_gain}


@pytest.mark.parametrize("source,figures,verdict", [
    ("held_out", overall(chrf_gain=20, gain=4), "learned"),
    ("training", overall(chrf_gain=20, gain=4), "learned_training"),
    ("held_out", overall(chrf_gain=1.7, gain=2.6, training_gain=2.7), "barely_changed"),  # likelier, same answers
    ("held_out", overall(chrf_gain=1, gain=1.1, training_gain=18), "memorised"),
    ("held_out", overall(chrf_gain=-12, gain=0.7), "worse"),
])
def test_verdicts(source, figures, verdict):
    assert judge(source, figures) == verdict


def test_closeness_is_sacrebleus_chrf_in_any_script():
    assert chrf("Paris is the capital.", "Paris is the capital.") == pytest.approx(100)
    assert chrf("巴黎是法國的首都", "法國的首都是巴黎") > chrf("東京", "法國的首都是巴黎")


def card(verdict="learned", gain=3.0, base=20.0, adapter=60.0):
    from studio.evaluation.report_card import VERDICTS
    from studio.messages import fields

    said, step = VERDICTS[verdict]
    return {"run": "r", "data": "d", "source": "held_out", "verdict": verdict, **fields(said, "verdict_text"),
            **fields(step, "next_step"),
            "overall": {"examples": 1, "likelihood_gain": gain, "base_chrf": base, "adapter_chrf": adapter,
                        "base_nll": 2.0, "adapter_nll": 2.0 - math.log(gain)},
            "examples": [{"prompt": [{"role": "user", "content": "Q?"}], "expected": "A.", "base": "b", "adapter": "a",
                          "base_chrf": base, "adapter_chrf": adapter, "likelihood_gain": gain}]}


def test_the_page_shows_the_verdict_and_figures_in_its_language():
    text = report_view.card_summary(card(), {})
    assert "It learned" in text and "3.00×" in text and "20 to **60**" in text and "held-out" in text
    assert "學會" in report_view.card_summary(card(), {}, Translator("zh-Hant"))
    table = report_view.card_examples(card())
    assert table.iloc[0].tolist() == ["Q?", "A.", "b", "a", "20 → 60", "3.00"]
    assert "queued" in report_view.card_summary(None, {"state": "queued"})


def test_compare_shows_each_runs_card_and_only_the_settings_that_differ(workspace):
    first = create_run(workspace, TrainConfig(dataset="d", learning_rate=2e-4, epochs=3))
    second = create_run(workspace, TrainConfig(dataset="d", learning_rate=5e-4, epochs=3))
    write_json(first.path / "report.json", card("barely_changed", 1.02, 20, 21))
    table = report_view.compare_cards([first, second])
    assert list(table.columns[4:]) == ["learning_rate"]
    assert table.iloc[0]["verdict"].startswith("It barely changed") and table.iloc[1]["verdict"] == "no card yet"


def test_a_card_asked_for_the_runs_own_data_is_its_report_json(workspace):
    from studio.evaluation import card_path

    run = create_run(workspace, TrainConfig(dataset="pirates"))
    assert card_path(run) == card_path(run, "pirates") == run.path / "report.json"
    assert card_path(run, "other.csv") == run.path / "reports" / "other.json"
