"""Preference pairs in the dataset layer: the layouts recognised, the rows refused and why, and what DPO trains
(the same tokens the Dataset tab highlights)."""
import json

import pytest

from studio.data import (detect_format, inspect_file, load_records, pair_segments, read_table, save_dataset,
                         tokenize_pair)

SKY = [{"role": "user", "content": "What colour is the sky?"}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def assistant(text):
    return {"role": "assistant", "content": text}


@pytest.mark.parametrize("columns, expected", [
    (["prompt", "chosen", "rejected"], {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}),
    (["Question", "Preferred", "Worse"], {"Question": "prompt", "Preferred": "chosen", "Worse": "rejected"}),
    # UltraFeedback-binarized keeps the chosen conversation again in 'messages', and scores: both left out
    (["prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected"],
     {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}),
])
def test_pair_columns_are_recognised(columns, expected):
    row = dict.fromkeys(columns, "x")
    row["messages"] = [*SKY, assistant("Blue.")]
    assert detect_format(columns, [row]) == ("pairs", expected)


def test_a_pair_mapped_by_hand(tmp_path):
    path = write_jsonl(tmp_path / "rated.jsonl", [{"q": "Hi?", "good": "Hello!", "bad": "Go away."}])
    report = inspect_file(path, mapping={"q": "prompt", "good": "chosen", "bad": "rejected"})
    assert report.format == "pairs" and report.problems == []
    assert report.records == [{"prompt": [{"role": "user", "content": "Hi?"}], "chosen": "Hello!",
                               "rejected": "Go away."}]


def test_the_three_layouts_give_the_same_pair(tmp_path):
    """Texts beside a prompt column; conversations with an explicit prompt (UltraFeedback); conversations whose
    shared turns are the prompt (Anthropic HH), here with an earlier exchange kept as context."""
    earlier = [{"role": "user", "content": "Hello."}, assistant("Hi!")]
    rows = {
        "texts.jsonl": {"prompt": "What colour is the sky?", "chosen": "Blue.", "rejected": "Green."},
        "ultrafeedback.jsonl": {"prompt": "What colour is the sky?", "chosen": [*SKY, assistant("Blue.")],
                                "rejected": [*SKY, assistant("Green.")], "messages": [*SKY, assistant("Blue.")]},
        "explicit.jsonl": {"prompt": SKY, "chosen": [assistant("Blue.")], "rejected": [assistant("Green.")]},
        "hh.jsonl": {"chosen": [*earlier, *SKY, assistant("Blue.")], "rejected": [*earlier, *SKY, assistant("Green.")]},
    }
    for name, row in rows.items():
        report = inspect_file(write_jsonl(tmp_path / name, [row]))
        assert (report.format, report.problems) == ("pairs", []), name
        [pair] = report.records
        assert pair == {"prompt": (earlier if name == "hh.jsonl" else []) + SKY, "chosen": "Blue.",
                        "rejected": "Green."}, name


def test_bad_pairs_are_named_with_their_reasons(tmp_path):
    rows = [
        {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Hello! "},  # 1
        {"prompt": "Hi?", "chosen": "Hello!", "rejected": ""},  # 2
        {"prompt": "", "chosen": "Hello!", "rejected": "Go away."},  # 3
        {"chosen": [*SKY, assistant("Blue.")], "rejected": [{"role": "user", "content": "Sky?"}, assistant("Red.")]},
        {"chosen": [*SKY, assistant("Blue.")], "rejected": [*SKY, assistant("Red."), {"role": "user", "content": "?"}]},
        {"chosen": [*SKY, assistant("Blue.")], "rejected": "Green."},  # 6
        {"chosen": [*SKY, assistant("")], "rejected": [*SKY, assistant("Red.")]},  # 7
        {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."},  # 8: fine
    ]
    report = inspect_file(write_jsonl(tmp_path / "rated.jsonl", rows))
    assert report.format == "pairs" and report.valid == 1
    reasons = {p.row: p.reason for p in report.problems}
    assert reasons == {
        1: "the chosen and the rejected answer are the same, so there is nothing to prefer",
        2: "'rejected' is empty",
        3: "'prompt' is empty",
        4: "'chosen' and 'rejected' differ before their last answer: both must answer the same prompt",
        5: "the last turn of 'rejected' is the user's; it must be the answer (assistant)",
        6: "'chosen' and 'rejected' must both be texts or both be conversations",
        7: "'chosen': turn 2 (assistant) is empty",
    }
    without_prompts = inspect_file(write_jsonl(tmp_path / "no_prompt.jsonl", [{"chosen": "Yes.", "rejected": "No."}]))
    assert [p.reason for p in without_prompts.problems] == [
        "no prompt: map the column that holds it, or give 'chosen' and 'rejected' as conversations that start with it"]


def test_dpo_trains_exactly_what_the_preview_highlights(tokenizer):
    pair = {"prompt": [{"role": "system", "content": "Talk like a pirate."}, *SKY], "chosen": "Blue, matey!",
            "rejected": "It is blue."}
    encoded = tokenize_pair(tokenizer, pair, 1024)
    chosen, rejected = pair_segments(tokenizer, pair)
    for ids, segments in ((encoded["chosen_ids"], chosen), (encoded["rejected_ids"], rejected)):
        trained = "".join(text for text, learned in segments if learned)
        assert tokenizer.decode(ids) == trained
        # the prompt is what both sides share before their answers; after the answer only the newline ChatML puts
        # between turns, which is not trained
        assert tokenizer.decode(encoded["prompt_ids"]) == segments[0][0] and segments[2:] == [("\n", False)]
    assert tokenizer.decode(encoded["chosen_ids"]) == "Blue, matey!<|im_end|>"
    assert "Talk like a pirate." in tokenizer.decode(encoded["prompt_ids"])
    cut = tokenize_pair(tokenizer, pair, len(encoded["prompt_ids"]) + 2)
    assert cut["prompt_ids"] == encoded["prompt_ids"] and len(cut["chosen_ids"]) == len(cut["rejected_ids"]) == 2


def test_a_saved_pairs_dataset_counts_the_longer_side_and_loads_again(tmp_path, tokenizer, workspace):
    path = write_jsonl(tmp_path / "rated.jsonl", [{"prompt": "Hi?", "chosen": "Hello there, friend!", "rejected": "No."},
                                                  {"prompt": "Bye?", "chosen": "Bye.", "rejected": "Go away now!"}])
    report = inspect_file(path, tokenizer)
    for pair, length in zip(report.records, report.lengths):
        encoded = tokenize_pair(tokenizer, pair, 1024)
        # the longer side, up to the newline after its answer
        assert length == len(encoded["prompt_ids"]) + max(len(encoded["chosen_ids"]), len(encoded["rejected_ids"])) + 1
    save_dataset(workspace, "rated", path, report)
    records, saved = load_records("rated", workspace)
    assert records == report.records and saved["format"] == "pairs"
    assert read_table(path).columns == ["prompt", "chosen", "rejected"]


def test_the_dataset_tab_shows_both_answers_of_a_pair(tmp_path, tokenizer):
    from studio.ui.dataset_tab import AVOIDED, PREFERRED, SHAPES, example_view, preview_table

    path = write_jsonl(tmp_path / "rated.jsonl", [{"prompt": "Hi?", "chosen": "Ahoy, matey!", "rejected": "Hello."}])
    report = inspect_file(path, tokenizer)
    assert "chosen and a rejected answer" in SHAPES[report.format]
    preview = preview_table(report)["value"]
    assert list(preview.columns) == ["row", "prompt", "chosen", "rejected"]
    assert preview.iloc[0].tolist() == [1, "Hi?", "Ahoy, matey!", "Hello."]
    shown, caption = example_view(tokenizer, report, 1)
    assert [text for text, label in shown if label == PREFERRED] == ["Ahoy, matey!<|im_end|>"]
    assert [text for text, label in shown if label == AVOIDED] == ["Hello.<|im_end|>"]
    assert sum("Hi?" in text for text, label in shown if label is None) == 2 and "row 1" in caption
