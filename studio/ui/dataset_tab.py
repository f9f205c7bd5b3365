"""The Dataset tab: upload examples, see how the model will read them, fix the column mapping, save."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from ..data import (FIELDS, DatasetError, DatasetReport, inspect_file, list_datasets, pair_segments, render_segments,
                    save_dataset)
from ..data.readers import EXTENSIONS
from ..data.shapes import IGNORE
from ..models import EMBEDDED_LABEL, ModelNotFound, load_tokenizer, resolve_model
from ..workspace import Workspace, safe_name
from .context import Studio
from .i18n import N_, Labels, Translator, english, translator
from .train_tab import model_choices

SUPPORTED = tuple(EXTENSIONS)  # every extension the readers know
AUTO = "auto"
PREVIEW_ROWS = 20
# Each preview column's share of the table's width.
PREVIEW_SHARES = {"row": 1, "system": 3, "user": 4, "assistant": 4, "turns": 1, "text": 12, "prompt": 4, "chosen": 4,
                  "rejected": 4}
PROBLEMS_SHOWN = 500  # the page stays quick for a file where every row is broken
HISTOGRAM_BINS = 12
LEARNED = "learns to write"
# A pair's answers: the one the model learns to prefer, and the one it learns to make less likely.
PREFERRED, AVOIDED = "learns to prefer", "learns to avoid"

SHAPES = {
    "alpaca": N_("Instruction / answer pairs (alpaca)"),
    "completion": N_("Prompt / completion pairs"),
    "sharegpt": N_("Conversations with from / value turns (ShareGPT)"),
    "messages": N_("Chat conversations with role / content messages"),
    "text": N_("Plain text (the model learns to continue it)"),
    "pairs": N_("Preference pairs: a prompt with a chosen and a rejected answer (for the Preference (DPO) preset)"),
}
FIELD_WORDS = {
    "instruction": N_("instruction: the request"), "prompt": N_("prompt: the request"),
    "input": N_("input: extra context for the request"), "output": N_("output: the answer to learn"),
    "completion": N_("completion: the answer to learn"), "system": N_("system: standing instructions"),
    "conversations": N_("conversations: a whole chat (from / value)"),
    "messages": N_("messages: a whole chat (role / content)"), "text": N_("text: plain text to learn"),
    "chosen": N_("chosen: the better answer of a pair"), "rejected": N_("rejected: the worse answer of a pair"),
    IGNORE: N_("ignore: leave this column out"),
}
FIELD_CHOICES = [(FIELD_WORDS[f], f) for f in (*FIELDS, IGNORE)]
SHAPE_CHOICES = [(N_("Detect automatically"), AUTO)] + [(words, fmt) for fmt, words in SHAPES.items()]
LEGEND = N_("**How to read this:** the <mark style='background:#bbf7d0'>highlighted</mark> part is what the "
            "model learns to write. The plain part is what it only reads: the question, the system prompt (some "
            "models add a default one), and the markers the model's chat format puts around each turn.")
PAIR_LEGEND = N_("**How to read a pair:** the prompt comes once with each answer. The model learns to prefer the "
                 "<mark style='background:#bbf7d0'>chosen answer</mark> over the <mark style='background:#fecaca'>"
                 "rejected one</mark>; the plain part is what it only reads.")


# ---- logic: plain functions, testable without a browser ------------------------------------------

def check_upload(path: str | Path | None, t: Translator = english) -> Path:
    """The uploaded file, or DatasetError when it is missing or of a type we cannot read. (Gradio's
    max_file_size, set by app.py from the same limit, refuses an upload that is too big before it gets here.)"""
    if not path:
        raise DatasetError(t("Upload a file with your examples first."))
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED:
        raise DatasetError(t("{file} is not a file type LoRA Studio reads. Upload one of: {types} (from a "
                             "spreadsheet, save as CSV).", file=path.name, types=", ".join(SUPPORTED)))
    return path


def as_max_length(value, t: Translator = english) -> int:
    """The max-length box as a whole number of tokens, or DatasetError saying what to type."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or number != int(number):
        got = t("the box is empty") if value in (None, "") else t("got {value}", value=value)
        raise DatasetError(t("The max length must be a whole number of tokens above 0 ({got}). 1024 is a good "
                             "start.", got=got))
    return int(number)


