"""Reading data files: every kind, encodings, and the files that must be refused with a clear message."""
import json
from pathlib import Path

import pytest

from studio.data import DatasetError, read_table

DATA = Path(__file__).parent / "data"


def write(tmp_path, name, content) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_json_array_of_objects():
    table = read_table(DATA / "alpaca.json")
    assert table.kind == "json" and table.encoding == "utf-8"
    assert table.columns == ["instruction", "input", "output"]
    assert table.row_numbers == [1, 2, 3]
    assert table.rows[2] == {"instruction": "Say hello.", "output": "Hello!"}


def test_json_object_holding_an_array():
    table = read_table(DATA / "nested.json")
    assert table.columns == ["query", "answer"]
    assert [r["answer"] for r in table.rows] == ["Jupiter", "Mercury"]


def test_json_object_with_several_arrays_is_refused(tmp_path):
    path = write(tmp_path, "two.json", json.dumps({"train": [{"a": 1}], "test": [{"a": 2}]}))
    with pytest.raises(DatasetError, match=r"two\.json.*several lists of rows \(train, test\)"):
        read_table(path)


def test_json_single_conversation_and_single_example(tmp_path):
    conversation = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}
    assert read_table(write(tmp_path, "one.json", json.dumps(conversation))).rows == [conversation]
    turns = json.dumps(conversation["messages"])
    assert read_table(write(tmp_path, "turns.json", turns)).rows == [conversation]
    example = {"instruction": "Hi", "output": "Yo"}
    assert read_table(write(tmp_path, "ex.json", json.dumps(example))).rows == [example]


def test_json_list_of_strings_is_text_and_non_objects_are_problems(tmp_path):
    assert read_table(write(tmp_path, "s.json", '["one", "two"]')).rows == [{"text": "one"}, {"text": "two"}]
    table = read_table(write(tmp_path, "mixed.json", '[{"text": "a"}, 5, [1], {"text": "b"}]'))
    assert table.row_numbers == [1, 4]
    assert [(p.row, p.reason) for p in table.problems] == [(2, "is a JSON number, not an object with named fields"),
                                                           (3, "is a JSON list, not an object with named fields")]


def test_broken_json_names_line_and_column(tmp_path):
    path = write(tmp_path, "broken.json", '[\n  {"a": 1},\n  {"a": }\n]')
    with pytest.raises(DatasetError, match=r"broken\.json is not valid JSON: Expecting value at line 3, column 9\. Fix that spot"):
        read_table(path)


def test_json_lines_in_a_json_file_are_read_as_jsonl(tmp_path):
    table = read_table(write(tmp_path, "lines.json", '{"text": "a"}\n{"text": "b"}\n'))
    assert table.kind == "jsonl" and table.rows == [{"text": "a"}, {"text": "b"}]


def test_jsonl_broken_line_is_a_problem_and_the_rest_load():
    table = read_table(DATA / "bad_rows.jsonl")
    assert table.kind == "jsonl"
    assert [p.row for p in table.problems] == [2]
    assert table.problems[0].reason.startswith("broken JSON: ")
    assert table.row_numbers == [1, 3, 4, 5, 6, 7, 8, 10]  # line 9 is blank


def test_jsonl_lone_surrogate_escape_is_a_problem(tmp_path):
    table = read_table(write(tmp_path, "s.jsonl", '{"text": "ok"}\n{"text": "bad \\ud800 half"}\n'))
    assert table.rows == [{"text": "ok"}]
    assert table.problems[0].row == 2 and "surrogate" in table.problems[0].reason


def test_jsonl_where_nothing_parses_is_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"notes\.jsonl: no row could be read \(2 skipped; row 1: broken JSON"):
        read_table(write(tmp_path, "notes.jsonl", "just some words\nand more words\n"))


def test_csv_with_bom_crlf_and_quoted_multiline_fields():
    table = read_table(DATA / "renamed_bom_crlf.csv")
    assert table.kind == "csv" and table.encoding == "utf-8-sig"
    assert table.columns == ["Question", "Answer"]  # no BOM glued to the first name
    assert table.rows == [{"Question": "What rhymes with cat?", "Answer": "Hat,\nand also bat."},
                          {"Question": 'Say "hi"', "Answer": "Hi!"}]


def test_csv_rows_are_numbered_as_a_spreadsheet_shows_them(tmp_path):
    # The header is row 1, the blank row 3 still counts, and the cell that spans two lines is one row.
    path = write(tmp_path, "n.csv", 'a,b\n1,"two\nlines"\n\n3,4\n5,6,7\n8,9,\n')
    table = read_table(path)
    assert table.row_numbers == [2, 4, 6]
    assert table.rows[2] == {"a": "8", "b": "9"}  # a trailing empty cell is not an extra column
    assert [(p.row, p.reason[:30]) for p in table.problems] == [(5, "has 3 cells but the header has")]
    below = read_table(write(tmp_path, "below.csv", "\n\nq,a\nhi,hello\n"))  # empty rows above the header
    assert below.row_numbers == [4]


