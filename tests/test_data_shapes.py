"""Detecting a table's shape and which column plays which part, and overriding that by hand."""
from pathlib import Path

import pytest

from studio.data import DatasetError, detect_format, read_table

DATA = Path(__file__).parent / "data"


def detect(name, **kwargs):
    table = read_table(DATA / name)
    return detect_format(table.columns, table.rows, **kwargs)


@pytest.mark.parametrize("name, fmt, mapping", [
    ("alpaca.json", "alpaca", {"instruction": "instruction", "input": "input", "output": "output"}),
    ("sharegpt.json", "sharegpt", {"conversations": "conversations"}),
    ("messages.jsonl", "messages", {"messages": "messages"}),
    ("completion.jsonl", "completion", {"prompt": "prompt", "completion": "completion"}),
    ("stories.txt", "text", {"text": "text"}),
    ("renamed_bom_crlf.csv", "alpaca", {"Question": "instruction", "Answer": "output"}),
    ("prompt_response.tsv", "alpaca", {"prompt": "instruction", "response": "output"}),
    ("nested.json", "alpaca", {"query": "instruction", "answer": "output"}),
])
def test_every_shape_is_detected(name, fmt, mapping):
    assert detect(name) == (fmt, mapping)


@pytest.mark.parametrize("columns, expected", [
    (["input", "output"], ("alpaca", {"input": "instruction", "output": "output"})),
    (["Instruction", "Context", "Response", "System Prompt"],
     ("alpaca", {"Instruction": "instruction", "Context": "input", "Response": "output", "System Prompt": "system"})),
    (["user", "assistant"], ("alpaca", {"user": "instruction", "assistant": "output"})),
    (["id", "content"], ("text", {"content": "text"})),
    (["sentence"], ("text", {"sentence": "text"})),
])
def test_synonyms_are_case_and_separator_insensitive(columns, expected):
    assert detect_format(columns, [dict.fromkeys(columns, "x")]) == expected


def test_conversations_in_a_csv_cell_as_json_text():
    rows = [{"id": "1", "chat": '[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]'}]
    assert detect_format(["id", "chat"], rows) == ("messages", {"chat": "messages"})


def test_a_messages_column_of_plain_text_is_not_a_conversation():
    rows = [{"messages": "hello", "reply": "hi"}]
    with pytest.raises(DatasetError, match="Could not tell which columns"):
        detect_format(["messages", "reply"], rows)
    with pytest.raises(DatasetError, match="The messages format needs a column for messages"):
        detect_format(["messages", "reply"], rows, fmt="messages")
    with pytest.raises(DatasetError, match="Column 'messages' does not hold conversations"):
        detect_format(["messages", "reply"], rows, {"messages": "messages"})


def test_unrecognised_columns_ask_for_a_mapping():
    with pytest.raises(DatasetError, match=r"^Could not tell which columns hold the examples \(columns: q, a\)\.$"):
        detect_format(["q", "a"], [{"q": "1", "a": "2"}])


def test_manual_mapping_of_unrecognised_columns():
    rows = [{"q": "1", "a": "2"}]
    assert detect_format(["q", "a"], rows, {"q": "instruction", "a": "output"}) == (
        "alpaca", {"q": "instruction", "a": "output"})
    assert detect_format(["q", "a"], rows, {"q": "prompt", "a": "completion"}) == (
        "completion", {"q": "prompt", "a": "completion"})


def test_override_changes_the_format():
    columns = ["instruction", "output", "body"]
    rows = [dict.fromkeys(columns, "x")]
    assert detect_format(columns, rows)[0] == "alpaca"
    assert detect_format(columns, rows, {"body": "text"}) == ("text", {"body": "text"})


def test_override_replaces_the_guess_for_that_field_and_ignore_drops_a_column():
    columns = ["question", "context", "answer", "better_answer"]
    rows = [dict.fromkeys(columns, "x")]
    assert detect_format(columns, rows, {"better_answer": "OUTPUT", "context": "ignore"}) == (
        "alpaca", {"question": "instruction", "better_answer": "output"})


def test_forced_format_renames_fields():
    assert detect("nested.json", fmt="completion") == ("completion", {"query": "prompt", "answer": "completion"})
    assert detect("completion.jsonl", fmt="alpaca") == ("alpaca", {"prompt": "instruction", "completion": "output"})


def test_incomplete_or_wrong_mappings_say_what_to_do():
    rows = [{"q": "1", "a": "2"}]
    # Shown in the browser too: the user's columns and fields, no internal names and no command-line syntax.
    with pytest.raises(DatasetError, match=r"^The alpaca format needs a column for output, but none of the columns "
                                           r"\(q, a\) was recognised as one\.$"):
        detect_format(["q", "a"], rows, {"q": "instruction"})
    with pytest.raises(DatasetError, match=r"no column 'nope' to map\. Columns: q, a"):
        detect_format(["q", "a"], rows, {"nope": "output"})
    with pytest.raises(DatasetError, match="Unknown field 'answer' for column 'a'. Fields: instruction"):
        detect_format(["q", "a"], rows, {"a": "answer"})
    with pytest.raises(DatasetError, match="Unknown format 'chatml'"):
        detect_format(["q", "a"], rows, fmt="chatml")
    with pytest.raises(DatasetError, match=r"^The text format has no place for column 'q' as instruction\. Choose "
                                           r"another format, or set those columns to 'ignore'\.$"):
        detect_format(["q", "a"], rows, {"q": "instruction", "a": "text"}, fmt="text")
    with pytest.raises(DatasetError, match=r"has no place for column 'q' as prompt, column 'a' as completion\."):
        detect_format(["q", "a", "b"], rows, {"q": "prompt", "a": "completion", "b": "text"}, fmt="text")
