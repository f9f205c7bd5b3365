"""The report card of preference pairs: does the adapter prefer the chosen answer more than the base model does?

For each pair, base and adapter score both answers after the prompt. A model's margin on a pair is the mean
log-likelihood per token of the chosen answer minus that of the rejected one: above 0, the model finds the chosen
answer the likelier. Per token, so that an answer is not less likely for being longer. Both models also answer the
prompts, side by side, to read what the preference does to the answers.
"""
from __future__ import annotations

import statistics
import time

from ..messages import Message, fields
from .report_card import SCHEMA, Example, answer_nll, generate, ready_to_compare

PAIRS_SCORED = 32  # pairs whose answers are scored: a forward pass each, cheap next to generating answers
ANSWERED = 6  # prompts both models answer
# The verdict's thresholds, on the mean margin's change (adapter minus base, log-likelihood per token): 0.1 is the
# chosen answer made e^0.1 = 1.1x as likely per token relative to the rejected one (three updates of
# tests/test_preference.py's run move it by 0.8). On training pairs a change of 1.0 (2.7x) and more, with too little
# on the held-out ones, is memorising.
MARGIN_LEARNED = 0.1
MARGIN_MEMORISED = 1.0

VERDICTS = {
    "learned": (Message("It learned: on pairs it never saw, the adapter prefers the chosen answer more than the base "
                        "model does."),
                Message("Chat with it in the Chat tab, then export it.")),
    "learned_training": (Message("It learned to prefer the chosen answers of its training pairs. None were held out, "
                                 "so whether it does so on new prompts is not known."),
                         Message("Keep a share for validation (Advanced settings) to know, or try it in the Chat "
                                 "tab.")),
    "memorised": (Message("It prefers the chosen answers of its training pairs but not of the held-out ones: it "
                          "memorised them instead of learning what makes an answer better."),
                  Message("Use fewer passes (epochs) or more pairs; a higher beta keeps it closer to where it "
                          "started.")),
    "barely_changed": (Message("It barely changed: the adapter prefers the chosen answers no more than the base model "
                               "does."),
                       Message("Train longer (more passes) or raise the learning rate, and check in the Dataset tab "
                               "that the chosen answers are the better ones.")),
    "worse": (Message("It prefers the rejected answers more than the base model did."),
              Message("Check in the Dataset tab that the chosen and rejected columns are not swapped, then lower the "
                      "learning rate.")),
}


def make_pair_card(model, tokenizer, source: str, pairs: list[dict], training: list[dict],
                   progress=lambda _m: None) -> dict:
    """The card for a PeftModel with its adapter active, on pairs (studio.data records) and training pairs."""
    import torch

    if not pairs:
        raise ValueError(Message("There is nothing to evaluate: no preference pair to score."))
    adapter = ready_to_compare(model)
    started = time.time()
    with torch.no_grad():
        progress("Report card: scoring the chosen and rejected answers")
        base, tuned = margins(model, tokenizer, pairs + training, adapter)
        progress("Report card: the base model and the adapter answer")
        answered = [Example(p["prompt"], max(p["chosen"], p["rejected"], key=len)) for p in pairs[:ANSWERED]]
        base_answers, adapter_answers = generate(model, tokenizer, answered, adapter)
    n = len(pairs)
    rows = [{"prompt": pair["prompt"], "chosen": pair["chosen"], "rejected": pair["rejected"],
             "base": base_answers[i], "adapter": adapter_answers[i], "base_margin": round(base[i], 4),
             "adapter_margin": round(tuned[i], 4)} for i, pair in enumerate(pairs[:ANSWERED])]
    overall = {
        "examples": n,
        "base_prefers_chosen": round(sum(m > 0 for m in base[:n]) / n, 3),
        "adapter_prefers_chosen": round(sum(m > 0 for m in tuned[:n]) / n, 3),
        "base_margin": round(statistics.fmean(base[:n]), 4),
        "adapter_margin": round(statistics.fmean(tuned[:n]), 4),
        "changed_answers": round(sum(r["base"] != r["adapter"] for r in rows) / len(rows), 3),
        "training_margin_gain": round(statistics.fmean(tuned[n:]) - statistics.fmean(base[n:]), 4)
        if training else None,
    }
    overall["margin_gain"] = round(overall["adapter_margin"] - overall["base_margin"], 4)
    verdict = judge(source, overall)
    said, next_step = VERDICTS[verdict]
    return {"schema": SCHEMA, "kind": "pairs", "made": time.time(), "seconds": round(time.time() - started, 1),
            "source": source,
            "metrics": {"margin": "mean log-likelihood per token of the chosen answer minus that of the rejected one"},
            "overall": overall, "verdict": verdict, **fields(said, "verdict_text"), **fields(next_step, "next_step"),
            "examples": rows}


def judge(source: str, overall: dict) -> str:
    """One of VERDICTS, from the overall figures."""
    gain = overall["margin_gain"]
    if gain >= MARGIN_LEARNED and overall["adapter_prefers_chosen"] >= overall["base_prefers_chosen"]:
        return "learned_training" if source == "training" else "learned"
    if source == "held_out" and (overall["training_margin_gain"] or 0) >= MARGIN_MEMORISED:
        return "memorised"
    if gain <= -MARGIN_LEARNED and overall["adapter_prefers_chosen"] < overall["base_prefers_chosen"]:
        return "worse"
    return "barely_changed"


def margins(model, tokenizer, pairs: list[dict], adapter: str) -> tuple[list[float], list[float]]:
    """Each pair's margin under the base model and under the adapter."""
    sides = [Example(p["prompt"], p[side]) for side in ("chosen", "rejected") for p in pairs]
    base, tuned = answer_nll(model, tokenizer, sides, adapter)
    n = len(pairs)
    # a margin is the rejected answer's negative log-likelihood minus the chosen one's
    return [r - c for c, r in zip(base[:n], base[n:])], [r - c for c, r in zip(tuned[:n], tuned[n:])]
