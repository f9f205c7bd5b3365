"""Render a record with the model's chat template, tokenize it and mark the tokens the model learns.

The mask convention (what assistant_masks = 1 means): the tokens of every assistant turn's content AND
the template's end-of-turn text right after it (for ChatML, `<|im_end|>`), so the model learns to answer
and to stop. The whitespace a template puts after that marker to separate turns (ChatML's newline) is not
trained, unless whitespace is the only end-of-turn text the template has. System prompts, user turns and
role headers are never trained. A raw-text record is its text plus the end-of-text token, all trained.
A preference pair is rendered twice, the prompt with each answer; only that final answer (and its end-of-turn
text) is learned, preferred on the chosen side and made less likely on the rejected one.
Sequences longer than max_length are cut at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..messages import Message
from .errors import DatasetError

# For tokenizers without a chat template: plain headers, the end-of-text token closes each answer.
# Newlines are written as expressions: transformers renders with trim_blocks, which eats one after a tag.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ '### ' + m['role'] | capitalize + ':\\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token or '' }}{% endif %}{{ '\\n\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\\n' }}{% endif %}"
)


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # character ranges of text that are trained
    searched: bool = False  # some answer was located by search (the template is not prefix-consistent)


def describe_template(tokenizer, fmt: str) -> str:
    """How records of this format are turned into text, in words for the report."""
    name = Path(str(getattr(tokenizer, "name_or_path", "") or "the tokenizer")).name
    if fmt == "text":
        return f"raw text followed by the end-of-text token {tokenizer.eos_token!r}" if tokenizer.eos_token \
            else "raw text (this tokenizer has no end-of-text token)"
    if tokenizer.chat_template:
        return f"the chat template of {name}"
    return (f"{name} has no chat template, so a simple fallback is used: '### System:', '### User:' and "
            "'### Assistant:' headers, the end-of-text token after each answer")


def render_record(tokenizer, record: dict) -> Rendered:
    """The full text of a record and the character spans the model is trained on."""
    if "text" in record:
        text = record["text"] + (tokenizer.eos_token or "")
        return Rendered(text, [(0, len(text))])
    messages = record["messages"]
    template = None if tokenizer.chat_template else FALLBACK_TEMPLATE
    text = _render(tokenizer, template, messages, False)
    spans, cursor, searched = [], 0, False
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        span = _prefix_span(tokenizer, template, messages, i, text)
        if span is None or span[0] < cursor:
            start = max(cursor, _answer_start(tokenizer, template, messages, i, text) or 0)
            span, searched = _search_span(tokenizer, text, message["content"], start), True
        spans.append(span)
        cursor = span[1]
    return Rendered(text, spans, searched)


def pair_conversations(record: dict) -> tuple[dict, dict]:
    """A preference pair as two chat records: its prompt answered with the chosen answer, and with the rejected one."""
    return tuple({"messages": [*record["prompt"], {"role": "assistant", "content": answer}]}
                 for answer in (record["chosen"], record["rejected"]))


def render_sides(tokenizer, record: dict) -> list[Rendered]:
    """What a record trains on: one rendering, or for a pair one per answer, each with only that answer trained
    (the turns before it, earlier answers included, are the prompt both sides share)."""
    if "chosen" not in record:
        return [render_record(tokenizer, record)]
    sides = [render_record(tokenizer, side) for side in pair_conversations(record)]
    return [replace(side, spans=side.spans[-1:]) for side in sides]


def tokenize_rendered(tokenizer, rendered: Rendered) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Token ids, the mask and each token's character offsets in rendered.text."""
    return tokenize_many(tokenizer, [rendered])[0]


def tokenize_many(tokenizer, rendered: list[Rendered]) -> list[tuple[list[int], list[int], list[tuple[int, int]]]]:
    """tokenize_rendered for many records in one call to the tokenizer, which is much faster."""
    if not getattr(tokenizer, "is_fast", False):
        raise DatasetError(Message("This model's tokenizer cannot report where each token comes from (it is not a "
                                   "'fast' tokenizer), so the trained tokens cannot be marked. Pick a model that "
                                   "ships a tokenizer.json."))
    if not rendered:
        return []
    # The template already wrote its special tokens into the text; adding them again would double them.
    encoded = tokenizer([r.text for r in rendered], add_special_tokens=False, return_offsets_mapping=True)
    results = []
    for r, ids, offsets in zip(rendered, encoded["input_ids"], encoded["offset_mapping"]):
        offsets = [tuple(o) for o in offsets]
        results.append((list(ids), _mask(offsets, r.spans), offsets))
    return results


def tokenize_record(tokenizer, record: dict, max_length: int) -> dict:
    """{"input_ids": [...], "assistant_masks": [...]}: 1 where the model is trained, cut to max_length."""
    ids, mask, _ = tokenize_rendered(tokenizer, render_record(tokenizer, record))
    return {"input_ids": ids[:max_length], "assistant_masks": mask[:max_length]}


