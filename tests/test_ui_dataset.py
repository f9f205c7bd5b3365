"""The Dataset tab: its plain functions, then the whole tab in a real browser."""
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from studio.data import DatasetError, inspect_file, list_datasets
from studio.models import EMBEDDED_LABEL as EMBEDDED, ModelNotFound
from studio.ui.dataset_tab import (
    Tokenizers, as_max_length, check, check_upload, column_mapping, datasets_table, example_view, length_histogram,
    preview_table, problems_table, problems_text, save, shape_text, summary_text, suggest_name,
)
from studio.ui.i18n import Translator
from studio.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent

GOOD = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"},
                  {"role": "assistant", "content": "Paris is the capital of France."}]},
    {"messages": [{"role": "system", "content": "Answer like a pirate."},
                  {"role": "user", "content": "How are you?"},
                  {"role": "assistant", "content": "Arr, shipshape and ready to sail!"}]},
    {"messages": [{"role": "user", "content": "Name a primary colour."},
                  {"role": "assistant", "content": "Blue."}]},
]


def chat_lines() -> list[str]:
    """Three good conversations, a line cut off mid-way (row 2) and one with no answer (row 4)."""
    good = [json.dumps(r) for r in GOOD]
    return [good[0], '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assis',
            good[1], json.dumps({"messages": [{"role": "user", "content": "Anyone there?"}]}), good[2]]


@pytest.fixture(scope="module")
def tokenizers(embedded_model_dir):
    return Tokenizers(Workspace.at(embedded_model_dir.parent.parent))


def test_a_tokenizer_is_looked_up_once_per_choice(embedded_model_dir, monkeypatch):
    from studio.ui import dataset_tab

    resolved = []
    real = dataset_tab.resolve_model
    monkeypatch.setattr(dataset_tab, "resolve_model", lambda *a, **k: resolved.append(a[0]) or real(*a, **k))
    tokenizers = Tokenizers(Workspace.at(embedded_model_dir.parent.parent))
    first = tokenizers.get(EMBEDDED)
    assert tokenizers.get(EMBEDDED) is first and tokenizers.get(None) is first  # None is the embedded model
    assert resolved == [EMBEDDED]  # not once per slider move: resolving may ask the hub
    with pytest.raises(ModelNotFound):
        tokenizers.get("no-such-model")


@pytest.fixture()
def chat_file(tmp_path) -> Path:
    path = tmp_path / "pirate_chat.jsonl"
    path.write_text("\n".join(chat_lines()) + "\n", encoding="utf-8")
    return path


def test_good_upload_gives_numbers_preview_rendering_and_problems(tokenizers, chat_file):
    checked = check(tokenizers, chat_file, EMBEDDED, 1024)
    report = checked.report
    assert checked.notice == "" and checked.columns == ["messages"]
    assert shape_text(report) == "**Detected shape:** Chat conversations with role / content messages"
    assert (report.rows, report.valid, report.invalid) == (5, 3, 2)
    summary = summary_text(report)
    assert summary.startswith("**5 rows:** ✔ 3 usable · ✖ 2 with problems")
    stats = report.tokens
    assert f"shortest {stats['min']} · median {stats['median']:g}" in summary and f"longest {stats['max']}" in summary
    assert "All examples fit in the max length of 1024 tokens." in summary

    problems = problems_table(report)
    assert problems["row"].tolist() == [2, 4]
    assert problems["problem"][0].startswith("broken JSON") and "no assistant turn" in problems["problem"][1]
    assert problems_text(report).startswith("✖ **2 rows cannot be used**")

    preview = preview_table(report)["value"]
    assert preview["row"].tolist() == [1, 3, 5]
    assert preview.iloc[1][["system", "user", "assistant", "turns"]].tolist() == [
        "Answer like a pirate.", "How are you?", "Arr, shipshape and ready to sail!", 3]

    segments, caption = example_view(checked.tokenizer, report, 2)
    assert caption == "Example 2 of 3 — row 3 of your file"
    learned = "".join(text for text, label in segments if label)
    read_only = "".join(text for text, label in segments if not label)
    assert "Arr, shipshape and ready to sail!" in learned
    assert "How are you?" in read_only and "Answer like a pirate." in read_only and "How are you?" not in learned

    histogram = length_histogram(report)["value"]
    assert histogram["examples"].sum() == 3 and histogram["tokens"].iloc[0].startswith(str(stats["min"]))


