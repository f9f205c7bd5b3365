"""The training contract: which tokens the model learns, checked with the real SmolLM2 tokenizer (ChatML)."""
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from studio.data import inspect_file, render_segments, tokenize_record
from studio.data.templating import FALLBACK_TEMPLATE, describe_template, render_record

DATA = Path(__file__).parent / "data"
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
TWO_TURNS = {"messages": [
    {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you."}]}


def trained_and_not(tokenizer, encoded):
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    return (tokenizer.decode([i for i, m in zip(ids, mask) if m]),
            tokenizer.decode([i for i, m in zip(ids, mask) if not m]))


def test_two_turn_mask_is_each_answer_and_its_im_end(tokenizer):
    encoded = tokenize_record(tokenizer, TWO_TURNS, 1024)
    text = tokenizer.apply_chat_template(TWO_TURNS["messages"], tokenize=False)
    assert encoded["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(encoded["assistant_masks"]) == len(encoded["input_ids"])
    trained, untrained = trained_and_not(tokenizer, encoded)
    # The newline ChatML writes after <|im_end|> separates turns and is not trained.
    assert trained == "Hello!<|im_end|>See you.<|im_end|>"
    assert untrained == (f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                         "<|im_start|>assistant\n\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n\n")


def test_system_turn_is_never_trained(tokenizer):
    record = {"messages": [{"role": "system", "content": "Talk like a pirate."},
                           {"role": "user", "content": "Where is the gold?"},
                           {"role": "assistant", "content": "Buried, arr."}]}
    trained, untrained = trained_and_not(tokenizer, tokenize_record(tokenizer, record, 1024))
    assert trained == "Buried, arr.<|im_end|>"
    assert "Talk like a pirate." in untrained and "Where is the gold?" in untrained
    assert DEFAULT_SYSTEM not in untrained  # the template adds its default only when there is no system turn


def test_render_segments_shows_exactly_the_masked_text(tokenizer):
    segments = render_segments(tokenizer, TWO_TURNS)
    assert segments == [
        (f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
         False),
        ("Hello!<|im_end|>", True),
        ("\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n", False),
        ("See you.<|im_end|>", True),
        ("\n", False),
    ]
    trained, untrained = trained_and_not(tokenizer, tokenize_record(tokenizer, TWO_TURNS, 1024))
    assert "".join(s for s, t in segments if t) == trained
    assert "".join(s for s, t in segments if not t) == untrained


def test_truncation_cuts_the_end(tokenizer):
    full = tokenize_record(tokenizer, TWO_TURNS, 1024)
    cut = tokenize_record(tokenizer, TWO_TURNS, 10)
    assert cut == {"input_ids": full["input_ids"][:10], "assistant_masks": [0] * 10}


def test_text_record_is_all_trained_and_ends_with_eos(tokenizer):
    encoded = tokenize_record(tokenizer, {"text": "Once upon a time."}, 1024)
    assert encoded["input_ids"] == tokenizer("Once upon a time.", add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id]
    assert encoded["assistant_masks"] == [1] * len(encoded["input_ids"])
    assert render_segments(tokenizer, {"text": "Once upon a time."}) == [("Once upon a time.<|im_end|>", True)]
    assert describe_template(tokenizer, "text") == "raw text followed by the end-of-text token '<|im_end|>'"


@pytest.fixture()
def fresh_tokenizer(embedded_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir)


def test_tokenizer_without_chat_template_uses_the_fallback(fresh_tokenizer):
    fresh_tokenizer.chat_template = None
    assert "no chat template" in describe_template(fresh_tokenizer, "alpaca")
    segments = render_segments(fresh_tokenizer, TWO_TURNS)
    assert segments == [("### User:\nHi\n\n### Assistant:\n", False), ("Hello!<|im_end|>", True),
                        ("\n\n### User:\nBye\n\n### Assistant:\n", False), ("See you.<|im_end|>", True),
                        ("\n\n", False)]
    assert fresh_tokenizer.apply_chat_template(TWO_TURNS["messages"], chat_template=FALLBACK_TEMPLATE,
                                               tokenize=False) == "".join(s for s, _ in segments)


def test_template_that_is_not_prefix_consistent_falls_back_to_search(fresh_tokenizer):
    # Trims answers, and writes a marker only when a conversation is a single message.
    fresh_tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}[A] {{ m['content'] | trim }}<|im_end|>"
        "{% else %}[{{ m['role'] }}] {{ m['content'] }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}[A] {% endif %}{% if messages | length == 1 %}<single>{% endif %}")
    record = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Hello! "},
                           {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you."}]}
    assert render_record(fresh_tokenizer, record).searched
    # The space before each answer is part of its first token (" Hello"), which is trained.
    assert render_segments(fresh_tokenizer, record) == [
        ("[user] Hi[A]", False), (" Hello!<|im_end|>", True), ("[user] Bye[A]", False), (" See you.<|im_end|>", True)]


def test_a_conversation_the_template_refuses_is_a_problem_row(fresh_tokenizer, tmp_path):
    fresh_tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{{ m['role'] + ': ' + m['content'] + '<|im_end|>' }}{% endfor %}")
    report = inspect_file(DATA / "messages.jsonl", tokenizer=fresh_tokenizer)
    assert report.row_numbers == [2]
    assert [(p.row, p.reason) for p in report.problems] == [
        (1, "the model's chat template refused this conversation (System role not supported)")]


def test_report_token_counts_match_tokenize_record(tokenizer):
    report = inspect_file(DATA / "sharegpt.json", tokenizer=tokenizer, max_length=40)
    lengths = [len(tokenize_record(tokenizer, r, 10_000)["input_ids"]) for r in report.records]
    tokens = report.to_json()["tokens"]
    assert (tokens["min"], tokens["max"], tokens["count"]) == (min(lengths), max(lengths), 2)
    assert tokens["over_limit"] == sum(n > 40 for n in lengths)
    assert report.template == "the chat template of SmolLM2-135M-Instruct"
    short = inspect_file(DATA / "sharegpt.json", tokenizer=tokenizer, max_length=20)
    assert short.to_json()["tokens"]["answers_cut_off"] == 2  # the default system prompt alone is longer
    assert report.with_max_length(20).to_json() == {**short.to_json(), "max_length": 20}
    assert report.answers_cut_off == 0 and report.with_max_length(20).answers_cut_off == 2


# Any text people type: not control characters besides newline and tab (this tokenizer's vocabulary lacks their
# bytes, so they cannot round-trip; drawing them made most examples fail the assume() below), private or unassigned.
plain_text = st.text(st.characters(exclude_categories=("Cs", "Cc", "Co", "Cn"), include_characters="\n\t",
                                   exclude_characters="<>"), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=st.lists(st.tuples(plain_text, plain_text), min_size=1, max_size=3), system=st.none() | plain_text)
def test_any_conversation_trains_exactly_its_answers(tokenizer, turns, system):
    messages = [{"role": "system", "content": system}] if system is not None else []
    for question, answer in turns:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": "x" + answer}]
    record = {"messages": messages}
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    # In case a character left in plain_text cannot round-trip either.
    assume(tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text)
    encoded = tokenize_record(tokenizer, record, 100_000)
    trained, untrained = trained_and_not(tokenizer, encoded)
    assert trained == "".join("x" + answer + "<|im_end|>" for _, answer in turns)
    segments = render_segments(tokenizer, record)
    assert "".join(s for s, _ in segments) == text
    assert "".join(s for s, t in segments if t) == trained
    assert "".join(s for s, t in segments if not t) == untrained
