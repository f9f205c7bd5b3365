"""python -m studio train --preset NAME --data FILE, and python -m studio runs: called in-process through main()."""
import json

import pytest
import yaml
from app_server import with_embedded_model

from studio import evaluation
from studio.__main__ import main
from studio.config import TrainConfig, load_presets
from studio.runs import Run, create_run, list_runs
from studio.training import small_data, trainer

CHATBOT = load_presets()["chatbot"].settings


def write_chats(path, rows: int):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"What is {i} plus one?"},
                                             {"role": "assistant", "content": f"Arr, {i + 1}, matey!"}]}) + "\n")
    return path


def studio(workspace, *argv) -> int:
    return main(["--workspace", str(workspace.root), *map(str, argv)])


@pytest.fixture()
def no_training(monkeypatch):
    """train_run as a stand-in that trains nothing: what matters here is the run folder made for it."""
    trained = []
    monkeypatch.setattr(trainer, "train_run", lambda run, _workspace: trained.append(run) or "completed")
    return trained


def test_a_preset_and_a_file_train_the_embedded_model(workspace, embedded_model_dir, tmp_path, capsys, monkeypatch):
    with_embedded_model(workspace, embedded_model_dir)
    # The report card has tests of its own; on two shared CPU cores it would take three times the training's time.
    monkeypatch.setattr(evaluation, "evaluate_trained", lambda *a, **k: {"verdict_text": "-", "next_step": "-"})
    data = write_chats(tmp_path / "chats.jsonl", 8)
    assert studio(workspace, "train", "--preset", "chatbot", "--data", data, "--max-steps", 2) == 0
    out = capsys.readouterr().out
    [run] = list_runs(workspace)
    assert f"Run folder: {run.path}" in out and "2 updates" in out
    saved = yaml.safe_load(run.config_path.read_text())
    assert (saved["preset"], saved["model"], saved["dataset"], saved["max_steps"]) == ("chatbot", "embedded",
                                                                                        str(data), 2)
    # the steps were set by hand, so the small-data rule left the preset's learning rate and passes alone
    assert (saved["learning_rate"], saved["epochs"]) == (CHATBOT["learning_rate"], CHATBOT["epochs"])
    assert run.state == "completed" and run.has_adapter()
    assert [m["step"] for m in run.metrics() if "loss" in m] == [1, 2]


def test_a_small_dataset_gets_more_passes_unless_they_are_set(workspace, tmp_path, no_training, capsys):
    data = write_chats(tmp_path / "sixteen.jsonl", 16)
    assert studio(workspace, "train", "--preset", "chatbot", "--data", data) == 0
    raised = no_training[-1].config
    assert raised.epochs > CHATBOT["epochs"] and raised.learning_rate == small_data.SMALL_DATA_LR
    assert "passes" in capsys.readouterr().out

    assert studio(workspace, "train", "--preset", "chatbot", "--data", data, "--epochs", 3,
                  "--run-dir", tmp_path / "mine") == 0
    kept = no_training[-1]
    assert kept.path == tmp_path / "mine" and kept.state == "running"
    assert (kept.config.epochs, kept.config.learning_rate) == (3.0, CHATBOT["learning_rate"])


@pytest.mark.parametrize("argv, said", [
    (["--preset", "nope", "--data", "DATA"], "No preset called 'nope'. Known presets: "),
    (["--preset", "chatbot", "--data", "missing.jsonl"], "No dataset called 'missing.jsonl'"),
    (["--preset", "chatbot"], "needs both --preset NAME and --data FILE"),
    (["some-run", "--preset", "chatbot", "--data", "DATA"], "not both"),
    ([], "Say what to train"),
    (["--preset", "chatbot", "--data", "DATA", "--learning-rate", 1], "learning_rate must be between"),
    (["--preset", "chatbot", "--data", "DATA", "--run-dir", "FULL"], "is not an empty folder"),
])
def test_bad_input_is_refused_with_what_to_do(workspace, tmp_path, no_training, capsys, argv, said):
    data = write_chats(tmp_path / "chats.jsonl", 4)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    filled = {"DATA": data, "FULL": tmp_path / "full"}
    assert studio(workspace, "train", *[filled.get(a, a) for a in argv]) == 2
    assert said in capsys.readouterr().out and not no_training
    assert not list_runs(workspace)


def test_runs_lists_each_run_with_its_state_progress_and_verdict(workspace, capsys):
    config = TrainConfig(dataset="/data/客服.jsonl", preset="chatbot")
    done = create_run(workspace, config, name="客服語氣")
    done.set_status(state="completed")
    with open(done.path / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"event": "start", "step": 0, "max_steps": 4}) + "\n")
        f.write(json.dumps({"step": 4, "max_steps": 4, "loss": 1.25}) + "\n")
    (done.path / "report.json").write_text(json.dumps({"verdict": "learned"}))
    damaged = Run(create_run(workspace, config).path)
    (damaged.path / "status.json").write_text("{cut sho")

    assert studio(workspace, "runs", "--json") == 0
    listed = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed[done.id] == {"id": done.id, "name": "客服語氣", "state": "completed", "owner": "local",
                               "preset": "chatbot", "model": "embedded", "dataset": "/data/客服.jsonl",
                               "steps_done": 4, "steps_total": 4, "last_loss": 1.25, "verdict": "learned"}
    assert (listed[damaged.id]["state"], listed[damaged.id]["steps_done"]) == ("damaged", None)

    assert studio(workspace, "runs") == 0
    heading, *rows = capsys.readouterr().out.splitlines()
    assert heading.split() == ["run", "name", "state", "owner", "preset", "model", "dataset", "steps", "loss",
                               "verdict"]
    row = next(r for r in rows if r.startswith(done.id))
    assert row.split() == [done.id, "客服語氣", "completed", "local", "chatbot", "embedded", "客服.jsonl", "4/4",
                           "1.2500", "learned"]