def test_the_length_bands_show_in_numeric_order():
    plot = length_histogram(SimpleNamespace(lengths=[53, 60, 75, 103, 112, 170]))
    bands = plot["value"]["tokens"].tolist()
    assert bands[:3] == ["53-62", "63-72", "73-82"] and bands[-1] == "163-172"
    assert plot["sort"] == bands  # told, or the plot puts '103-112' before '53-62'
    assert plot["value"]["examples"].sum() == 6
    empty = length_histogram(None)
    assert empty["value"].empty and empty["sort"] == []


def test_every_preview_column_gets_a_readable_width(chat_file):
    # Left to the browser, the short system prompts beside long wrapped answers showed a letter a line.
    chat = preview_table(inspect_file(chat_file), t=Translator("zh-Hant"))
    assert len(chat["value"].columns) == 5 and chat["column_widths"] == ["7%", "23%", "30%", "30%", "7%"]
    assert preview_table(None)["column_widths"] == ["8%", "25%", "33%", "33%"]
    text = preview_table(inspect_file(REPO / "tests" / "data" / "lines.txt"))
    assert text["value"].columns.tolist() == ["row", "text"] and text["column_widths"] == ["7%", "92%"]


def test_long_examples_are_counted_against_the_max_length(tokenizers, chat_file):
    report = check(tokenizers, chat_file, EMBEDDED, 30).report
    assert report.tokens["over_limit"] == 3
    assert "⚠️ 3 examples are longer than the max length of 30 tokens" in summary_text(report)
    # A new max length is counted from the checked report, without tokenizing again, to the same numbers.
    recounted = check(tokenizers, chat_file, EMBEDDED, 1024).report.with_max_length(30)
    assert recounted.tokens == report.tokens and summary_text(recounted) == summary_text(report)
    with pytest.raises(DatasetError, match="whole number of tokens above 0"):
        as_max_length("lots")
    assert as_max_length(2048.0) == 2048
    with pytest.raises(DatasetError, match=r"\(the box is empty\)"):
        as_max_length(None)
    assert check(tokenizers, chat_file, EMBEDDED, 0).notice.startswith("❌ The max length must be")


