"""The Gradio app, laid out like a desktop application: a sidebar with the app's name, the language picker and the
views (one per step of the journey, each built by its own module), the chosen view beside it scrolling on its own,
and a status bar under both. In the visitor's language, and in light or dark colours as their system is set."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from . import chat_tab, dataset_tab, export_tab, status_bar, train_tab
from .context import Studio
from .i18n import COOKIE, LANGUAGES, N_, Labels, language_for

TAGLINE = N_("Teach an open language model your own style or task.")
TABS = ((N_("1 · Dataset"), dataset_tab), (N_("2 · Train"), train_tab), (N_("3 · Chat"), chat_tab),
        (N_("4 · Export"), export_tab))
# The choice lives in a cookie, so every later request (and a reload) carries it; nothing is kept on the server.
REMEMBER = f"(lang) => {{ document.cookie = `{COOKIE}=${{lang}}; path=/; max-age=31536000; SameSite=Lax`; }}"


def appearance() -> dict:
    """How the page looks, for Blocks.launch: Gradio's theme, whose light and dark colours follow the system's
    setting, with text and buttons dark enough to read (WCAG AA contrast, which the browser tests check with
    axe-core), the window's layout (desktop.css), and names for what Gradio leaves unnamed (aria_repairs.html)."""
    red = gr.themes.colors.red
    theme = gr.themes.Default().set(
        body_text_color_subdued="*neutral_600",
        button_primary_background_fill="*primary_700", button_primary_background_fill_dark="*primary_700",
        button_primary_background_fill_hover="*primary_800", button_primary_background_fill_hover_dark="*primary_800",
        button_cancel_background_fill=red.c700, button_cancel_background_fill_hover=red.c800)
    return {"theme": theme, "css_paths": [Path(__file__).with_name("desktop.css")],
            "head_paths": [Path(__file__).with_name("aria_repairs.html")]}


def build_app(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title="LoRA Studio", fill_height=True, fill_width=True) as app:
        with gr.Row(elem_id="studio", scale=1):
            with gr.Column(elem_id="sidebar", scale=0, min_width=0):
                gr.Markdown("# LoRA Studio", elem_id="app-name")
                tagline = gr.Markdown(TAGLINE, elem_id="tagline")
                language = gr.Dropdown([(name, code) for code, name in LANGUAGES.items()], value="en",
                                       label="Language · 語言 · 语言", elem_id="language")
            labels = Labels(language)
            labels.add(tagline)
            refreshes = []
            with gr.Tabs(elem_id="views", overflow_behavior="wrap"):  # "menu" would fold the views into a menu
                for title, module in TABS:
                    with labels.add(gr.Tab(title)) as tab:
                        refresh = module.build(studio, labels)
                    if refresh:  # a tab whose pickers depend on what other tabs made refreshes them when opened
                        refreshes.append((tab, *refresh))
        status_bar.build(studio, labels, app)

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