def tokenize_pair(tokenizer, record: dict, max_length: int) -> dict:
    """{"prompt_ids", "chosen_ids", "rejected_ids"}, as trl's DPOTrainer takes a pair: the tokens both sides share,
    then each side's trained tokens (what render_sides marks, so what the Dataset tab shows), cut to max_length."""
    (chosen, chosen_mask, _), (rejected, rejected_mask, _) = tokenize_many(tokenizer, render_sides(tokenizer, record))
    # Where the answers start; a token that merges the end of the prompt with an answer belongs to that answer.
    start = min(chosen_mask.index(1), rejected_mask.index(1))
    shared = next((i for i in range(start) if chosen[i] != rejected[i]), start)
    prompt = chosen[:shared][:max_length]
    room = max_length - len(prompt)

    def answer(ids: list[int], mask: list[int]) -> list[int]:
        end = len(mask) - mask[::-1].index(1)  # after the last trained token: not the whitespace between turns
        return ids[shared:end][:room]

    return {"prompt_ids": prompt, "chosen_ids": answer(chosen, chosen_mask),
            "rejected_ids": answer(rejected, rejected_mask)}


def render_segments(tokenizer, record: dict) -> list[tuple[str, bool]]:
    """The rendered text in consecutive pieces, each flagged trained or not, cut at token boundaries so
    that it shows exactly what tokenize_record's mask trains (before any cut to max_length)."""
    return _segments(tokenizer, render_record(tokenizer, record))


def pair_segments(tokenizer, pair: dict) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """A preference pair's chosen side and rejected side, each in pieces as render_segments cuts them: what
    tokenize_pair trains."""
    chosen, rejected = render_sides(tokenizer, pair)
    return _segments(tokenizer, chosen), _segments(tokenizer, rejected)


def _segments(tokenizer, rendered: Rendered) -> list[tuple[str, bool]]:
    _, mask, offsets = tokenize_rendered(tokenizer, rendered)
    segments: list[tuple[str, bool]] = []
    done = 0
    for (_, end), trained in zip(offsets, mask):
        piece = rendered.text[done:end]  # the token's text, with any gap before it that no token covers
        done = max(done, end)
        if not piece:
            continue
        if segments and segments[-1][1] == bool(trained):
            segments[-1] = (segments[-1][0] + piece, bool(trained))
        else:
            segments.append((piece, bool(trained)))
    if done < len(rendered.text):
        segments.append((rendered.text[done:], False))
    return segments


def _render(tokenizer, template, messages: list[dict], generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    except Exception as e:  # noqa: BLE001 - a model's template is foreign code; any failure means the same
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DatasetError(Message("the model's chat template refused this conversation ({reason})",
                                   reason=reason)) from None


def _prefix_span(tokenizer, template, messages: list[dict], i: int, text: str) -> tuple[int, int] | None:
    """The answer's span as the difference of two prefix renderings, or None where the template is not
    prefix-consistent (rendering fewer messages does not give the start of the full text)."""
    try:
        before = _render(tokenizer, template, messages[:i], True)
        upto = _render(tokenizer, template, messages[:i + 1], False)
    except DatasetError:
        return None
    if not (text.startswith(before) and text.startswith(upto) and len(upto) > len(before)):
        return None
    content = messages[i]["content"]
    end = len(upto)
    found = _find(text, content, len(before), end)
    content_end = found[1] if found else len(before)
    tail = text[content_end:end]
    if tail.strip():  # there is an end-of-turn marker: leave the whitespace after it untrained
        end = content_end + len(tail.rstrip())
    return len(before), end


def _answer_start(tokenizer, template, messages: list[dict], i: int, text: str) -> int | None:
    """Where answer i can start at the earliest: where a marker stands in its place when the conversation is
    rendered with the marker instead (provided the text before it is the same). Searching from there, an answer
    is never found in what the template writes before it (its default system prompt, say)."""
    marker = "\ue000answer\ue000"  # private-use characters: in no template, and rendered as they are
    try:
        marked = _render(tokenizer, template, [*messages[:i], {**messages[i], "content": marker}, *messages[i + 1:]],
                         False)
    except DatasetError:
        return None
    at = marked.find(marker)
    return at if at >= 0 and text.startswith(marked[:at]) else None


def _search_span(tokenizer, text: str, content: str, cursor: int) -> tuple[int, int]:
    """The answer found in the text after cursor, extended over a special token that closes it."""
    found = _find(text, content, cursor, len(text))
    if found is None:
        raise DatasetError(Message("the model's chat template changes the answer text, so the part to train on "
                                   "cannot be found"))
    start, end = found
    rest = text[end:]
    gap = len(rest) - len(rest.lstrip())
    for token in _special_tokens(tokenizer):
        if rest.startswith(token, gap):
            return start, end + gap + len(token)
    return start, end


def _find(text: str, content: str, start: int, end: int) -> tuple[int, int] | None:
    for needle in (content, content.strip()):  # templates often trim the answer
        at = text.find(needle, start, end) if needle else -1
        if at >= 0:
            return at, at + len(needle)
    return None


def _special_tokens(tokenizer) -> list[str]:
    names = set(tokenizer.all_special_tokens)
    names.update(t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special)
    return sorted((n for n in names if n), key=len, reverse=True)


def _mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token whose characters overlap a span (spans are in order and do not overlap)."""
    mask, k = [], 0
    for start, end in offsets:
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        inside = k < len(spans) and start < spans[k][1] and max(end, start + 1) > spans[k][0]
        mask.append(1 if inside else 0)
    return mask
