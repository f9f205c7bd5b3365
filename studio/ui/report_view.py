"""Report cards as the page shows them: the verdict and its figures, the answers side by side, and several runs'
cards next to each other with the settings in which the runs differ."""
from __future__ import annotations

import html

import pandas as pd

from ..config import ConfigError
from ..evaluation import read_card
from ..messages import stored
from ..runs import Run
from .i18n import N_, Translator, english

VERDICT_ICONS = {"learned": "✅", "learned_training": "☑️", "memorised": "⚠️", "barely_changed": "➖", "worse": "❌"}
SOURCES = {"held_out": N_("{n} held-out examples (never trained on)"),
           "training": N_("{n} TRAINING examples: none were held out, so these show what it memorised as much as what "
                          "it learned"),
           "other": N_("{n} examples of {data}")}
PAIR_SOURCES = {"held_out": N_("{n} held-out pairs (never trained on)"),
                "training": N_("{n} TRAINING pairs: none were held out, so these show what it memorised as much as "
                               "what it learned"),
                "other": N_("{n} pairs of {data}")}
EXAMPLE_COLUMNS = [N_("prompt"), N_("expected"), N_("base model"), N_("adapter"), N_("closeness: base → adapter"),
                   N_("likelihood ×")]
PAIR_COLUMNS = [N_("prompt"), N_("chosen"), N_("rejected"), N_("base model"), N_("adapter"),
                N_("margin: base → adapter")]


def card_summary(card: dict | None, evaluation: dict, t: Translator = english) -> str:
    """The card's verdict and figures in a few lines of Markdown; what the queue is doing about a new one."""
    waiting = {"queued": t("⏳ A report card is queued; it is made when a device is free."),
               "running": t("⏳ Making the report card: both models answer the examples…"),
               "failed": "❌ " + t.message(stored(evaluation))}.get(evaluation.get("state"), "")
    if card is None:
        return waiting or t("No report card yet: it is made when a run finishes, or press Evaluate.")
    o = card["overall"]
    pairs = card.get("kind") == "pairs"
    source = t((PAIR_SOURCES if pairs else SOURCES)[card["source"]], n=o["examples"],
               data=html.escape(str(card.get("data", ""))))
    lines = [f"### {VERDICT_ICONS.get(card['verdict'], '')} {t.message(stored(card, 'verdict_text'))}",
             t("**Next:** {step}", step=t.message(stored(card, "next_step")))]
    if pairs:
        lines.append(t("On {source}: the adapter prefers the chosen answer in **{adapter:.0%}** of them, the base "
                       "model in {base:.0%}; the margin (log-likelihood per token, chosen minus rejected) goes from "
                       "{base_margin:.2f} to **{adapter_margin:.2f}**.", source=source,
                       adapter=o["adapter_prefers_chosen"], base=o["base_prefers_chosen"],
                       base_margin=o["base_margin"], adapter_margin=o["adapter_margin"]))
    else:
        lines.append(t("On {source}: with the adapter the expected answers are **{gain:.2f}×** as likely per token, "
                       "and the answers' closeness to them (chrF, 0–100) goes from {base:.0f} to **{adapter:.0f}**.",
                       source=source, gain=o["likelihood_gain"], base=o["base_chrf"], adapter=o["adapter_chrf"]))
    return "\n\n".join(lines + ([waiting] if waiting else []))


def card_examples(card: dict | None, t: Translator = english) -> pd.DataFrame:
    examples = (card or {}).get("examples", [])
    if (card or {}).get("kind") == "pairs":
        rows = [[_prompt(e["prompt"]), e["chosen"], e["rejected"], e["base"], e["adapter"],
                 f"{e['base_margin']:.2f} → {e['adapter_margin']:.2f}"] for e in examples]
        return pd.DataFrame(rows, columns=[t(c) for c in PAIR_COLUMNS])
    rows = [[_prompt(e["prompt"]), e["expected"], e["base"], e["adapter"],
             f"{e['base_chrf']:.0f} → {e['adapter_chrf']:.0f}", f"{e['likelihood_gain']:.2f}"] for e in examples]
    return pd.DataFrame(rows, columns=[t(c) for c in EXAMPLE_COLUMNS])


def _prompt(prompt) -> str:
    """A conversation's last user turn (earlier turns are context), or a raw text's start."""
    if isinstance(prompt, str):
        return prompt
    return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")


def compare_cards(runs: list[Run], t: Translator = english) -> pd.DataFrame:
    """One row per run: its report card's verdict and figures, then only the settings in which the runs differ."""
    configs = {}
    for run in runs:
        try:
            configs[run.id] = run.config.to_dict()
        except (ConfigError, OSError):
            configs[run.id] = {}
    differing = [f for f in dict.fromkeys(k for c in configs.values() for k in c)
                 if len({repr(c.get(f)) for c in configs.values()}) > 1]
    cards = {run.id: read_card(run) or {} for run in runs}
    pairs = any(card.get("kind") == "pairs" for card in cards.values())
    figures = [t("likelihood ×"), t("closeness: base → adapter")] + ([t("prefers chosen: base → adapter")] if pairs
                                                                     else [])
    rows = []
    for run in runs:
        card = cards[run.id]
        o = card.get("overall", {})
        row = {t("run"): run.id, t("verdict"): t.message(stored(card, "verdict_text")) if card else t("no card yet"),
               **dict.fromkeys(figures, "")}
        if card.get("kind") == "pairs":
            row[figures[-1]] = f"{o['base_prefers_chosen']:.0%} → {o['adapter_prefers_chosen']:.0%}"
        elif o:
            row.update({figures[0]: o["likelihood_gain"],
                        figures[1]: f"{o['base_chrf']:.0f} → {o['adapter_chrf']:.0f}"})
        row.update({f: _setting(configs[run.id].get(f)) for f in differing})
        rows.append(row)
    return pd.DataFrame(rows, columns=[t("run"), t("verdict"), *figures, *differing])


def _setting(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else "" if value is None else str(value)