class Tokenizers:
    """Tokenizers by model, loaded on first use (it takes seconds) and kept for everyone after that."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._loaded: dict[str, object] = {}  # by model folder
        self._chosen: dict[str, object] = {}  # by what was picked in the box
        self._lock = threading.Lock()

    def get(self, choice: str | None, t: Translator = english):
        """The tokenizer of a model choice; ModelNotFound or DatasetError with a message for the user."""
        choice = choice or EMBEDDED_LABEL
        tokenizer = self._chosen.get(choice)  # every slider move asks: no hub round trip, no waiting on a lock
        if tokenizer is not None:
            return tokenizer
        with self._lock:  # two people opening the tab at once convert and load a model once
            if choice in self._chosen:
                return self._chosen[choice]
            path = resolve_model(choice, self.workspace, progress=lambda _m: None)
            if path not in self._loaded:
                try:
                    self._loaded[path] = load_tokenizer(path)
                except Exception as e:  # noqa: BLE001 - a model folder can fail in many ways; all mean the same
                    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                    raise DatasetError(t("The tokenizer of {model} could not be loaded ({reason}). Pick another "
                                         "model, or a folder that holds tokenizer.json.",
                                         model=choice, reason=reason)) from None
            self._chosen[choice] = self._loaded[path]
            return self._chosen[choice]


@dataclass
class Checked:
    """What the tab shows about an upload: the report (None when the examples cannot be found yet), the
    file's columns and what each is used for, any message, and the tokenizer used for the rendering."""

    report: DatasetReport | None
    columns: list[str]
    mapping: dict[str, str]
    notice: str = ""
    tokenizer: object = None


def check(tokenizers: Tokenizers, path, model_choice: str | None, max_length, fmt: str = AUTO,
          overrides: dict[str, str] | None = None, t: Translator = english) -> Checked:
    """Check an upload with the chosen model and the columns mapped by hand. A model that cannot be had
    still lets the rows be checked (without token counts); a mapping that does not work still returns the
    file's columns, so it can be fixed."""
    overrides = overrides or {}
    try:
        path = check_upload(path, t)
        max_length = as_max_length(max_length, t)
    except DatasetError as e:
        return Checked(None, [], {}, f"❌ {t.message(e)}")
    notes, tokenizer = [], None
    try:
        tokenizer = tokenizers.get(model_choice, t)
    except (ModelNotFound, DatasetError) as e:
        notes.append(t("❌ {error} The rows are checked without it, but token counts need a model.",
                       error=t.message(e)))
    try:
        report = inspect_file(path, tokenizer, mapping=overrides or None, max_length=max_length,
                              fmt=None if fmt == AUTO else fmt)
    except DatasetError as e:
        columns = e.columns  # set when the file was read but its examples were not found
        if not columns:
            return Checked(None, [], {}, "\n\n".join([f"❌ {t.message(e)}"] + notes))
        notes.insert(0, t("❌ {error} Use the column boxes below to say which column is which.",
                          error=t.message(e)))
        return Checked(None, columns, {c: f for c, f in overrides.items() if c in columns}, "\n\n".join(notes),
                       tokenizer)
    return Checked(report, report.columns, report.mapping, "\n\n".join(notes), tokenizer)


def shape_text(report: DatasetReport, t: Translator = english) -> str:
    return t("**Detected shape:** {shape}", shape=t(SHAPES[report.format]))


def column_mapping(columns: list[str], mapping: dict[str, str]) -> list[tuple[str, str]]:
    """(column, field) for every column of the file; a column the examples do not use is 'ignore'."""
    return [(c, mapping.get(c, IGNORE)) for c in columns]


