"""Whatever a file holds, reading and inspecting it either works or raises DatasetError, never anything else."""
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studio.data import DatasetError, inspect_file, read_table

EXTENSIONS = [".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".dat", ""]
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "cp1252", "latin-1"]
FUZZ = settings(max_examples=120, deadline=None)


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def check(folder: Path, data: bytes, extension: str) -> None:
    path = folder / f"upload{extension}"
    path.write_bytes(data)
    try:
        read_table(path)
    except DatasetError as e:
        assert str(e) and "Traceback" not in str(e)
    try:
        report = inspect_file(path)
    except DatasetError:
        return
    json.dumps(report.to_json())  # the report always serialises
    assert report.rows == report.valid + report.invalid


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["instruction", "output", "messages", "role", "user", "assistant", "gpt", "from", "value"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["instruction", "input", "output", "messages", "conversations", "role", "content", "from",
                         "value", "text", "prompt", "completion", "data", "x"]), inner, max_size=4),
    max_leaves=20)


@FUZZ
@given(data=st.binary(max_size=400), extension=st.sampled_from(EXTENSIONS))
def test_random_bytes(folder, data, extension):
    check(folder, data, extension)


@FUZZ
@given(prefix=st.sampled_from([b"PAR1", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"PK\x03\x04", b""]),
       data=st.binary(max_size=200), extension=st.sampled_from(EXTENSIONS))
def test_random_bytes_behind_known_signatures(folder, prefix, data, extension):
    check(folder, prefix + data, extension)


@FUZZ
@given(value=json_values, lines=st.booleans(), cut=st.integers(0, 400), encoding=st.sampled_from(ENCODINGS),
       extension=st.sampled_from([".json", ".jsonl", ".dat", ".txt"]))
def test_json_like_text(folder, value, lines, cut, encoding, extension):
    if lines and isinstance(value, list):
        text = "\n".join(json.dumps(v) for v in value)
    else:
        text = json.dumps(value, ensure_ascii=cut % 2 == 0)
    text = text[:cut] if cut < len(text) else text  # sometimes cut short, as a broken upload is
    check(folder, text.encode(encoding, errors="replace"), extension)


cell = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10) | st.sampled_from(
    ['"', '""', '"a,b"', "\r\n", "\n", ",", ";", "\t", "instruction", "output", "[{\"role\": \"user\"}]"])


@FUZZ
@given(rows=st.lists(st.lists(cell, max_size=5), max_size=6), separator=st.sampled_from([",", "\t", ";", "|"]),
       newline=st.sampled_from(["\n", "\r\n", "\r"]), encoding=st.sampled_from(ENCODINGS),
       extension=st.sampled_from([".csv", ".tsv", ".txt", ".dat"]))
def test_csv_like_text(folder, rows, separator, newline, encoding, extension):
    text = newline.join(separator.join(cells) for cells in rows)
    check(folder, text.encode(encoding, errors="replace"), extension)


conversation_like = st.lists(st.dictionaries(
    st.sampled_from(["role", "from", "content", "value", "type"]),
    st.sampled_from(["user", "assistant", "system", "gpt", "human", "tool", "", "<|im_end|>"]) | st.text(max_size=8)
    | st.lists(st.dictionaries(st.sampled_from(["type", "text"]), st.sampled_from(["text", "image", "hi"]))),
    max_size=3), max_size=4)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.dictionaries(st.sampled_from(["messages", "conversations", "system"]), conversation_like,
                                     min_size=1), min_size=1, max_size=4))
def test_conversation_like_rows_with_the_tokenizer(folder, tokenizer, rows):
    path = folder / "chats.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    try:
        report = inspect_file(path, tokenizer=tokenizer)
    except DatasetError:
        return
    assert len(report.lengths) == report.valid
    json.dumps(report.to_json())
