"""The report card: did the run teach the model what its data shows?

Base and adapter answer the same prompts, ones the run never trained on when it held some out. For each, the
card keeps the expected answer, both answers, how likely each model finds the expected answer (mean
log-likelihood per token) and how close each answer is to it (chrF, from sacrebleu: character n-grams, so it
works for any language and script, Chinese included). A verdict in plain words says what to do next.
"""
from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass

from ..data import split
from ..messages import Message, fields

SCHEMA = 1
ANSWERED = 6  # prompts both models answer: enough to read, about a minute on a laptop's CPU for a small model
TRAINING_SCORED = 8  # training examples scored by likelihood alone, to tell learning apart from memorising
MAX_NEW_TOKENS = 160
SCORED_AT_ONCE = 8  # examples a scoring pass takes (twice as many rows): the logits of a 128k vocabulary are large
BASE = "__base__"  # peft's name for "no adapter" in a mixed batch

# The verdict's thresholds. The answers decide whether it learned: chrF is 0-100, and a run that changed its
# answers' style or format moves it by 10 points and more, one that learned nothing by 1 or 2. The likelihood
# gain (the expected answers' per-token likelihood, adapter over base; 1.0 is no change) is shown but does not
# decide: a run that left the answers as they were still made the expected ones 2.6x as likely (measured:
# docs/benchmarks.md, "Small data"). On training examples a gain of 10x and more is memorising: the training
# loss has fallen close to zero.
CHRF_LEARNED = 5.0
GAIN_MEMORISED = 10.0

VERDICTS = {
    "learned": (Message("It learned: on prompts it never saw, the adapter's answers moved toward the expected ones."),
                Message("Chat with it in the Chat tab, then export it.")),
    "learned_training": (Message("It learned the training examples. None were held out, so whether it does as well "
                                 "on new prompts is not known."),
                         Message("Keep a share for validation (Advanced settings) to know, or try it in the Chat "
                                 "tab.")),
    "memorised": (Message("It fits the training examples but not the held-out ones: it memorised instead of "
                          "learning the pattern."),
                  Message("Use fewer passes (epochs) or more examples; a smaller rank helps too.")),
    "barely_changed": (Message("It barely changed: the adapter answers much like the base model."),
                       Message("Train longer (more passes) or raise the learning rate, and check in the Dataset tab "
                               "that the answers show what you want it to learn.")),
    "worse": (Message("Its answers moved away from the expected ones."),
              Message("Lower the learning rate (halve it) and check the examples in the Dataset tab.")),
}


@dataclass
class Example:
    prompt: list[dict] | str  # the conversation before the expected answer, or the start of a raw text
    expected: str

    @classmethod
    def of(cls, record: dict) -> Example | None:
        """A conversation's last answer, or a raw text's second half; None when there is no answer to expect."""
        if "messages" in record:
            messages = record["messages"]
            last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
            if not last or not messages[last]["content"].strip():  # no answer, or one with no prompt before it
                return None
            return cls(messages[:last], messages[last]["content"])
        words = record.get("text", "").split(" ")
        if len(words) < 4:
            return None
        half = len(words) // 2
        return cls(" ".join(words[:half]), " " + " ".join(words[half:]))

    def prompt_text(self, tokenizer) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        from ..inference.generate import render

        return render(tokenizer, self.prompt)


def choose_examples(records: list[dict], val_fraction: float, seed: int, other_data: bool, usable=None,
                    limit: int = ANSWERED) -> tuple[str, list, list]:
    """(where the examples come from, at most `limit` of them, training examples to score). `usable` turns records
    into examples (by default: Example.of, leaving out those with no answer).

    For the run's own data: the validation split it held out (the same split training made), else a labelled
    handful of its training examples. For other data: a fixed sample of it, and no training examples."""
    usable = usable or (lambda part: [e for e in map(Example.of, part) if e is not None])
    if other_data:
        chosen = usable(records)
        return "other", random.Random(seed).sample(chosen, min(limit, len(chosen))), []
    train, held_out = split(records, val_fraction, seed)
    training = usable(train)[:max(limit, TRAINING_SCORED)]
    if usable(held_out):
        return "held_out", usable(held_out)[:limit], training[:TRAINING_SCORED]
    return "training", training[:limit], training[:TRAINING_SCORED]


