"""The Gradio app: one tab per step of the journey, each built by its own module."""
from __future__ import annotations

import gradio as gr

from . import chat_tab, dataset_tab, export_tab, train_tab
from .context import Studio

INTRO = ("**LoRA Studio** — teach an open language model your own style or task. "
         "1 · Dataset: upload examples. 2 · Train: pick a preset and start. "
         "3 · Chat: compare the result with the base model. 4 · Export: download the finished model.")


def build_app(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title="LoRA Studio") as app:
        gr.Markdown(INTRO)
        tabs = []
        for title, module in (("1 · Dataset", dataset_tab), ("2 · Train", train_tab), ("3 · Chat", chat_tab),
                              ("4 · Export", export_tab)):
            with gr.Tab(title) as tab:
                refresh = module.build(studio)
            tabs.append((tab, refresh))
        for tab, refresh in tabs:
            if refresh:  # a tab whose pickers depend on what other tabs made refreshes them when opened
                fn, outputs = refresh
                tab.select(fn, None, outputs)
                app.load(fn, None, outputs)
    return app
