"""Preference tuning (DPO) end to end on the embedded model, and the settings and pages around it.

One DPO run is trained for the module from the 'Preference (DPO)' preset and a pairs file whose answers differ only in
how they start: "Sure! The answer is 7." is chosen over "Well, the answer is 7.", which the base model finds about as
likely (it prefers the chosen one on a sixth of such pairs). Its report card must show the adapter preferring the
chosen answer on pairs it never saw, more often and by a wider margin than the base model does.
"""
import json
from pathlib import Path

import pytest

from app_server import with_embedded_model
from studio.__main__ import main
from studio.config import ConfigError, TrainConfig, check_data_fits, config_from_preset, load_presets
from studio.runs import create_run, list_runs, start_adapter
from studio.training import trainer

REPO = Path(__file__).resolve().parent.parent
STEPS = 4  # at this learning rate a handful of updates make the preference plain
QUESTIONS = ["What is {a} plus {b}?", "How many legs do {a} cats and {b} birds have?",
             "If I have {a} apples and buy {b} more, how many do I have?", "What comes after {a} and {b}?"]


def sure_pairs(path: Path, count: int = 48) -> Path:
    """Pairs whose only difference is the opening: 'Sure!' (chosen) or 'Well,' (rejected)."""
    rows = []
    for i in range(count):
        a, b = i % 9 + 1, i // 9 + 2
        question = QUESTIONS[i % len(QUESTIONS)].format(a=a, b=b)
        answer = {0: a + b, 1: 4 * a + 2 * b, 2: a + b, 3: max(a, b) + 1}[i % len(QUESTIONS)]
        rows.append({"prompt": question, "chosen": f"Sure! The answer is {answer}.",
                     "rejected": f"Well, the answer is {answer}."})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def studio(workspace, *argv) -> int:
    return main(["--workspace", str(workspace.root), *map(str, argv)])


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, embedded_model_dir):
    from studio.workspace import Workspace

    root = tmp_path_factory.mktemp("preference")
    workspace = with_embedded_model(Workspace.at(root / "workspace"), embedded_model_dir)
    data = sure_pairs(root / "sure_pairs.jsonl")
    # Evaluated once, at the end: on two shared cores every evaluation costs as much as an update.
    config = config_from_preset(load_presets()["preference-dpo"], dataset=str(data), max_steps=STEPS,
                                learning_rate=5e-4, grad_accum=1, eval_steps=STEPS)
    run = create_run(workspace, config, state="running")
    assert studio(workspace, "train", run.path) == 0
    assert run.state == "completed", run.log_tail()
    return workspace, run


def test_dpo_makes_the_adapter_prefer_the_chosen_answers_on_pairs_it_never_saw(dpo_run):
    _, run = dpo_run
    card = json.loads((run.path / "report.json").read_text())
    assert card["kind"] == "pairs" and card["source"] == "held_out" and card["overall"]["examples"] == 5
    o = card["overall"]
    assert o["adapter_prefers_chosen"] > o["base_prefers_chosen"], o
    assert o["adapter_margin"] > o["base_margin"] and card["verdict"] == "learned", card
    assert all(e["adapter_margin"] > e["base_margin"] for e in card["examples"]), card["examples"]
    assert all(e["base"] and e["adapter"] for e in card["examples"])  # their answers, side by side


def test_a_dpo_run_logs_its_reward_margin_and_how_often_chosen_wins(dpo_run):
    _, run = dpo_run
    steps = [m for m in run.metrics() if "loss" in m]
    assert [m["step"] for m in steps] == list(range(1, STEPS + 1))
    assert all("reward_margin" in m and 0 <= m["reward_accuracy"] <= 1 for m in steps)
    margins = [m["reward_margin"] for m in steps]
    assert margins[0] == pytest.approx(0, abs=1e-3)  # a new adapter starts as the base: no margin yet
    assert margins == sorted(margins) and margins[-1] > 0.3 and steps[-1]["reward_accuracy"] == 1, margins
    evals = [m for m in run.metrics() if "eval_loss" in m]
    assert evals and all("eval_reward_margin" in m and "perplexity" not in m for m in evals)
    assert all(m["tokens_per_s"] > 0 for m in steps)
    assert run.curves_path.stat().st_size > 10_000


def test_its_adapter_is_an_ordinary_one_for_chat_and_export(dpo_run):
    from safetensors.torch import load_file

    _, run = dpo_run
    assert run.has_adapter() and not (run.adapter_dir / "ref").exists()
    trained = {k: w for k, w in load_file(run.adapter_dir / "adapter_model.safetensors").items() if "lora_B" in k}
    assert trained and all(w.abs().max() > 0 for w in trained.values())


def test_its_report_card_fields_are_documented(dpo_run):
    _, run = dpo_run
    card = json.loads((run.path / "report.json").read_text())
    documented = (REPO / "docs" / "report-card.md").read_text()
    for key in [*card, *card["overall"], *card["examples"][0]]:
        assert f"`{key}`" in documented, f"{key} is not described in docs/report-card.md"