def summary_text(report: DatasetReport, t: Translator = english) -> str:
    lines = [t("**{rows} rows:** ✔ {valid} usable · ✖ {invalid} with problems", rows=report.rows,
               valid=report.valid, invalid=report.invalid)
             + (t(" (listed below; they are left out)") if report.invalid else "")]
    stats = report.tokens
    if stats and stats["count"]:
        lines.append(t("**Length in tokens:** shortest {min} · median {median:g} · 95% are at most {p95} · longest "
                       "{max}", min=stats["min"], median=stats["median"], p95=stats["p95"], max=stats["max"]))
        over, limit = stats["over_limit"], report.max_length
        if over > 1:
            lines.append(t("⚠️ {count} examples are longer than the max length of {limit} tokens and will be cut "
                           "at the end.", count=over, limit=limit))
        elif over:
            lines.append(t("⚠️ 1 example is longer than the max length of {limit} tokens and will be cut at the "
                           "end.", limit=limit))
        else:
            lines.append(t("All examples fit in the max length of {limit} tokens.", limit=limit))
        if stats["answers_cut_off"]:
            lines.append(t("⚠️ In {count} of them the whole answer lies past the cut, so they teach nothing: raise "
                           "the max length or shorten those examples.", count=stats["answers_cut_off"]))
    return "\n\n".join(lines)


