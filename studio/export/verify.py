"""The merge check: does the merged model answer like base + adapter, and how much does the adapter change?

It reads a few fixed prompts and, where the run's dataset is saved in the workspace, its first examples (where
the adapter's effect shows most). Everything runs on one copy of the weights: logits with the adapter and with
it disabled are taken before the merge, the merged model's after it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..messages import Message

PROMPTS = (
    "Hello! Who are you?",
    "Explain in two sentences why the sky is blue.",
    "Write a short Python function that reverses a string.",
)
DATASET_EXAMPLES = 2
_EXAMPLE_TOKENS = 256  # enough to see the adapter at work, few enough to keep the check quick on a CPU

# Logits this close are the same: a merged model passes, an adapter that changes them no more has barely learned.
_ABS_TOL = 1e-3
# The merged weights are saved in 16 bits: W + BA rounded to 8 (bf16) or 11 (fp16) significant bits, which alone
# moves logits by up to about a logit, whatever the adapter's size. On the embedded model in bf16: 0.59 against
# an adapter effect of 4.6 after 4 QLoRA steps (100% same next tokens) read in float32 on a CPU, 1.3 against 21.5
# (94%) read in bf16. So the merged model passes when it is close relative to the adapter's effect, or when it
# still picks the same next tokens; a merge that lost the adapter fails both.
_REL_TOL = 0.25
_MIN_AGREEMENT = 0.90


@dataclass(frozen=True)
class MergeCheck:
    merge_diff: float  # largest |logit(merged) - logit(base + adapter)|
    adapter_effect: float  # largest |logit(base + adapter) - logit(base)|
    token_agreement: float  # share of positions where merged and base + adapter pick the same next token
    positions: int
    prompts: int  # fixed prompts read
    dataset_examples: int  # examples from the run's dataset read
    dtype: str

    @property
    def ok(self) -> bool:
        return (self.merge_diff <= max(_ABS_TOL, _REL_TOL * self.adapter_effect)
                or self.token_agreement >= _MIN_AGREEMENT)

    @property
    def verdict(self) -> Message:
        numbers = Message("largest logit difference {diff:.3g} against an adapter effect of {effect:.3g}; same next "
                          "token at {agreement:.1%} of {positions} positions", diff=self.merge_diff,
                          effect=self.adapter_effect, agreement=self.token_agreement, positions=self.positions)
        if not self.ok:
            return Message("MISMATCH: the merged model does not answer like base + adapter ({numbers}). Use the "
                           "adapter-only download instead.", numbers=numbers)
        text = Message("OK: the merged model answers like base + adapter within {dtype} rounding ({numbers}).",
                       dtype=self.dtype, numbers=numbers)
        if self.adapter_effect <= _ABS_TOL:
            text = Message("{verdict} Note: the adapter barely changes the model's outputs; the training may not have "
                           "learned much.", verdict=text)
        return text

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "verdict": self.verdict}


class MergeChecker:
    """before_merge(peft_model), then merge, then after_merge(merged_model) -> MergeCheck.
    examples are dataset records, {"messages": [...]} or {"text": ...}."""

    def __init__(self, tokenizer, examples: list[dict] = (), prompts=PROMPTS):
        rows = [_prompt_ids(tokenizer, p) for p in prompts]
        self.prompts = len(rows)
        rows += [ids for ids in (_example_ids(tokenizer, e) for e in examples) if ids]
        self.dataset_examples = len(rows) - self.prompts
        self._input_ids, self._attention_mask = _pad(rows, tokenizer.pad_token_id)
        self._adapted: list = []
        self._base: list = []

    def before_merge(self, peft_model) -> None:
        self._adapted = self._logits(peft_model)
        with peft_model.disable_adapter():
            self._base = self._logits(peft_model)

    def after_merge(self, merged_model, dtype: str) -> MergeCheck:
        """dtype: what the merged weights were rounded to, and are saved in; the tolerance depends on it."""
        merged = self._logits(merged_model)
        merge_diff = max((m - a).abs().max().item() for m, a in zip(merged, self._adapted))
        effect = max((a - b).abs().max().item() for a, b in zip(self._adapted, self._base))
        same = sum((m.argmax(-1) == a.argmax(-1)).sum().item() for m, a in zip(merged, self._adapted))
        positions = sum(a.shape[0] for a in self._adapted)
        return MergeCheck(merge_diff, effect, same / positions, positions, self.prompts, self.dataset_examples, dtype)

    def _logits(self, model) -> list:
        """One forward pass over all prompts; each prompt's logits without its padding."""
        import torch

        device = model.get_input_embeddings().weight.device
        model.eval()
        with torch.inference_mode():
            logits = model(input_ids=self._input_ids.to(device),
                           attention_mask=self._attention_mask.to(device)).logits
        # Kept on the CPU in float32 so three sets of them never crowd the GPU or lose precision.
        return [row[: int(n)].float().cpu() for row, n in zip(logits, self._attention_mask.sum(dim=1))]


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def _example_ids(tokenizer, record: dict) -> list[int]:
    """The whole example, answer included: the answer's tokens are where training changed the model."""
    from jinja2 import TemplateError

    if "messages" in record:
        if not tokenizer.chat_template:
            return []
        try:
            ids = tokenizer.apply_chat_template(record["messages"], tokenize=True, return_dict=True)["input_ids"]
        except TemplateError:
            return []  # a record this template cannot render is left out of the check, as training left it out
    else:
        ids = tokenizer(record["text"])["input_ids"]
    return ids[:_EXAMPLE_TOKENS]


def _pad(rows: list[list[int]], pad_id: int):
    """Token ids padded on the right, where the causal mask keeps padding from touching the real positions."""
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows])
    attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    return input_ids, attention_mask
