"""The page in three languages: complete catalogs, which language a request gets, relabelling, and the
switch in a real browser."""
import ast
import json
import re
import string
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from studio.ui.i18n import CATALOGS, COOKIE, Labels, Translator, language_for, translate

UI = Path(__file__).resolve().parent.parent / "studio" / "ui"
ENGINE_TEXTS = [UI.parent / "training" / "advisor.py", UI.parent / "config.py"]  # translated where the catalog can
LABEL_PROPS = {"label", "info", "placeholder", "title", "x_title", "y_title", "color_title"}
WORDS_FIRST = {"Markdown", "Button", "Accordion", "Tab"}  # components whose first argument is their words


def _text(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _name(func) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _words(call: ast.Call) -> list[ast.expr]:
    """The arguments of a call that are English words for the catalog: what t() or N_() is given, and what a
    component given to the label registry, add(gr.Button("Save dataset")), is built with."""
    if _name(call.func) in ("t", "N_"):
        return call.args[:1]
    if _name(call.func) != "add" or not call.args or not isinstance(call.args[0], ast.Call):
        return []
    built = call.args[0]
    words_first = _name(built.func) in WORDS_FIRST
    return ([k.value for k in built.keywords if k.arg in LABEL_PROPS or (words_first and k.arg == "value")]
            + (built.args[:1] if words_first else []))


def ui_strings() -> dict[str, list[str]]:
    """Every English text in studio/ui meant for the catalog, with where it is."""
    found: dict[str, list[str]] = {}
    for path in sorted(UI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for arg in _words(node) if isinstance(node, ast.Call) else []:
                where = f"{path.name}:{node.lineno}"
                assert not isinstance(arg, ast.JoinedStr), f"{where}: an f-string can never be found in a catalog"
                if _text(arg):
                    found.setdefault(_text(arg), []).append(where)
    return found


def message_strings() -> dict[str, list[str]]:
    """Every template the engine builds a Message from (studio/messages.py), with where it is."""
    found: dict[str, list[str]] = {}
    for path in sorted(set(UI.parent.rglob("*.py")) - {UI.parent / "messages.py"}):  # which rebuilds them
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _name(node.func) == "Message" and node.args:
                where = f"{path.relative_to(UI.parent)}:{node.lineno}"
                assert _text(node.args[0]), f"{where}: a Message needs a literal template to be found in a catalog"
                found.setdefault(_text(node.args[0]), []).append(where)
    return found


def preset_strings() -> set[str]:
    from studio.config import load_presets

    return {text for p in load_presets().values() for text in (p.title, p.description.strip())}


def engine_strings() -> set[str]:
    return {node.value for path in ENGINE_TEXTS for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if _text(node)}


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def bold_renders(text: str) -> bool:
    """Markdown (CommonMark) closes ** after punctuation only before a space or more punctuation, which
    Chinese text easily breaks: **放得下嗎？**Needs shows its asterisks."""
    def punct(c):
        return c.isspace() or unicodedata.category(c)[0] in "PS"

    for m in re.finditer(r"\*\*(.+?)\*\*", text):
        before, after = text[m.start() - 1:m.start()] or " ", text[m.end():m.end() + 1] or " "
        first, last = m.group(1)[0], m.group(1)[-1]
        if first.isspace() or (punct(first) and not punct(before)):
            return False
        if last.isspace() or (punct(last) and not punct(after)):
            return False
    return True


@pytest.mark.parametrize("lang", sorted(CATALOGS))
def test_every_ui_text_is_translated_with_the_same_placeholders(lang):
    catalog = CATALOGS[lang]
    wanted = ui_strings()
    wanted.update({text: ["presets/*.yaml"] for text in preset_strings()})
    assert len(wanted) > 150  # the extraction itself works
    engine = message_strings()
    assert len(engine) > 50
    wanted.update(engine)
    missing = {text: where for text, where in wanted.items() if not (catalog.get(text) or "").strip()}
    assert not missing, f"{lang} lacks translations for: {json.dumps(missing, ensure_ascii=False, indent=1)}"
    for english, translated in catalog.items():
        assert fields(translated) == fields(english), f"{lang}: placeholders differ in {english!r} → {translated!r}"
        assert bold_renders(translated), f"{lang}: the bold in {translated!r} would show as asterisks"
    stale = set(catalog) - set(wanted) - engine_strings()
    assert not stale, f"{lang} has keys nothing uses: {sorted(stale)}"


def test_translate_falls_back_to_english_then_formats():
    assert translate("zh-Hant", "Run {id}", id="r1") == "訓練 r1"
    assert translate("zh-Hans", "Run {id}", id="r1") == "训练 r1"
    assert translate("en", "Run {id}", id="r1") == "Run r1"
    assert translate("zh-Hans", "No such text {x}", x=1) == "No such text 1"
    assert translate("fr", "Stop") == "Stop"
    assert Translator("zh-Hant")("Stop") == "停止" and Translator()("Stop") == "Stop"


def test_engine_messages_show_translated_and_fall_back_to_english(tmp_path):
    from studio.config import ConfigError, TrainConfig
    from studio.data import DatasetError
    from studio.data.readers import read_table
    from studio.messages import Message
    from studio.runs import Run

    hant, hans = Translator("zh-Hant"), Translator("zh-Hans")
    reason = Message.joined("; ", [Message("turn {i} has no role", i=2), Message("'{column}' is empty", column="q")])
    assert hant.message(reason) == "第 2 則發言沒有 role; 「q」是空的"
    assert hans.message(reason) == "第 2 条发言没有 role; “q”是空的"
    assert Translator().message(reason) == reason == "turn 2 has no role; 'q' is empty"
    assert hant.message(Message("Not in any catalog {n}", n=1)) == "Not in any catalog 1"
    assert hant.message("plain text") == "plain text" and hant.message(None) == ""
    with pytest.raises(ConfigError) as bad_config:
        TrainConfig(dataset="", lora_r=0).validate()
    assert hant.message(bad_config.value) == "lora_r 必須介於 1 和 1024 之間（目前是 0）; dataset：請選擇要訓練的資料集"
    with pytest.raises(DatasetError) as no_file:
        read_table("/no/such/file.csv")
    assert hans.message(no_file.value) == "/no/such/file.csv：找不到这个文件。请检查路径。"

    run = Run(tmp_path)  # status.json keeps a Message's template, and forgets it when a plain text replaces it
    run.set_status(state="completed", message=Message("Finished."))
    assert run.status()["message"] == "Finished." and hant.message(run.status()) == "完成。"
    run.set_status(message="by hand")
    assert hant.message(run.status()) == "by hand" and set(run.status()) == {"state", "message"}


def test_a_dataset_problem_reason_shows_in_chinese(tmp_path):
    from studio.data.report import inspect_file
    from studio.ui.dataset_tab import problems_table

    data = tmp_path / "chat.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                    '{"messages": [{"role": "user", "content": "hi"}, {"content": "yo"}]}\n', encoding="utf-8")
    report = inspect_file(data)
    assert report.problems[0].reason == "turn 2 has no role"
    assert problems_table(report, Translator("zh-Hant")).iloc[0].tolist() == [2, "第 2 則發言沒有 role"]


def request(cookie: str | None = None, accept: str | None = None):
    """What a handler gets from Gradio: cookies and headers as dict-like objects."""
    return SimpleNamespace(cookies={COOKIE: cookie} if cookie else {},
                           headers={"accept-language": accept} if accept else {})


@pytest.mark.parametrize("accept, lang", [
    ("zh-TW,zh;q=0.9,en-US;q=0.8,en;q=0.7", "zh-Hant"), ("zh-HK", "zh-Hant"), ("zh-MO", "zh-Hant"),
    ("zh-Hant-TW", "zh-Hant"), ("zh-CN,zh;q=0.9", "zh-Hans"), ("zh-SG", "zh-Hans"), ("zh", "zh-Hans"),
    ("zh-Hans", "zh-Hans"), ("en-US,en;q=0.9", "en"), ("fr-FR,fr;q=0.9", "en"), ("", "en"), (None, "en"),
    ("fr-FR, zh-TW;q=0.8, en;q=0.5", "zh-Hant"),  # the first language we have, by the browser's preference
    ("en;q=0.5, zh-CN;q=0.9", "zh-Hans"), ("zh-CN;q=oops, en", "en"),
])
def test_language_from_accept_language(accept, lang):
    assert language_for(request(accept=accept)) == lang


def test_the_cookie_wins_unless_it_is_not_a_language():
    assert language_for(request("zh-Hans", "zh-TW")) == "zh-Hans"
    assert language_for(request("en", "zh-TW")) == "en"
    assert language_for(request("klingon", "zh-TW")) == "zh-Hant"
    assert language_for(None) == "en"


def test_relabel_translates_each_registered_component_in_order():
    with gr.Blocks():
        labels = Labels(gr.Dropdown(["en"]))
        button = labels.add(gr.Button("Stop"))
        box = labels.add(gr.Textbox(label="Dataset name", placeholder="Type a message and press Enter"))
        shape = labels.add(gr.Dropdown([("Detect automatically", "auto")], value="auto", label="Preset"),
                           choices=True)
        labels.add(gr.Dropdown(["4bit"], value="4bit", label="Left"))  # a value is never taken for words
    assert labels.components == [button, box, shape, labels.components[3]]
    hant = labels.relabel("zh-Hant")
    assert hant[0] == gr.update(value="停止")
    assert hant[1] == gr.update(label="資料集名稱", placeholder="輸入訊息後按 Enter")
    assert hant[2] == gr.update(label="預設組合", choices=[("自動偵測", "auto")])
    assert hant[3] == gr.update(label="左邊")
    assert labels.relabel("zh-Hans")[0] == gr.update(value="停止")
    assert labels.relabel("en")[1] == gr.update(label="Dataset name", placeholder="Type a message and press Enter")


# ---- the switch in a real browser ----------------------------------------------------------------

def choose_language(page, name: str) -> None:
    page.locator("#language input").click()
    page.get_by_role("option", name=name).click()


def test_the_language_switch_in_the_browser(studio_app, page):
    """Chromium asks for en-US: the page starts in English, then follows the switch, also after a reload,
    and a message made in Python comes in the chosen language."""
    from playwright.sync_api import expect

    page.goto(studio_app.url)
    page.get_by_role("tab", name="1 · Dataset").wait_for()
    choose_language(page, "繁體中文")
    page.get_by_role("tab", name="1 · 資料集").wait_for()
    page.get_by_role("tab", name="2 · 訓練").click()
    expect(page.locator("#start-training")).to_have_text("開始訓練")
    expect(page.get_by_label("預設組合")).to_have_value("聊天機器人")  # a picker whose choices are words too

    page.reload()
    page.get_by_role("tab", name="4 · 匯出").click()
    expect(page.locator("#export-merge")).to_have_text("合併並檢查")
    expect(page.locator("#language input")).to_have_value("繁體中文")
    page.locator("#export-merge").click()  # no run chosen: the handler says so
    expect(page.locator("#export-result")).to_have_text("❌ 請先選擇一個已完成的訓練任務（可在「訓練」分頁中"
                                                        "訓練）。")

    choose_language(page, "简体中文")
    page.get_by_role("tab", name="4 · 导出").wait_for()
    expect(page.locator("#export-merge")).to_have_text("合并并检查")
    page.locator("#export-adapter").click()
    expect(page.locator("#export-result")).to_have_text("❌ 请先选择一个已完成的训练任务。")


def test_a_run_state_inside_a_sentence_is_translated_too(workspace):
    from studio.config import TrainConfig
    from studio.jobs import JobQueue
    from studio.runs import create_run

    queue = JobQueue(workspace, devices=[""], poll=0.05)
    run = create_run(workspace, TrainConfig(dataset="d"), state="running")  # as the command line starts one
    try:
        with pytest.raises(ValueError) as refused:
            queue.delete(run.id, user="local", admin=True)
    finally:
        queue.close()
    assert "训练中" in Translator("zh-Hans").message(refused.value.args[0])