def make_report_card(model, tokenizer, source: str, examples: list[Example], training: list[Example],
                     progress=lambda _m: None) -> dict:
    """The card for a PeftModel with its adapter active. The base model is the same weights with the adapter
    left out: each batch holds every example twice, its base rows and its adapter rows (peft's mixed adapter
    batches), so a CPU, which pays for every pass over the 4-bit weights, makes one pass where two would do."""
    import torch

    if not examples:
        raise ValueError(Message("There is nothing to evaluate: no example has an answer to compare with."))
    adapter = ready_to_compare(model)
    started = time.time()
    with torch.no_grad():
        progress("Report card: scoring the expected answers")
        base_nll, adapter_nll = answer_nll(model, tokenizer, examples + training, adapter)
        progress("Report card: the base model and the adapter answer")
        base_answers, adapter_answers = generate(model, tokenizer, examples, adapter)
    rows = []
    for i, example in enumerate(examples):
        rows.append({"prompt": example.prompt, "expected": example.expected, "base": base_answers[i],
                     "adapter": adapter_answers[i], "base_nll": round(base_nll[i], 4),
                     "adapter_nll": round(adapter_nll[i], 4),
                     "likelihood_gain": round(math.exp(base_nll[i] - adapter_nll[i]), 3),
                     "base_chrf": round(chrf(base_answers[i], example.expected), 2),
                     "adapter_chrf": round(chrf(adapter_answers[i], example.expected), 2)})
    n = len(examples)
    overall = {
        "examples": n,
        "base_nll": round(statistics.fmean(base_nll[:n]), 4),
        "adapter_nll": round(statistics.fmean(adapter_nll[:n]), 4),
        "likelihood_gain": round(math.exp(statistics.fmean(base_nll[:n]) - statistics.fmean(adapter_nll[:n])), 3),
        "base_chrf": round(statistics.fmean(r["base_chrf"] for r in rows), 2),
        "adapter_chrf": round(statistics.fmean(r["adapter_chrf"] for r in rows), 2),
        "changed_answers": round(sum(r["base"] != r["adapter"] for r in rows) / n, 3),
        "training_likelihood_gain": round(math.exp(statistics.fmean(base_nll[n:]) - statistics.fmean(adapter_nll[n:])),
                                          3) if training else None,
    }
    overall["chrf_gain"] = round(overall["adapter_chrf"] - overall["base_chrf"], 2)
    verdict = judge(source, overall)
    said, next_step = VERDICTS[verdict]
    return {"schema": SCHEMA, "made": time.time(), "seconds": round(time.time() - started, 1), "source": source,
            "metrics": {"likelihood": "mean log-likelihood per token of the expected answer (nll: its negative)",
                        "similarity": f"chrF, sacrebleu {_sacrebleu_version()}"},
            "overall": overall, "verdict": verdict, **fields(said, "verdict_text"), **fields(next_step, "next_step"),
            "examples": rows}


def ready_to_compare(model) -> str:
    """Put a PeftModel in shape for base-vs-adapter batches; the name of its trained adapter."""
    model.eval()
    if getattr(model.config, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        model.set_attn_implementation("sdpa")  # training's padding-free kernel does not take padded batches
    return model.active_adapter


def judge(source: str, overall: dict) -> str:
    """One of VERDICTS, from the overall figures."""
    if overall["chrf_gain"] >= CHRF_LEARNED:
        return "learned_training" if source == "training" else "learned"
    if source == "held_out" and (overall["training_likelihood_gain"] or 0) >= GAIN_MEMORISED:
        return "memorised"
    if overall["chrf_gain"] <= -CHRF_LEARNED and overall["likelihood_gain"] < 1:
        return "worse"
    return "barely_changed"


def answer_nll(model, tokenizer, examples: list[Example], adapter: str) -> tuple[list[float], list[float]]:
    """For each example, the mean negative log-likelihood per token of its expected answer after its prompt:
    under the base model, and under the adapter."""
    import torch
    import torch.nn.functional as F

    texts = [(e.prompt_text(tokenizer), e.expected) for e in examples]
    rows = [(tokenizer(prompt + expected, add_special_tokens=False)["input_ids"],
             len(tokenizer(prompt, add_special_tokens=False)["input_ids"])) for prompt, expected in texts]
    base, tuned = [], []
    for start in range(0, len(rows), SCORED_AT_ONCE):
        chunk = rows[start:start + SCORED_AT_ONCE]
        width = max(len(ids) for ids, _ in chunk)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in chunk] * 2, device=model.device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in chunk] * 2, device=model.device)
        logits = model(input_ids=ids, attention_mask=mask, adapter_names=_names(len(chunk), adapter)).logits
        losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
        for row, (full, prompt_length) in enumerate(chunk * 2):
            # the token at position p is predicted at p - 1: the answer's tokens are prompt_length .. len(full)
            nll = losses[row, prompt_length - 1:len(full) - 1].mean().item()
            (base if row < len(chunk) else tuned).append(nll)
    return base, tuned


def generate(model, tokenizer, examples: list[Example], adapter: str) -> tuple[list[str], list[str]]:
    """Greedy answers to every example's prompt by the base model and by the adapter, in one left-padded batch."""
    from ..inference.generate import eos_ids

    ids = [tokenizer(e.prompt_text(tokenizer), add_special_tokens=False)["input_ids"] for e in examples] * 2
    batch = tokenizer.pad({"input_ids": ids}, padding=True, padding_side="left", return_tensors="pt").to(model.device)
    longest = max(len(tokenizer(e.expected, add_special_tokens=False)["input_ids"]) for e in examples)
    out = model.generate(**batch, adapter_names=_names(len(examples), adapter), do_sample=False, temperature=None,
                         top_p=None, top_k=None, max_new_tokens=min(MAX_NEW_TOKENS, 2 * longest + 16),
                         eos_token_id=eos_ids(model, tokenizer),
                         pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                         else tokenizer.eos_token_id)
    answers = [tokenizer.decode(row[batch["input_ids"].shape[1]:], skip_special_tokens=True).strip() for row in out]
    return answers[:len(examples)], answers[len(examples):]


def _names(n: int, adapter: str) -> list[str]:
    """Which adapter each row of a doubled batch uses: n rows of the base model, then n of the adapter."""
    return [BASE] * n + [adapter] * n


def chrf(answer: str, expected: str) -> float:
    from sacrebleu.metrics import CHRF

    return CHRF().sentence_score(answer, [expected]).score


def _sacrebleu_version() -> str:
    import sacrebleu

    return sacrebleu.__version__