def test_csv_semicolons_and_duplicate_headers(tmp_path):
    assert read_table(write(tmp_path, "semi.csv", "a;b\n1;2\n")).rows == [{"a": "1", "b": "2"}]
    with pytest.raises(DatasetError, match="names the column 'a' more than once"):
        read_table(write(tmp_path, "dup.csv", "a,a\n1,2\n"))


def test_tsv():
    table = read_table(DATA / "prompt_response.tsv")
    assert table.kind == "tsv" and table.columns == ["prompt", "response"]
    assert table.rows[1] == {"prompt": "Thank me", "response": "You are welcome."}


def test_text_paragraphs_and_lines():
    paragraphs = read_table(DATA / "stories.txt")
    assert paragraphs.kind == "text" and paragraphs.columns == ["text"]
    assert paragraphs.rows == [
        {"text": "Once upon a time there was a small fox.\nIt lived in a quiet wood."},
        {"text": "The fox had a friend, a crow."}, {"text": "They met every morning by the river."}]
    assert paragraphs.row_numbers == [1, 4, 6]
    lines = read_table(DATA / "lines.txt")
    assert [r["text"] for r in lines.rows] == ["The first sentence.", "The second sentence.", "The third sentence."]
    assert lines.row_numbers == [1, 2, 3]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    path = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist([{"messages": turns, "id": 1}]), path)
    table = read_table(path)
    assert table.kind == "parquet" and table.columns == ["messages", "id"]
    assert table.rows == [{"messages": turns, "id": 1}]


def test_damaged_parquet_is_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"x\.parquet is not a readable Parquet file"):
        read_table(write(tmp_path, "x.parquet", b"PAR1 not really parquet PAR1"))
    with pytest.raises(DatasetError, match=r"y\.parquet is not a readable Parquet file"):
        read_table(write(tmp_path, "y.parquet", "a,b\n1,2\n"))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_bom(tmp_path, encoding):
    text = "instruction,output\nSalut,Grüße 日本\n"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    table = read_table(write(tmp_path, "u.csv", data))
    assert table.rows == [{"instruction": "Salut", "output": "Grüße 日本"}]


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_windows_and_latin1_files_are_decoded(tmp_path, encoding):
    answer = "Très bien – « oui »" if encoding == "cp1252" else "Très bien"  # cp1252 has the dash, Latin-1 not
    text = f"instruction,output\nÇa va?,{answer}\n"
    table = read_table(write(tmp_path, "w.csv", text.encode(encoding)))
    assert table.encoding == "cp1252"
    assert table.rows == [dict(zip(["instruction", "output"], text.splitlines()[1].split(",")))]


def test_undecodable_text_asks_for_utf8(tmp_path):
    with pytest.raises(DatasetError, match=r"odd\.csv is not UTF-8 text.*save it as UTF-8"):
        read_table(write(tmp_path, "odd.csv", b"a,b\n\x81\x8d,\x90\n"))


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is a PNG image"),
    (b"PK\x03\x04\x14\x00\x06\x00", "is a ZIP archive.*export the sheet as CSV"),
    (b"%PDF-1.7\n", "is a PDF document"),
    (b"abc\x00\x01\x02def", "is a binary file"),
    (bytes(range(1, 32)) * 4, "looks like a binary file"),
])
def test_binary_files_are_refused(tmp_path, content, message):
    with pytest.raises(DatasetError, match=rf"upload\.jsonl {message}"):
        read_table(write(tmp_path, "upload.jsonl", content))


@pytest.mark.parametrize("content", [b"", b"  \n\r\n\t", "\ufeff".encode("utf-8"), "\ufeff".encode("utf-16")])
def test_empty_files_are_refused(tmp_path, content):
    with pytest.raises(DatasetError, match=r"e\.csv is empty"):
        read_table(write(tmp_path, "e.csv", content))


def test_header_only_csv_has_no_rows(tmp_path):
    with pytest.raises(DatasetError, match=r"h\.csv holds no rows"):
        read_table(write(tmp_path, "h.csv", "instruction,output\n"))


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        read_table(tmp_path / "nope.csv")


def test_unknown_extension_is_sniffed_or_refused(tmp_path):
    jsonl = read_table(DATA / "unknown.data")
    assert jsonl.kind == "jsonl" and len(jsonl.rows) == 2
    csv_table = read_table(write(tmp_path, "export.dat", "question,answer\nA?,B\nC?,D\n"))
    assert csv_table.kind == "csv" and csv_table.columns == ["question", "answer"]
    tsv_table = read_table(write(tmp_path, "export.tab", "question\tanswer\nA?\tB\n"))
    assert tsv_table.kind == "tsv"
    with pytest.raises(DatasetError, match=r"notes\.docx: cannot tell what kind of file this is\. Supported files: "
                                           r"\.csv, \.tsv, \.json, \.jsonl, \.ndjson, \.parquet, \.txt, \.md;"):
        read_table(write(tmp_path, "notes.docx", "Dear diary,\ntoday I fine-tuned a model.\n"))