def test_mapping_override_changes_the_format(tokenizers, tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text("title,body\nHow do I reset my password?,Click 'Forgot password' on the login page.\n"
                    "Where is my invoice?,Under Account > Billing.\n", encoding="utf-8")
    guessed = check(tokenizers, path, EMBEDDED, 1024)
    assert guessed.report.format == "text"
    assert column_mapping(guessed.columns, guessed.mapping) == [("title", "ignore"), ("body", "text")]

    fixed = check(tokenizers, path, EMBEDDED, 1024, overrides={"title": "instruction", "body": "output"})
    assert fixed.report.format == "alpaca" and shape_text(fixed.report).endswith("Instruction / answer pairs (alpaca)")
    assert column_mapping(fixed.columns, fixed.mapping) == [("title", "instruction"), ("body", "output")]
    assert fixed.report.records[1]["messages"][-1] == {"role": "assistant", "content": "Under Account > Billing."}

    forced = check(tokenizers, path, EMBEDDED, 1024, fmt="completion",
                   overrides={"title": "prompt", "body": "completion"})
    assert forced.report.format == "completion" and forced.report.valid == 2

    # A mapping that cannot work says why and still offers the columns to fix it with.
    broken = check(tokenizers, path, EMBEDDED, 1024, overrides={"title": "output", "body": "ignore"})
    assert broken.report is None and broken.columns == ["title", "body"]
    assert broken.notice.startswith("❌ ") and "column boxes below" in broken.notice
    assert broken.mapping == {"title": "output", "body": "ignore"}
    with pytest.raises(DatasetError) as raised:  # the columns come with the error: the file is read once
        inspect_file(path, mapping={"title": "output", "body": "ignore"})
    assert raised.value.columns == ["title", "body"]


def test_wrong_type_uploads_are_refused(tokenizers, tmp_path):
    sheet = tmp_path / "answers.xlsx"
    sheet.write_bytes(b"PK\x03\x04 not really a spreadsheet")
    with pytest.raises(DatasetError, match=r"answers.xlsx is not a file type .* \.csv, \.tsv, \.json, \.jsonl, "
                                           r"\.ndjson, \.parquet, \.txt, \.md \("):
        check_upload(sheet)
    refused = check(tokenizers, sheet, EMBEDDED, 1024)
    assert refused.report is None and refused.columns == [] and refused.notice.startswith("❌ answers.xlsx")

    with pytest.raises(DatasetError, match="Upload a file"):
        check_upload(None)
    for name in ("notes.md", "chats.ndjson"):  # every kind the readers know is let in
        assert check_upload(tmp_path / name) == tmp_path / name


def test_a_model_that_cannot_be_had_still_checks_the_rows(tokenizers, chat_file):
    with pytest.raises(ModelNotFound):
        tokenizers.get("no-such-model")
    checked = check(tokenizers, chat_file, "no-such-model", 1024)
    assert checked.report.valid == 3 and checked.report.tokens is None
    assert checked.notice.startswith("❌ 'no-such-model' is neither a folder")
    assert "token counts need a model" in checked.notice
    assert example_view(None, checked.report, 1) == ([], "Pick a model that loads to see the examples as the "
                                                         "model will see them.")
    assert "Length in tokens" not in summary_text(checked.report)


def test_save_records_the_dataset_and_its_owner(tokenizers, chat_file, workspace):
    report = check(tokenizers, chat_file, EMBEDDED, 1024).report
    assert suggest_name(chat_file) == "pirate_chat"
    message = save(workspace, chat_file, report, "Pirate chat", False, "alice")
    folder = workspace.datasets / "Pirate-chat"
    assert message == ("✔ Saved **Pirate-chat** (3 examples) in `workspace/datasets/Pirate-chat`. "
                       "You can now pick it in the **2 · Train** tab.")
    assert [d["name"] for d in list_datasets(workspace)] == ["Pirate-chat"]
    saved = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert saved["owner"] == "alice" and saved["valid"] == 3 and saved["problems"][0]["row"] == 2

    refused = save(workspace, chat_file, report, "Pirate chat", False, "bob")
    assert refused.startswith("❌ A dataset called 'Pirate-chat' already exists. Choose another name")
    assert json.loads((folder / "report.json").read_text(encoding="utf-8"))["owner"] == "alice"
    # Replacing it is for its owner or an administrator.
    assert save(workspace, chat_file, report, "Pirate chat", True, "bob") == (
        "❌ The dataset 'Pirate-chat' belongs to alice; only they or an administrator can change it.")
    assert json.loads((folder / "report.json").read_text(encoding="utf-8"))["owner"] == "alice"
    assert save(workspace, chat_file, report, "Pirate chat", True, "alice").startswith("✔ Saved")
    assert save(workspace, chat_file, report, "Pirate chat", True, "bob", admin=True).startswith("✔ Saved")
    assert json.loads((folder / "report.json").read_text(encoding="utf-8"))["owner"] == "bob"
    assert datasets_table(workspace).values.tolist() == [["Pirate-chat", "bob", 3, "messages"]]
    headers = datasets_table(workspace, Translator("zh-Hant")).columns.tolist()
    assert headers == ["資料集", "擁有者", "範例數", "格式"]

    assert save(workspace, chat_file, report, "  ", False, "bob") == "❌ Type a name for the dataset first."
    assert save(workspace, None, None, "x", False, "bob").startswith("❌ Upload a file")
    # An upload whose examples cannot be found yet is there: the way on is the column boxes, not another upload.
    assert save(workspace, chat_file, None, "x", False, "bob", columns=["title", "body"]) == (
        "❌ The examples in this file cannot be found yet. Set the column boxes above until the examples appear, "
        "then save.")


# ---- the tab in a real browser ----------------------------------------------------------------------

def grid(page, selector: str) -> list[list[str]]:
    """The cells of a gr.Dataframe as shown, row by row."""
    rows = page.locator(f"{selector} [role=row].virtual-row")
    return [[c.strip() for c in rows.nth(i).locator("[role=gridcell]").all_inner_texts()] for i in range(rows.count())]


def test_dataset_tab_in_the_browser(studio_app, page, tmp_path):
    from playwright.sync_api import expect

    upload = tmp_path / "pirate_chat.jsonl"
    upload.write_text("\n".join(chat_lines()) + "\n", encoding="utf-8")
    started = time.monotonic()
    page.goto(studio_app.url)
    page.locator("#dataset-file input[type=file]").set_input_files(str(upload))

    shape = page.locator("#dataset-shape")
    shape.get_by_text("Chat conversations with role / content messages").wait_for()
    assert "5 rows: ✔ 3 usable · ✖ 2 with problems" in page.locator("#dataset-summary").inner_text()

    page.locator("#dataset-preview [role=gridcell]").first.wait_for()
    assert grid(page, "#dataset-preview") == [
        ["1", "", "What is the capital of France?", "Paris is the capital of France.", "2"],
        ["3", "Answer like a pirate.", "How are you?", "Arr, shipshape and ready to sail!", "3"],
        ["5", "", "Name a primary colour.", "Blue.", "2"]]

    rendering = page.locator("#dataset-rendering")
    rendering.get_by_text("Paris is the capital of France.").wait_for()
    assert "What is the capital of France?" in rendering.inner_text()
    learned = " ".join(rendering.locator(".token.highlighted").all_inner_texts())  # what the model learns to write
    assert "Paris is the capital of France." in learned and "What is the capital of France?" not in learned

    assert "2 rows cannot be used" in page.locator("#dataset-problems-note").inner_text()
    problems = grid(page, "#dataset-problems")
    assert [row for row, _ in problems] == ["2", "4"]
    assert problems[0][1].startswith("broken JSON") and problems[1][1].startswith("no assistant turn")

    page.locator("#dataset-name textarea").fill("pirate-chat")
    page.locator("#dataset-save").click()
    page.locator("#dataset-saved").get_by_text("Saved").wait_for()
    assert "2 · Train" in page.locator("#dataset-saved").inner_text()
    folder = studio_app.workspace.datasets / "pirate-chat"
    assert (folder / "records.jsonl").read_text(encoding="utf-8").count("\n") == 3
    assert json.loads((folder / "report.json").read_text(encoding="utf-8"))["owner"] == "local"

    page.screenshot(path=str(tmp_path / "dataset.png"), full_page=True)  # the README's: scripts/screenshots.py
    page.get_by_text("Saved datasets", exact=True).click()  # the list says who saved each dataset
    page.locator("#dataset-list [role=gridcell]").first.wait_for()
    assert grid(page, "#dataset-list") == [["pirate-chat", "local", "3", "messages"]]

    page.locator("#dataset-max-length input").fill("0")
    page.locator("#dataset-max-length input").press("Enter")
    page.locator("#dataset-notice").get_by_text("The max length must be a whole number").wait_for()
    page.locator("#dataset-max-length input").fill("30")
    page.locator("#dataset-max-length input").press("Enter")
    page.locator("#dataset-summary").get_by_text("3 examples are longer than the max length of 30 tokens").wait_for()
    expect(page.locator("#dataset-notice")).to_have_text("")  # the complaint about 0 is gone

    # A file whose columns are guessed wrong is fixed with the column boxes.
    faq = tmp_path / "faq.csv"
    faq.write_text("title,body\nHow do I reset my password?,Use 'Forgot password'.\n", encoding="utf-8")
    page.locator("#dataset-file button[aria-label='Clear']").click()
    page.locator("#dataset-file input[type=file]").set_input_files(str(faq))
    shape.get_by_text("Plain text").wait_for()
    page.get_by_label("Column “title”").click()
    page.get_by_role("option", name="instruction: the request").click()
    # Half way the examples cannot be found yet: the page says what is missing, and body is left out
    page.locator("#dataset-notice").get_by_text("The alpaca format needs a column for output").wait_for()
    expect(page.get_by_label("Column “body”")).to_have_value("ignore: leave this column out")
    page.get_by_label("Column “body”").click()
    page.get_by_role("option", name="output: the answer to learn").click()
    shape.get_by_text("Instruction / answer pairs (alpaca)").wait_for()
    expect(page.locator("#dataset-notice")).to_have_text("")
    assert grid(page, "#dataset-preview") == [["2", "", "How do I reset my password?", "Use 'Forgot password'."]]
    assert page.locator("#dataset-name textarea").input_value() == "faq"

    sheet = tmp_path / "answers.xlsx"
    sheet.write_bytes(b"PK\x03\x04")
    page.locator("#dataset-file button[aria-label='Clear']").click()
    page.locator("#dataset-file input[type=file]").set_input_files(str(sheet))
    page.locator("#dataset-notice").get_by_text("answers.xlsx is not a file type LoRA Studio reads").wait_for()
    expect(shape).to_be_hidden()
    assert time.monotonic() - started < 60
