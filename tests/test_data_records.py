"""Normalising rows into conversation records, and naming every row that cannot be used."""
from pathlib import Path

from studio.data import Table, detect_format, inspect_file, normalise, read_table

DATA = Path(__file__).parent / "data"


def records_of(name):
    table = read_table(DATA / name)
    return normalise(table, *detect_format(table.columns, table.rows))


def chat(*turns):
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def test_alpaca_with_and_without_input():
    records, problems = records_of("alpaca.json")
    assert problems == []
    assert records == [
        chat(("user", "Translate to French.\n\nGood morning"), ("assistant", "Bonjour")),
        chat(("user", "Name a primary colour."), ("assistant", "Red")),
        chat(("user", "Say hello."), ("assistant", "Hello!")),
    ]


def test_sharegpt_roles_become_user_and_assistant():
    records, problems = records_of("sharegpt.json")
    assert problems == []
    assert records == [
        chat(("system", "You answer in one word."), ("user", "Capital of Italy?"), ("assistant", "Rome")),
        chat(("user", "Two plus two?"), ("assistant", "Four"), ("user", "And three plus three?"), ("assistant", "Six")),
    ]


def test_messages_keep_their_system_turn():
    records, _ = records_of("messages.jsonl")
    assert records[0] == chat(("system", "You are a pirate."), ("user", "Hello"), ("assistant", "Ahoy, matey!"))


def test_completion_and_text():
    records, _ = records_of("completion.jsonl")
    assert records == [chat(("user", "The sky is"), ("assistant", " blue.")),
                       chat(("user", "Grass is"), ("assistant", " green."))]
    records, _ = records_of("stories.txt")
    assert records[1] == {"text": "The fox had a friend, a crow."}


def test_renamed_columns_mapped_by_synonym():
    records, _ = records_of("renamed_bom_crlf.csv")
    assert records[0] == chat(("user", "What rhymes with cat?"), ("assistant", "Hat,\nand also bat."))


def table(rows):
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return Table(rows, columns, [], "json", list(range(1, len(rows) + 1)))


def test_system_column_numbers_and_content_parts():
    rows = [{"system": "Be terse.", "instruction": "6 x 7?", "output": 42},
            {"system": "", "instruction": "Hi", "output": "Hello"}]
    records, problems = normalise(table(rows), "alpaca", {"system": "system", "instruction": "instruction",
                                                          "output": "output"})
    assert problems == []
    assert records == [chat(("system", "Be terse."), ("user", "6 x 7?"), ("assistant", "42")),
                       chat(("user", "Hi"), ("assistant", "Hello"))]
    content = [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]
    parts = [{"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "Yo"}],
              "system": "S"}]
    records, problems = normalise(table(parts), "messages", {"messages": "messages", "system": "system"})
    assert problems == []
    assert records == [chat(("system", "S"), ("user", "Hi there"), ("assistant", "Yo"))]


def test_every_bad_row_is_named_with_its_reason():
    report = inspect_file(DATA / "bad_rows.jsonl")
    assert report.format == "messages"
    assert report.row_numbers == [1, 10]
    assert [(p.row, p.reason) for p in report.problems] == [
        (2, report.problems[0].reason),
        (3, "turn 2 has unknown role 'narrator' (use system, user or assistant; human and gpt also work)"),
        (4, "no assistant turn, so there is no answer to learn from"),
        (5, "turn 2 (assistant) is empty"),
        (6, "missing field 'messages'"),
        (7, "'messages' holds text, expected a list of turns with role and content"),
        (8, "turn 2 (assistant) holds an object, expected text"),
    ]
    assert report.problems[0].reason == "broken JSON: Unterminated string at column 83"
    assert (report.rows, report.valid, report.invalid) == (9, 2, 7)


def test_bad_alpaca_rows_in_a_csv():
    report = inspect_file(DATA / "bad_alpaca.csv")
    assert report.records == [chat(("user", "Add 1 and 1."), ("assistant", "2"))]
    assert [(p.row, p.reason) for p in report.problems] == [
        (3, "'output' is empty"),  # the header is row 1, as a spreadsheet shows it
        (4, "has 4 cells but the header has 3 columns; put a value that contains the separator in double quotes"),
        (5, "'instruction' is empty"),
        (6, "missing field 'output'"),
    ]


def test_wrong_types_and_several_reasons_in_one_row():
    rows = [{"q": ["a", "list"], "a": None}, {"q": True, "a": "fine"}]
    _, problems = normalise(table(rows), "alpaca", {"q": "instruction", "a": "output"})
    assert [(p.row, p.reason) for p in problems] == [
        (1, "'q' holds a list, expected text; 'a' is empty"), (2, "'q' holds true/false, expected text")]


def test_turn_problems():
    rows = [{"messages": [{"role": "user", "content": "Hi"}, "hello"]},
            {"messages": [{"content": "Hi"}, {"role": 3, "content": "x"}]},
            {"messages": [{"role": "user"}, {"role": "assistant", "content": [{"type": "image_url"}]}]},
            {"messages": '[{"role": "user", "content": "Hi"}, '},
            {"messages": []}]
    _, problems = normalise(table(rows), "messages", {"messages": "messages"})
    assert [(p.row, p.reason) for p in problems] == [
        (1, "turn 2 is text, expected an object with role and content"),
        (2, "turn 1 has no role; turn 2 has unknown role '3' (use system, user or assistant; human and gpt also work)"),
        (3, "turn 1 (user) has no content; turn 2 (assistant) holds an image or other non-text part; "
            "only text can be trained"),
        (4, "'messages' is not valid JSON"),
        (5, "'messages' is empty"),
    ]