def test_the_pages_show_a_pair_card(dpo_run):
    from studio.export.card import _report_card
    from studio.ui import report_view
    from studio.ui.i18n import Translator

    workspace, run = dpo_run
    card = json.loads((run.path / "report.json").read_text())
    o = card["overall"]
    text = report_view.card_summary(card, {})
    assert "5 held-out pairs" in text and f"**{o['adapter_prefers_chosen']:.0%}**" in text
    assert "偏好" in report_view.card_summary(card, {}, Translator("zh-Hant"))
    table = report_view.card_examples(card)
    assert list(table.columns) == ["prompt", "chosen", "rejected", "base model", "adapter", "margin: base → adapter"]
    assert table.iloc[0]["chosen"].startswith("Sure! The answer is")
    compared = report_view.compare_cards([run])
    assert compared.iloc[0]["prefers chosen: base → adapter"] == \
        f"{o['base_prefers_chosen']:.0%} → {o['adapter_prefers_chosen']:.0%}"
    exported = "\n".join(_report_card(card))
    assert "| Prefers the chosen answer |" in exported and "Well, the answer is" in exported


# ---- settings, refused before a run starts ----------------------------------------------------------------

def test_beta_out_of_range_is_named():
    with pytest.raises(ConfigError, match=r"beta must be between 0.01 and 1.0 \(got 5.0\)"):
        TrainConfig(dataset="d", method="dpo", beta=5).validate()
    with pytest.raises(ConfigError, match="start_from: only a preference"):
        TrainConfig(dataset="d", start_from="some-run").validate()


def test_a_method_and_data_that_do_not_fit_are_refused_by_name():
    dpo = config_from_preset(load_presets()["preference-dpo"], dataset="chats")
    with pytest.raises(ConfigError, match="^method: preference tuning"):
        check_data_fits(dpo, pairs=False)
    with pytest.raises(ConfigError, match="^method: chats holds preference pairs"):
        check_data_fits(config_from_preset(load_presets()["chatbot"], dataset="chats"), pairs=True)


def test_the_command_line_makes_a_dpo_run_from_the_preset_and_a_pairs_file(workspace, tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(trainer, "train_run", lambda run, _workspace: started.append(run) or "completed")
    sft = create_run(workspace, TrainConfig(dataset="chats"), state="completed", name="sft")
    (sft.adapter_dir).mkdir()
    (sft.adapter_dir / "adapter_config.json").write_text("{}")
    pairs = sure_pairs(tmp_path / "pairs.jsonl", 16)
    assert studio(workspace, "train", "--preset", "preference-dpo", "--data", pairs, "--start-from", sft.id) == 0
    [config] = [run.config for run in started]
    assert (config.method, config.beta, config.start_from, config.model) == ("dpo", 0.1, sft.id, "embedded")
    # the small-data rule gives 14 pairs enough updates, at the preset's learning rate
    preset = load_presets()["preference-dpo"].settings
    assert config.epochs > preset["epochs"] and config.learning_rate == preset["learning_rate"]


def test_the_command_line_refuses_them_before_loading_a_model(workspace, tmp_path, monkeypatch, capsys):
    started = []
    monkeypatch.setattr(trainer, "train_run", lambda run, _workspace: started.append(run) or "completed")
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                              {"role": "assistant", "content": "Arr!"}]}) + "\n")
    assert studio(workspace, "train", "--preset", "preference-dpo", "--data", chats) == 2
    assert "error: method: preference tuning (DPO) learns from pairs" in capsys.readouterr().out
    pairs = sure_pairs(tmp_path / "pairs.jsonl", 4)
    assert studio(workspace, "train", "--preset", "chatbot", "--data", pairs) == 2
    assert "holds preference pairs" in capsys.readouterr().out
    assert studio(workspace, "train", "--preset", "preference-dpo", "--data", pairs, "--start-from", "nothing") == 2
    assert "error: start_from: No run folder at 'nothing'" in capsys.readouterr().out
    assert not started and not list_runs(workspace)


def test_a_run_to_start_from_must_have_finished_on_the_same_model(workspace):
    unfinished = create_run(workspace, TrainConfig(dataset="d"), name="sft")
    dpo = TrainConfig(dataset="pairs", method="dpo", start_from=unfinished.id)
    with pytest.raises(ConfigError, match="has no adapter yet"):
        start_adapter(workspace, dpo)
    (unfinished.adapter_dir).mkdir()
    (unfinished.adapter_dir / "adapter_config.json").write_text("{}")
    assert start_adapter(workspace, dpo) == unfinished.adapter_dir
    dpo.model = "org/other-model"
    with pytest.raises(ConfigError, match="trained an adapter for embedded, which does not fit org/other-model"):
        start_adapter(workspace, dpo)


def test_the_train_tab_names_beta_as_it_labels_it():
    from studio.config import ConfigError as Refused
    from studio.messages import text_of
    from studio.ui.i18n import Translator
    from studio.ui.train_tab import FIELDS, build_config, settings_from, with_labels

    values = settings_from(load_presets()["preference-dpo"])
    assert values[FIELDS.index("method")] == "dpo"
    values[FIELDS.index("beta")] = 0
    with pytest.raises(Refused) as refused:
        build_config("d", None, "preference-dpo", values)
    english = Translator("en")
    assert english.message(with_labels(text_of(refused.value), english)).startswith(
        "Stay close to where it started (beta; higher: closer) must be between 0.01 and 1.0")
