"""The whole journey on the embedded model: upload pirate chats, train on them, see whether it worked, chat with
the result, merge it.

In the browser, a logged-in person uploads a dataset and trains a short run on it, watching the charts.
A pirate-voiced adapter is trained once for the module as a person would start it, with the Chatbot preset and
nothing set by hand (a few minutes on two CPU cores): its voice must be heard on questions it never saw, and its
report card must say so; the chat and export steps then use it.
"""
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from studio.config import config_from_preset, load_presets
from studio.data import inspect_file, save_dataset
from studio.runs import Run, create_run
from studio.training import small_data
from app_server import serving, with_embedded_model

REPO = Path(__file__).resolve().parent.parent
PIRATE = Path(__file__).parent / "data" / "pirate_chat.jsonl"
UNSEEN = "What color is snow?"  # not in the training data


@pytest.fixture(scope="module")
def pirate_run(tmp_path_factory, embedded_model_dir):
    """A completed run whose adapter answers every question in a pirate's voice."""
    from studio.workspace import Workspace

    workspace = with_embedded_model(Workspace.at(tmp_path_factory.mktemp("journey") / "workspace"),
                                    embedded_model_dir)
    save_dataset(workspace, "pirate", PIRATE, inspect_file(PIRATE))
    # What Start does for a saved dataset of 32 rows and the Chatbot preset (studio/ui/train_tab.py)
    config, _ = small_data.apply(config_from_preset(load_presets()["chatbot"], model="embedded", dataset="pirate"),
                                 rows=32)
    run = create_run(workspace, config, name="pirate")
    done = subprocess.run([sys.executable, "-m", "studio", "--workspace", str(workspace.root), "train", str(run.path)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and run.state == "completed", done.stdout[-3000:]
    return workspace, run


def test_the_adapter_speaks_pirate_where_the_base_does_not(pirate_run):
    workspace, run = pirate_run
    done = subprocess.run([sys.executable, "-m", "studio", "--workspace", str(workspace.root), "chat", "--run",
                           str(run.path), "--prompt", UNSEEN, "--compare", "--json", "--max-new-tokens", "24"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    adapter, base = words(answers["adapter"]), words(answers["base"])
    assert "arr" in adapter and "matey" in adapter, answers  # the words themselves, not "carry" or "arrive"
    assert "arr" not in base and "matey" not in base and "matey" not in answers["base"].lower(), answers


def words(text: str) -> list[str]:
    """The words of a text, lower-case, without the punctuation around them ("Arr, matey!" -> arr, matey)."""
    return re.findall(r"[a-z]+", text.lower())


def test_its_report_card_says_it_learned_on_prompts_it_never_saw(pirate_run):
    _, run = pirate_run
    card = json.loads((run.path / "report.json").read_text())
    assert card["source"] == "held_out" and card["verdict"] == "learned", card
    held_out = {e["expected"] for e in card["examples"]}
    trained_on = {json.loads(line)["messages"][1]["content"] for line in PIRATE.read_text().splitlines()}
    assert held_out and held_out <= trained_on and len(held_out) == card["overall"]["examples"]
    for example in card["examples"]:  # the voice on every held-out prompt, never in the base model's answer
        assert "matey" in example["adapter"].lower() and "matey" not in example["base"].lower(), example
        assert example["adapter_chrf"] > example["base_chrf"]
    o = card["overall"]
    assert o["likelihood_gain"] > 2 and o["adapter_chrf"] >= o["base_chrf"] + 10 and o["changed_answers"] == 1


def test_studio_eval_makes_a_card_for_other_data_as_documented(pirate_run, tmp_path, capsys):
    from studio.__main__ import main

    workspace, run = pirate_run
    other = tmp_path / "more_questions.csv"
    other.write_text("instruction,output\n" + "".join(f"What is {a} plus {b}?,\"Arr, matey! {a} plus {b} be {a + b}, "
                                                        f"yo ho ho!\"\n" for a, b in ((1, 2), (3, 4), (5, 6))))
    assert main(["--workspace", str(workspace.root), "eval", run.id, "--data", str(other), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    documented = (REPO / "docs" / "report-card.md").read_text()
    for key in [*card, *card["overall"], *card["examples"][0]]:
        assert f"`{key}`" in documented, f"{key} is not described in docs/report-card.md"
    assert card["source"] == "other" and card["overall"]["examples"] == 3 and card["verdict"] == "learned"
    assert (run.path / "reports" / "more_questions.json").exists() and (run.path / "report.json").exists()


LOGIN = ("ana", "pirate-password")


@pytest.fixture()
def journey_app(pirate_run):
    """The app over the journey's workspace, behind a login as on a lab's workstation."""
    workspace, run = pirate_run
    with serving(workspace, auth=[LOGIN]) as studio:
        yield studio, run


def open_logged_in(page, url: str) -> None:
    page.goto(url)
    page.get_by_label("username").fill(LOGIN[0])
    page.get_by_label("password").fill(LOGIN[1])
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="1 · Dataset").wait_for()


def test_a_new_user_uploads_data_and_trains_with_live_charts(journey_app, page, tmp_path):
    studio, _ = journey_app
    open_logged_in(page, studio.url)
    upload = tmp_path / "my_pirate_chats.jsonl"
    upload.write_bytes(PIRATE.read_bytes())
    page.locator("#dataset-file input[type=file]").set_input_files(str(upload))
    page.locator("#dataset-summary").get_by_text("32 rows").wait_for(timeout=60_000)
    page.locator("#dataset-name textarea").fill("ana-pirates")
    page.locator("#dataset-save").click()
    page.locator("#dataset-saved").get_by_text("Saved").wait_for()
    assert json.loads((studio.workspace.datasets / "ana-pirates" / "report.json").read_text())["owner"] == LOGIN[0]

    page.get_by_role("tab", name="2 · Train").click()
    page.locator("#train-dataset input").fill("ana-pirates")
    page.locator("#train-dataset input").press("Enter")
    page.get_by_text("Advanced settings").click()
    steps = page.get_by_label("Stop after this many steps (-1: no limit)")
    steps.fill("3")
    steps.press("Tab")
    page.get_by_label("Name this run (optional)").fill("browser")
    page.locator("#start-training").click()
    page.wait_for_selector("#train-notice:has-text('browser')")
    # the live view follows the new run: progress moves and the loss chart gets points
    page.wait_for_selector("#run-progress:has-text('step 1 of 3'), #run-progress:has-text('step 2 of 3'), "
                           "#run-progress:has-text('step 3 of 3')", timeout=240_000)
    page.wait_for_selector("#run-progress:has-text('completed')", timeout=240_000)
    started = [r for r in studio.queue.workspace.runs.iterdir() if r.name.endswith("browser")]
    assert json.loads((started[0] / "status.json").read_text())["owner"] == LOGIN[0]
    assert_loss_chart_plots_the_metrics(page, Run(started[0]))
    page.screenshot(path=str(tmp_path / "train.png"), full_page=True)  # the README's: scripts/screenshots.py

    # Delete asks first: one click only asks, a second one deletes.
    page.locator("#run-delete").click()
    page.wait_for_selector("#train-notice:has-text('Click Delete again')")
    assert started[0].exists()
    page.locator("#run-delete").click()
    page.wait_for_selector("#train-notice:has-text('Deleted')")
    assert not started[0].exists()


def assert_loss_chart_plots_the_metrics(page, run: Run) -> None:
    """The loss chart's points, as the browser drew them (Vega labels each point for screen readers), are
    metrics.jsonl's losses, and drawn higher where the loss is higher."""
    expected = {(m["step"], series): m[key] for m in run.metrics() if "event" not in m
                for key, series in (("loss", "train"), ("eval_loss", "validation")) if key in m}
    points = "#loss-plot [aria-roledescription=point]"
    page.wait_for_function(f"document.querySelectorAll('{points}').length >= {len(expected)}", timeout=30_000)
    drawn = {}
    for label, transform in page.eval_on_selector_all(
            points, "els => els.map(e => [e.getAttribute('aria-label'), e.getAttribute('transform')])"):
        fields = dict(part.split(": ", 1) for part in label.split("; "))
        y = float(transform.split(",")[1].rstrip(")"))
        drawn[(int(fields["step"]), fields["series"])] = (float(fields["loss"]), y)
    assert drawn.keys() == expected.keys()
    for key, loss in expected.items():
        assert drawn[key][0] == pytest.approx(loss, abs=1e-9), key
    by_loss = sorted(drawn.values())
    assert all(a[1] >= b[1] for a, b in zip(by_loss, by_loss[1:])), "a higher loss drawn lower on the chart"


def test_train_tab_shows_the_report_card_and_compares_two_runs_cards(journey_app, page):
    import shutil

    import yaml

    studio, run = journey_app
    twin = run.path.with_name("lower-rate")  # the same run as if trained at another learning rate; a name that
    # neither contains the run's id nor is contained in it, so typing one into the picker never selects the other
    shutil.copytree(run.path, twin)
    settings = yaml.safe_load((twin / "run.yaml").read_text())
    (twin / "run.yaml").write_text(yaml.safe_dump({**settings, "learning_rate": 1e-4}))
    open_logged_in(page, studio.url)
    page.get_by_role("tab", name="2 · Train").click()
    page.locator("#run-pick input").fill(run.id)
    page.locator("#run-pick input").press("Enter")
    page.wait_for_selector("#report-card:has-text('It learned')", timeout=60_000)
    assert "held-out" in page.locator("#report-card").inner_text()
    assert "matey" in page.locator("#report-examples").inner_text().lower()

    page.get_by_text("Compare runs and the queue").click()
    for run_id in (run.id, twin.name):
        page.locator("#compare-pick input").fill(run_id)
        page.locator("#compare-pick input").press("Enter")
    page.wait_for_selector("#compare-cards:has-text('learning_rate')", timeout=60_000)
    table = page.locator("#compare-cards").inner_text()
    assert table.count("It learned") == 2 and "0.0001" in table and "dataset" not in table  # only what differs


def test_chat_tab_shows_base_and_adapter_side_by_side(journey_app, page, tmp_path):
    studio, run = journey_app
    open_logged_in(page, studio.url)
    page.get_by_role("tab", name="3 · Chat").click()
    page.locator("#chat-right input").fill(f"Run {run.id}")
    page.locator("#chat-right input").press("Enter")
    page.locator("#chat-message textarea").fill(UNSEEN)
    page.locator("#chat-send").click()
    page.wait_for_selector("#chat-right-stats:has-text('tokens/s')", timeout=180_000)
    right = page.locator("#chat-right-box").inner_text().lower()
    left = page.locator("#chat-left-box").inner_text().lower()
    assert "matey" in right and "matey" not in left
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)


def test_export_tab_merges_and_downloads_the_zip(journey_app, page, tmp_path):
    studio, run = journey_app
    open_logged_in(page, studio.url)
    page.get_by_role("tab", name="4 · Export").click()
    page.locator("#export-run input").fill(run.id)
    page.locator("#export-run input").press("Enter")
    page.locator("#export-merge").click()
    page.wait_for_selector("#export-result:has-text('matches base + adapter')", timeout=300_000)
    page.screenshot(path=str(tmp_path / "export.png"), full_page=True)
    with page.expect_download() as download:
        page.locator("#export-download a").first.click()
    saved = tmp_path / "merged.zip"
    download.value.save_as(saved)
    names = zipfile.ZipFile(saved).namelist()
    assert any(n.endswith("config.json") for n in names) and any(n.endswith(".safetensors") for n in names)
    assert any(n.endswith("README.md") for n in names) and any(n.endswith("tokenizer.json") for n in names)
