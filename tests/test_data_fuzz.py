"""Whatever a file holds, reading and inspecting it either works or raises DatasetError, never anything else."""
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studio.data import DatasetError, inspect_file, read_table
from studio.data.templating import render_record

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

# ---- conversations whose fate is known: valid ones with the record they must give, broken ones -----------------

ROLE_NAMES = {"user": ["user", "human"], "assistant": ["assistant", "gpt", "bot", "model", "chatgpt"],
              "system": ["system"]}
words = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(str.strip) \
    | st.sampled_from(["Arr, matey!", "海賊です", "<|im_start|>", "a\nb", " padded "])
blank = st.sampled_from(["", " ", "\n\t", None, []])


def spelled(role: str):
    """A role as people write it: any of its names, in any case, with stray spaces."""
    return st.sampled_from(ROLE_NAMES[role]).flatmap(
        lambda name: st.sampled_from([name, name.upper(), name.title(), f" {name}\n"]))


# what a turn may hold, with the text it is trained as
content = (words.map(lambda text: (text, text))
           | st.integers(-10**6, 10**6).map(lambda n: (n, str(n)))
           | st.lists(words, min_size=1, max_size=3).map(
               lambda parts: ([{"type": "text", "text": p} for p in parts], "".join(parts))))
keys = st.sampled_from([("role", "content"), ("from", "value"), ("role", "text")])


def turn(role: str):
    """(a turn as written in the file, the message it must become)"""
    return st.tuples(spelled(role), content, keys).map(
        lambda t: ({t[2][0]: t[0], t[2][1]: t[1][0]}, {"role": role, "content": t[1][1]}))


any_turn = st.sampled_from(list(ROLE_NAMES)).flatmap(turn)


@st.composite
def valid_row(draw, column):
    """(row, the record it must give): any turns, at least one of them an answer; sometimes a system prompt beside
    them, sometimes the conversation as JSON text (as a CSV cell holds it)."""
    turns = draw(st.lists(any_turn, max_size=4))
    turns.insert(draw(st.integers(0, len(turns))), draw(turn("assistant")))
    written, messages = [t for t, _ in turns], [m for _, m in turns]
    row = {column: json.dumps(written) if draw(st.booleans()) else written}
    system = draw(st.none() | words)
    if system is not None:
        row["system"] = system
        if system.strip() and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system})
    return row, {"messages": messages}


@st.composite
def broken_row(draw, column):
    """A row that cannot be used, for one known reason."""
    turns = [t for t, _ in draw(st.lists(any_turn, min_size=1, max_size=3))] + [draw(turn("assistant"))[0]]
    i = draw(st.integers(0, len(turns) - 1))
    how = draw(st.sampled_from(["no answer", "blank", "unknown role", "no role", "no content", "not text",
                                "not a turn", "not a conversation", "no conversation", "system not text"]))
    if how == "no answer":
        turns = [t for t, _ in draw(st.lists(st.sampled_from(["user", "system"]).flatmap(turn), min_size=1,
                                             max_size=3))]
    elif how == "blank":
        turns[i] = {"role": draw(spelled("assistant")), "content": draw(blank)}
    elif how == "unknown role":
        turns[i] = {"role": draw(st.sampled_from(["narrator", "tool", "", "assistant_", 3, True])), "content": "x"}
    elif how == "no role":
        turns[i] = {"content": "x"}
    elif how == "no content":
        turns[i] = {"role": "assistant", "type": "text"}
    elif how == "not text":
        turns[i] = {"role": "assistant", "content": draw(st.sampled_from(
            [{"text": "x"}, True, [{"type": "image_url", "image_url": "pirate.png"}], [{"type": "text"}]]))}
    elif how == "not a turn":
        turns[i] = draw(st.sampled_from(["hello", 3, None, ["user", "hi"]]))
    if how == "not a conversation":
        return {column: draw(st.sampled_from([[], None, "", "hello", 5, {"role": "user", "content": "hi"},
                                               '[{"role": "user", "content": "cut short']))}
    if how == "no conversation":
        return draw(st.sampled_from([{}, {"system": "Answer like a pirate."}]))
    row = {column: turns}
    if how == "system not text":
        row["system"] = draw(st.sampled_from([["a", "list"], {"an": "object"}, False]))
    return row


@st.composite
def chat_file(draw):
    """Rows of one file: at least one valid, the others valid, broken or random (whose fate is not known)."""
    column = draw(st.sampled_from(["messages", "conversations"]))
    kinds = draw(st.lists(st.sampled_from(["valid", "broken", "random"]), max_size=5))
    kinds.insert(draw(st.integers(0, len(kinds))), "valid")
    rows = []
    for kind in kinds:
        if kind == "valid":
            rows.append(draw(valid_row(column)))
        elif kind == "broken":
            rows.append((draw(broken_row(column)), None))
        else:
            rows.append(({column: draw(conversation_like)}, "?"))
    return rows


@settings(max_examples=150, deadline=None)
@given(rows=chat_file())
def test_conversation_like_rows_with_the_tokenizer(folder, tokenizer, rows):
    """Every valid row gives exactly its record, with its answers (and only they) trained; every broken row is
    named as a problem; a broken or odd row never costs the file its valid ones."""
    path = folder / "chats.jsonl"
    path.write_text("\n".join(json.dumps(row) for row, _ in rows), encoding="utf-8")
    report = inspect_file(path, tokenizer=tokenizer)  # a file with a usable row is never refused as a whole
    json.dumps(report.to_json())
    assert report.rows == len(rows)
    records = dict(zip(report.row_numbers, report.records))
    problems = {p.row: p.reason for p in report.problems}
    assert len(problems) == report.invalid  # one problem per row that cannot be used
    for number, (row, expected) in enumerate(rows, 1):  # a JSONL file's rows are numbered by line
        if expected == "?":
            assert (number in records) != (number in problems)
        elif expected is None:
            assert number in problems and number not in records, (row, records.get(number))
        else:
            assert records.get(number) == expected, (row, problems.get(number))
    # every usable row is tokenized, and what the model learns to write is its answers, each where it stands
    assert len(report.lengths) == len(report.first_trained) == report.valid
    assert all(first is not None and 0 < first < length
               for first, length in zip(report.first_trained, report.lengths))
    for record in report.records:
        rendered = render_record(tokenizer, record)
        assert (rendered.text, rendered.spans) == smollm_rendering(tokenizer, record["messages"]), record


def smollm_rendering(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The text the embedded model's template (SmolLM2's) makes of a conversation, and where its answers lie in it:
    each answer with the <|im_end|> that closes it. A conversation that does not open with a system prompt gets
    the template's own."""
    preamble = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False).split(
        "<|im_start|>user")[0]
    text, spans = preamble if messages[0]["role"] != "system" else "", []
    for message in messages:
        text += f"<|im_start|>{message['role']}\n"
        if message["role"] == "assistant":
            spans.append((len(text), len(text) + len(message["content"] + "<|im_end|>")))
        text += f"{message['content']}<|im_end|>\n"
    return text, spans
