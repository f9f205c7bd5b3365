"""The whole journey on the embedded model: upload pirate chats, train on them, see whether it worked, chat with
the result, merge it and make a GGUF of it.

In the browser, a logged-in person uploads a dataset and trains a short run on it, watching the charts.
The pirate-voiced adapter (conftest.py's pirate_run, trained once for the session as a person would start it, with
the Chatbot preset and nothing set by hand) must speak in its voice on questions it never saw, and its report card
must say so; the chat and export steps then use it.
"""
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from studio.data import inspect_file, save_dataset
from studio.runs import Run
from app_server import serving
from conftest import PIRATE

REPO = Path(__file__).resolve().parent.parent
UNSEEN = "What color is snow?"  # not in the training data


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


def speaks_pirate(text: str) -> bool:
    """Whether an answer has the data's voice: the base model says none of these words ("mate" too comes only from
    the adapter, in answers where a quantised file drops the "y")."""
    return bool({"arr", "matey", "mate", "ahoy", "ye", "yo", "ho"} & set(words(text)))


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
    # The report card is the pirate run's to show (below); here it would only double the wait on two CPU cores.
    page.get_by_label("Make a report card when it ends (base vs adapter on held-out prompts)").uncheck()
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


def test_export_tab_merges_then_makes_a_gguf_that_still_speaks_pirate(journey_app, page, tmp_path):
    """The merged model's zip, then a q4_k_m GGUF of it (the merge reused): llama.cpp's answer to a held-out prompt,
    shown on the page, is still the pirate's, and the GGUF zip holds the file, its Modelfile and its card."""
    studio, run = journey_app
    open_logged_in(page, studio.url)
    page.get_by_role("tab", name="4 · Export").click()
    page.locator("#export-run input").fill(run.id)
    page.locator("#export-run input").press("Enter")
    page.locator("#export-merge").click()
    page.wait_for_selector("#export-result:has-text('matches base + adapter')", timeout=300_000)
    page.screenshot(path=str(tmp_path / "export.png"), full_page=True)
    names = downloaded(page, tmp_path / "merged.zip")
    assert any(n.endswith("config.json") for n in names) and any(n.endswith(".safetensors") for n in names)
    assert any(n.endswith("README.md") for n in names) and any(n.endswith("tokenizer.json") for n in names)

    page.wait_for_selector("#export-gguf-plan:has-text('The file will be about')")
    page.locator("#export-gguf").click()
    page.wait_for_selector("#export-result:has-text('llama.cpp loads the GGUF file')", timeout=600_000)
    answered = page.locator("#export-result").inner_text().split("llama.cpp answered:", 1)[1]
    assert speaks_pirate(answered), answered
    names = downloaded(page, tmp_path / "gguf.zip")
    assert {n.split("/", 1)[1] for n in names} >= {f"{run.id}-q4_k_m.gguf", "Modelfile", "README.md"}


def downloaded(page, path) -> list[str]:
    """The names in the zip the Export tab offers, downloaded as a person would."""
    with page.expect_download() as download:
        page.locator("#export-download a").first.click()
    download.value.save_as(path)
    return zipfile.ZipFile(path).namelist()


@pytest.fixture(scope="module")
def pirate_ggufs(pirate_run):
    """The pirate adapter as q4_k_m and q8_0 GGUF files, made and checked by llama.cpp (the q4_k_m file is the one
    the Export tab made, when its test ran first: an export of an unchanged adapter is not made twice)."""
    from studio.export.gguf import export_gguf

    workspace, run = pirate_run
    return {quant: export_gguf(run, quant, workspace=workspace) for quant in ("q4_k_m", "q8_0")}


@pytest.mark.parametrize("quant", ["q4_k_m", "q8_0"])
def test_llama_cpp_runs_each_gguf_like_the_merged_model(quant, pirate_ggufs):
    from llama_cpp import Llama

    from studio.export.gguf_check import FLOORS

    result = pirate_ggufs[quant]
    check = result.check
    assert check.ok and check.agreement >= FLOORS[quant] and check.positions >= 200, check.verdict
    assert check.same_tokens and check.chat_template and check.modelfile_template
    assert speaks_pirate(check.answer), (check.answer, check.merged_answer)  # a held-out prompt
    vocabulary = Llama(str(result.gguf_path), vocab_only=True, verbose=False)
    assert vocabulary.metadata["general.file_type"] == {"q8_0": "7", "q4_k_m": "15"}[quant]  # llama.cpp's own
    vocabulary.close()
    modelfile = (result.folder / "Modelfile").read_text().splitlines()
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and modelfile[1].startswith('TEMPLATE """')
    assert not any(line.startswith("SYSTEM") for line in modelfile)  # the pirate chats have no system prompt
    print(f"{quant}: same next token as the merged model at {check.agreement:.1%} of {check.positions} positions; "
          f"{result.size_bytes / 2**20:.0f} MB")