def length_histogram(report: DatasetReport | None) -> dict:
    """The histogram's update: how many examples fall in each band of token lengths, bands labelled like
    '40-59', and the bands' order, since a plot orders text labels as text ('103-112' before '53-62'). The
    bands are whole tokens wide (studio.data.histogram's are not), so every label is exact."""
    lengths = report.lengths if report else []
    labels, counts = [], []
    if lengths:
        low, high = min(lengths), max(lengths)
        width = max(1, -(-(high - low + 1) // HISTOGRAM_BINS))  # at most HISTOGRAM_BINS bands
        counts = [0] * (-(-(high - low + 1) // width))
        for n in lengths:
            counts[(n - low) // width] += 1
        labels = [str(low + i * width) if width == 1 else f"{low + i * width}-{low + (i + 1) * width - 1}"
                  for i in range(len(counts))]
    return gr.update(value=pd.DataFrame({"tokens": labels, "examples": counts}), sort=labels)


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def preview_table(report: DatasetReport | None, limit: int = PREVIEW_ROWS, t: Translator = english) -> dict:
    """The preview's update: the first examples as the model gets them, one row per example with its row
    number in the file."""
    if report is None:
        return _preview([], [N_("row"), N_("system"), N_("user"), N_("assistant")], t)
    if report.format == "text":
        return _preview([{"row": n, "text": _short(r["text"], 300)}
                         for n, r in zip(report.row_numbers[:limit], report.records[:limit])],
                        [N_("row"), N_("text")], t)
    if report.format == "pairs":
        return _preview([{"row": n, "prompt": _short(_last_request(r["prompt"])), "chosen": _short(r["chosen"]),
                          "rejected": _short(r["rejected"])}
                         for n, r in zip(report.row_numbers[:limit], report.records[:limit])],
                        [N_("row"), N_("prompt"), N_("chosen"), N_("rejected")], t)
    chat = report.format in ("sharegpt", "messages")  # only conversations have more than one exchange
    columns = [N_("row"), N_("system"), N_("user"), N_("assistant")] + ([N_("turns")] if chat else [])
    rows = []
    for number, record in zip(report.row_numbers[:limit], report.records[:limit]):
        first = {}
        for m in record["messages"]:
            first.setdefault(m["role"], m["content"])
        rows.append({"row": number, "system": _short(first.get("system", "")), "user": _short(first.get("user", "")),
                     "assistant": _short(first.get("assistant", "")), "turns": len(record["messages"])})
    return _preview(rows, columns, t)


def _last_request(prompt: list[dict]) -> str:
    """What a pair's answers reply to: the prompt's last user turn (earlier turns are context)."""
    return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")


def _preview(rows: list[dict], columns: list[str], t: Translator) -> dict:
    """The rows under translated headers, each column given its share of the width: left to the browser, a
    column of short text beside long wrapped ones is squeezed to a letter a line."""
    total = sum(PREVIEW_SHARES[c] for c in columns)
    return gr.update(value=pd.DataFrame(rows, columns=columns).rename(columns=t),
                     column_widths=[f"{100 * PREVIEW_SHARES[c] // total}%" for c in columns])


def problems_table(report: DatasetReport | None, t: Translator = english) -> pd.DataFrame:
    problems = report.problems[:PROBLEMS_SHOWN] if report else []
    return pd.DataFrame([{"row": p.row, "problem": t.message(p.reason)} for p in problems],
                        columns=[N_("row"), N_("problem")]).rename(columns=t)


def problems_text(report: DatasetReport, t: Translator = english) -> str:
    if not report.problems:
        return t("✔ **No problems found:** every row can be used.")
    more = report.invalid - PROBLEMS_SHOWN
    headline = (t("✖ **{count} rows cannot be used** and will be left out.", count=report.invalid)
                if report.invalid > 1 else t("✖ **1 row cannot be used** and will be left out."))
    return (headline + t(" Fix them in your file and upload it again, or save without them.")
            + (t(" The first {shown} are listed here ({more} more not shown).", shown=PROBLEMS_SHOWN, more=more)
               if more > 0 else ""))


def example_view(tokenizer, report: DatasetReport | None, number,
                 t: Translator = english) -> tuple[list[tuple[str, str | None]], str]:
    """The chosen example (counted from 1 among the usable ones) as the model sees it, trained parts
    labelled, and a caption that says which row of the file it is."""
    if report is None or not report.records:
        return [], t("No usable example to show.")
    if tokenizer is None:
        return [], t("Pick a model that loads to see the examples as the model will see them.")
    index = min(max(int(number or 1), 1), report.valid) - 1
    record = report.records[index]
    try:
        if "chosen" in record:
            chosen, rejected = pair_segments(tokenizer, record)
            shown = ([(text, PREFERRED if trained else None) for text, trained in chosen] + [("\n\n", None)]
                     + [(text, AVOIDED if trained else None) for text, trained in rejected])
        else:
            shown = [(text, LEARNED if trained else None) for text, trained in render_segments(tokenizer, record)]
    except DatasetError as e:
        return [], t("❌ This example cannot be shown: {error}.", error=t.message(e))
    return shown, t("Example {number} of {count} — row {row} of your file", number=index + 1, count=report.valid,
                    row=report.row_numbers[index])


def save(workspace: Workspace, path: str | Path | None, report: DatasetReport | None, name: str,
         overwrite: bool, owner: str, t: Translator = english, columns: list[str] | None = None,
         admin: bool = False) -> str:
    """Save the checked dataset into the workspace and say where it went, or what to do instead. columns
    are the upload's columns when its examples could not be found (the mapping boxes show them)."""
    if path and report is None and columns:
        return t("❌ The examples in this file cannot be found yet. Set the column boxes above until the examples "
                 "appear, then save.")
    if report is None or not path:
        return t("❌ Upload a file and check that its examples look right before saving.")
    if not (name or "").strip():
        return t("❌ Type a name for the dataset first.")
    try:
        folder = save_dataset(workspace, name, path, report, overwrite=bool(overwrite), owner=owner, admin=admin)
    except DatasetError as e:
        return f"❌ {t.message(e)}"
    where = folder.relative_to(workspace.root.parent)  # "workspace/datasets/<name>": short, and says which
    return t("✔ Saved **{name}** ({count} examples) in `{where}`. You can now pick it in the **2 · Train** tab.",
             name=folder.name, count=report.valid, where=where)


def datasets_table(workspace: Workspace, t: Translator = english) -> pd.DataFrame:
    """Every saved dataset and who saved it (datasets saved before owners were recorded show none)."""
    rows = [{"dataset": d["name"], "owner": d["owner"], "examples": d["valid"], "shape": d["format"]}
            for d in list_datasets(workspace)]
    return pd.DataFrame(rows, columns=[N_("dataset"), N_("owner"), N_("examples"), N_("shape")]).rename(columns=t)


def suggest_name(path: str | Path) -> str:
    return safe_name(Path(path).stem, "my-dataset")


# ---- wiring -------------------------------------------------------------------------------------

def build(studio: Studio, labels: Labels):
    tokenizers = Tokenizers(studio.workspace)
    add = labels.add

    add(gr.Markdown("Upload the examples you want the model to learn from. LoRA Studio works out what is in the "
                    "file, shows every example exactly as the model will see it, and lists the rows it cannot "
                    "use."))
    with add(gr.Accordion("Saved datasets", open=False)):
        datasets = gr.Dataframe(datasets_table(studio.workspace), show_label=False, interactive=False, wrap=True,
                                max_height=260, elem_id="dataset-list")
    with gr.Row():
        upload = add(gr.File(label="Your examples: a CSV, TSV, JSON, JSONL, Parquet or TXT file", type="filepath",
                             height=140, scale=3, elem_id="dataset-file"))
        with gr.Column(scale=2):
            model = add(gr.Dropdown(model_choices(studio), value=EMBEDDED_LABEL, allow_custom_value=True,
                                    label="Preview with the chat format of this model",
                                    info="The embedded model, a model folder on this machine, or a hub id (org/name)",
                                    elem_id="dataset-model"))
            max_length = add(gr.Number(1024, precision=0, label="Max length (tokens)",
                                       info="Longer examples are cut at the end when training",
                                       elem_id="dataset-max-length"))
    notice = gr.Markdown(elem_id="dataset-notice")

    report_state = gr.State(None)  # the latest DatasetReport of this visitor's upload
    overrides = gr.State({})  # the columns this visitor mapped by hand
    editor = gr.State(None)  # {"columns": [...], "mapping": {...}, "notice": ...} for the mapping boxes

    with gr.Column(visible=False) as results:
        add(gr.Markdown("### What is in your file"))
        with gr.Row(equal_height=True):
            shape = gr.Markdown(elem_id="dataset-shape")
            shape_pick = add(gr.Dropdown(SHAPE_CHOICES, value=AUTO, label="Shape (change it if the guess is wrong)",
                                         elem_id="dataset-format"), choices=True)
        with add(gr.Accordion("Which column is which (change a box if the guess is wrong)", open=True)):
            @gr.render(inputs=[editor, labels.language])  # built again in a new language
            def mapping_boxes(state, lang):
                if not state or not state["columns"]:
                    return
                t = Translator(lang)
                with gr.Row(elem_id="dataset-mapping"):
                    for column, field in column_mapping(state["columns"], state["mapping"]):
                        box = gr.Dropdown([(t(words), f) for words, f in FIELD_CHOICES], value=field,
                                          label=t("Column “{column}”", column=column), min_width=200,
                                          interactive=True, elem_classes=["dataset-column"])
                        box.input(remap(column), [box] + settings, shown + [overrides])
        summary = gr.Markdown(elem_id="dataset-summary")
        with gr.Row():
            histogram = add(gr.BarPlot(x="tokens", y="examples", title="How long the examples are (tokens)",
                                       x_title="tokens", y_title="examples", height=260, scale=2,
                                       elem_id="dataset-histogram"))
            with gr.Column(scale=3):
                problems_note = gr.Markdown(elem_id="dataset-problems-note")
                problems = add(gr.Dataframe(headers=["row", "problem"], label="Rows that cannot be used",
                                            interactive=False, wrap=True, max_height=260,
                                            column_widths=["12%", "88%"], elem_id="dataset-problems"))
        preview = add(gr.Dataframe(label="The first examples (shortened)", interactive=False, wrap=True,
                                   max_height=360, elem_id="dataset-preview"))
        add(gr.Markdown("### Each example as the model will see it"))
        with gr.Row():
            example = add(gr.Slider(1, 2, value=1, step=1, label="Example", scale=1, elem_id="dataset-example"))
            caption = gr.Markdown(elem_id="dataset-example-caption")
        legend = add(gr.Markdown(LEGEND))
        pair_legend = add(gr.Markdown(PAIR_LEGEND, visible=False))
        rendering = gr.HighlightedText(color_map={LEARNED: "#bbf7d0", PREFERRED: "#bbf7d0", AVOIDED: "#fecaca"},
                                       show_legend=False, show_inline_category=False, show_label=False,
                                       combine_adjacent=True, elem_id="dataset-rendering")
        add(gr.Markdown("### Save it for training"))
        with gr.Column(elem_classes="action-bar"):  # in sight at the bottom of the view while it scrolls (desktop.css)
            with gr.Row(equal_height=True):
                name = add(gr.Textbox(label="Dataset name", scale=3, elem_id="dataset-name"))
                overwrite = add(gr.Checkbox(label="Replace a saved dataset with the same name", scale=1,
                                            elem_id="dataset-overwrite"))
                save_button = add(gr.Button("Save dataset", variant="primary", scale=1, elem_id="dataset-save"))
            saved = gr.Markdown(elem_id="dataset-saved")

    shown = [notice, results, report_state, editor, shape, summary, histogram, problems_note, problems,
             example, caption, rendering, preview, legend, pair_legend]

    def inspect(path, model_choice, max_len, fmt, mapped, t: Translator) -> list:
        """Check the upload and fill in every view; values in the order of `shown`."""
        checked = check(tokenizers, path, model_choice, max_len, fmt, mapped, t)
        report = checked.report
        editor_state = {"columns": checked.columns, "mapping": checked.mapping, "notice": checked.notice}
        if report is None:
            return [checked.notice, gr.update(visible=bool(checked.columns)), None, editor_state,
                    t("**Detected shape:** not recognised yet"), "", length_histogram(None), "",
                    problems_table(None, t), gr.update(visible=False), "", [], preview_table(None, t=t),
                    gr.skip(), gr.skip()]
        segments, example_caption = example_view(checked.tokenizer, report, 1, t)
        return [checked.notice, gr.update(visible=True), report, editor_state, shape_text(report, t),
                summary_text(report, t), length_histogram(report), problems_text(report, t),
                problems_table(report, t), gr.update(maximum=max(report.valid, 2), value=1, visible=report.valid > 1),
                example_caption, segments, preview_table(report, t=t),
                gr.update(visible=report.format != "pairs"), gr.update(visible=report.format == "pairs")]

    def on_upload(path, model_choice, max_len, request: gr.Request):
        # A new file starts from the automatic guess: forget the shape and columns picked for the last one.
        name_value = suggest_name(path) if path else ""
        return inspect(path, model_choice, max_len, AUTO, {}, translator(request)) + [AUTO, {}, name_value, ""]

    upload.upload(on_upload, [upload, model, max_length], shown + [shape_pick, overrides, name, saved])
    upload.clear(lambda: (gr.update(visible=False), None, None, ""), None, [results, report_state, editor, notice])

    def on_settings(path, model_choice, max_len, fmt, mapped, request: gr.Request):
        return inspect(path, model_choice, max_len, fmt, mapped, translator(request)) if path else \
            [gr.skip()] * len(shown)

    def on_max_length(path, model_choice, max_len, fmt, mapped, report, editor_state, request: gr.Request):
        t = translator(request)
        try:
            value = as_max_length(max_len, t)
        except DatasetError as e:  # say so, and keep showing the file as it was checked
            return [f"❌ {t.message(e)}"] + [gr.skip()] * (len(shown) - 1)
        if report is None:
            return on_settings(path, model_choice, value, fmt, mapped, request)
        # Token lengths do not depend on the max length: count the checked report against the new one
        # instead of reading and tokenizing the file again.
        report = report.with_max_length(value)
        updates = dict.fromkeys(shown, gr.skip())
        updates.update({notice: (editor_state or {}).get("notice", ""), report_state: report,
                        summary: summary_text(report, t)})
        return [updates[component] for component in shown]

    settings = [upload, model, max_length, shape_pick, overrides]
    gr.on([model.input, shape_pick.input], on_settings, settings, shown)
    gr.on([max_length.submit, max_length.blur], on_max_length, settings + [report_state, editor], shown)

    def remap(column: str):
        def handler(field, path, model_choice, max_len, fmt, mapped, request: gr.Request):
            mapped = {**(mapped or {}), column: field}
            return inspect(path, model_choice, max_len, fmt, mapped, translator(request)) + [mapped]
        return handler

    def on_example(number, model_choice, report, request: gr.Request):
        t = translator(request)
        try:
            tokenizer = tokenizers.get(model_choice, t)
        except (ModelNotFound, DatasetError):
            tokenizer = None  # the notice already says why the model is missing
        return example_view(tokenizer, report, number, t)

    example.input(on_example, [example, model, report_state], [rendering, caption], trigger_mode="always_last")

    def on_save(path, report, dataset_name, replace, editor_state, request: gr.Request):
        t = translator(request)
        message = save(studio.workspace, path, report, dataset_name, replace, studio.user(request), t,
                       columns=(editor_state or {}).get("columns"), admin=studio.is_admin(request))
        return message, datasets_table(studio.workspace, t)

    save_button.click(on_save, [upload, report_state, name, overwrite, editor], [saved, datasets])

    def on_focus(request: gr.Request):
        """New models and datasets appear when the tab is opened: other tabs and other people add them."""
        return gr.update(choices=model_choices(studio)), datasets_table(studio.workspace, translator(request))

    return on_focus, [model, datasets]
