"""The Gradio app: one tab per step of the journey, each built by its own module, in the visitor's language."""
from __future__ import annotations

import gradio as gr

from . import chat_tab, dataset_tab, export_tab, train_tab
from .context import Studio
from .i18n import COOKIE, LANGUAGES, N_, Labels, language_for

INTRO = N_("**LoRA Studio** — teach an open language model your own style or task. "
           "1 · Dataset: upload examples. 2 · Train: pick a preset and start. "
           "3 · Chat: compare the result with the base model. 4 · Export: download the finished model.")
TABS = ((N_("1 · Dataset"), dataset_tab), (N_("2 · Train"), train_tab), (N_("3 · Chat"), chat_tab),
        (N_("4 · Export"), export_tab))
# The choice lives in a cookie, so every later request (and a reload) carries it; nothing is kept on the server.
REMEMBER = f"(lang) => {{ document.cookie = `{COOKIE}=${{lang}}; path=/; max-age=31536000; SameSite=Lax`; }}"


def build_app(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title="LoRA Studio") as app:
        with gr.Row(equal_height=True):
            intro = gr.Markdown(INTRO)
            language = gr.Dropdown([(name, code) for code, name in LANGUAGES.items()], value="en", scale=0,
                                   min_width=140, label="Language · 語言 · 语言", show_label=False,
                                   elem_id="language")
        labels = Labels(language)
        labels.add(intro)
        refreshes = []
        for title, module in TABS:
            with labels.add(gr.Tab(title)) as tab:
                refresh = module.build(studio, labels)
            if refresh:  # a tab whose pickers depend on what other tabs made refreshes them when opened
                refreshes.append((tab, *refresh))

        # The page is built in English. Whatever sets the picker (the browser's wish on load, or the person)
        # relabels through its change event, so the words always match the picker, even when both come at once.
        def wanted(request: gr.Request):
            lang = language_for(request)
            return gr.skip() if lang == "en" else lang  # "en" would undo a switch made while the page loaded

        app.load(wanted, None, language, show_progress="hidden")
        language.input(None, language, None, js=REMEMBER)
        switched = language.change(labels.relabel, language, labels.components, show_progress="hidden")
        for tab, fn, outputs in refreshes:
            tab.select(fn, None, outputs)
            app.load(fn, None, outputs)
            switched.then(fn, None, outputs)  # their choices' words too
    return app