def test_the_gguf_check_fails_a_file_read_beside_another_model(pirate_ggufs, pirate_run, embedded_model_dir):
    """The check can fail: the pirate q8_0 file read beside the base model, as if the merge had lost the adapter."""
    from studio.export.dataset import held_out_examples
    from studio.export.gguf_check import check_gguf

    workspace, run = pirate_run
    check = check_gguf(pirate_ggufs["q8_0"].gguf_path, embedded_model_dir, "q8_0",
                       held_out_examples(workspace, run.config), None)
    assert not check.ok and "picks the merged model's next token at only" in check.verdict, check.verdict


def test_the_chat_puts_the_q4_gguf_beside_the_adapter(pirate_ggufs, pirate_run, embedded_model_dir):
    from studio.inference import ChatStream, GenerationSettings, ModelPool
    from studio.ui.chat_tab import adapter_choices, row
    from studio.ui.context import Studio

    workspace, run = pirate_run
    studio = Studio(workspace, queue=None)
    choice = dict(adapter_choices(studio))[f"Run {run.id} as GGUF q4_k_m, in llama.cpp"]
    stream = ChatStream(ModelPool(max_bases=1), str(embedded_model_dir),
                        [row(studio, run.id, UNSEEN, [], ""), row(studio, choice, UNSEEN, [], "")],
                        GenerationSettings(temperature=0, max_new_tokens=24))
    streamed = ["", ""]
    for deltas in stream:
        streamed = [a + b for a, b in zip(streamed, deltas)]
    adapter, gguf = stream.answers
    assert adapter.gguf is None and gguf.gguf == str(pirate_ggufs["q4_k_m"].gguf_path) and gguf.tokens > 0
    assert speaks_pirate(adapter.text) and speaks_pirate(gguf.text), (adapter.text, gguf.text)
    assert streamed[1].strip() == gguf.text


def test_a_preference_run_goes_on_from_the_pirate_adapter_with_live_charts(journey_app, page, tmp_path):
    """The usual order, supervised then DPO: the Train tab offers the finished pirate run to start from. DPO then
    measures against that adapter, not the base model: at the first step, before any update, the margin is 0."""
    import yaml
    from safetensors.torch import load_file

    studio, run = journey_app
    pairs = tmp_path / "rated.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"What is {i} plus {i}?", "chosen": f"Arr, {2 * i} it be!",
                                         "rejected": f"It is {2 * i}."}) + "\n" for i in range(8)))
    save_dataset(studio.workspace, "rated", pairs, inspect_file(pairs))
    open_logged_in(page, studio.url)
    page.get_by_role("tab", name="2 · Train").click()
    for box, value in (("#train-dataset", "rated"), ("#train-preset", "Preference (DPO)")):
        page.locator(f"{box} input").fill(value)
        page.locator(f"{box} input").press("Enter")
    page.locator("#train-start-from input").fill(run.id)  # shown for the preference method only
    page.locator("#train-start-from input").press("Enter")
    page.get_by_text("Advanced settings", exact=True).click()  # the plan above names them too
    # Two updates of two pairs, nothing held out: what matters is where it starts and that its charts show
    for label, value in (("Stop after this many steps (-1: no limit)", "2"),
                         ("Steps added up per update (gradient accumulation)", "1"),
                         ("Share held out for validation", "0")):
        page.get_by_label(label).fill(value)
        page.get_by_label(label).press("Tab")
    page.get_by_label("Make a report card when it ends (base vs adapter on held-out prompts)").uncheck()
    page.get_by_label("Name this run (optional)").fill("dpo")
    page.locator("#start-training").click()
    page.wait_for_selector("#train-notice:has-text('dpo')")
    page.wait_for_selector("#run-progress:has-text('-dpo'):has-text('completed')", timeout=600_000)
    page.wait_for_function("document.querySelector('#margin-plot canvas, #margin-plot svg') !== null")
    page.wait_for_function("document.querySelector('#wins-plot canvas, #wins-plot svg') !== null")

    [dpo] = [r for r in studio.queue.workspace.runs.iterdir() if r.name.endswith("-dpo")]
    config = yaml.safe_load((dpo / "run.yaml").read_text())
    assert (config["method"], config["start_from"], config["max_steps"], config["val_fraction"]) == \
        ("dpo", run.id, 2, 0)
    first = next(json.loads(line) for line in (dpo / "metrics.jsonl").read_text().splitlines() if '"loss"' in line)
    assert first["reward_margin"] == pytest.approx(0, abs=0.05), first  # against the base it would be far from 0
    went_on = load_file(dpo / "adapter" / "adapter_model.safetensors")
    pirate = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert went_on.keys() == pirate.keys() and any((went_on[k] != pirate[k]).any() for k in pirate)
    assert not (dpo / "adapter" / "ref").exists()
