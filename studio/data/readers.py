"""Read a data file into a table of rows: CSV/TSV, JSON, JSONL, Parquet or plain text.

Plain text (.txt, .md): if blank lines separate the text, each paragraph is one row; otherwise each line
is one row. Rows are {"text": ...} and are numbered by the line they start on.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..messages import Message
from .errors import DatasetError, Problem

EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
              ".parquet": "parquet", ".txt": "text", ".md": "text"}
SUPPORTED = ", ".join(EXTENSIONS)
SAVE_AS_UTF8 = Message("Open it in a text editor or spreadsheet and save it as UTF-8 (\"CSV UTF-8\" in Excel).")

_BOMS = (  # UTF-32 first: its little-endian mark begins with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
_MAGIC = (  # signatures of binary files people upload by mistake, for a message that says what it is
    (b"PK\x03\x04", Message("a ZIP archive (an Excel .xlsx file is one: export the sheet as CSV UTF-8 instead)")),
    (b"%PDF", Message("a PDF document")), (b"\x89PNG", Message("a PNG image")),
    (b"\xff\xd8\xff", Message("a JPEG image")), (b"GIF8", Message("a GIF image")),
    (b"\x1f\x8b", Message("a gzip archive (unpack it first)")), (b"SQLite format 3", Message("an SQLite database")),
    (b"\xd0\xcf\x11\xe0", Message("an old Office document (.xls/.doc)")),
)
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # control characters other than tabs and line breaks
_DELIMITERS = (",", ";", "\t", "|")
csv.field_size_limit(1 << 30)  # long answers are normal in training data; the default limit is 128 KiB


@dataclass
class Table:
    rows: list[dict]
    columns: list[str]
    problems: list[Problem]
    kind: str
    row_numbers: list[int]  # the user-facing number of each row in rows
    encoding: str | None = None  # how the bytes were decoded; None for Parquet


def read_table(path: str | Path) -> Table:
    """Every row of a data file; rows that cannot be read are listed in problems, not raised."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(Message("{file}: no such file. Check the path.", file=str(path)))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(Message("{file} cannot be read ({error}). Check that the file is readable.", file=path.name,
                                   error=e.strerror)) from None
    if not data.strip():
        raise DatasetError(_empty(path))
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind == "parquet" or data.startswith(b"PAR1"):  # also Parquet by its signature, whatever its name
        table = _read_parquet(path)
    else:
        _refuse_binary(path, data)
        text, encoding = _decode(path, data)
        if not text.strip():
            raise DatasetError(_empty(path))
        table = _read_text_kind(path, text, kind or _sniff(path, text))
        table.encoding = encoding
    if not table.rows:
        if table.problems:
            first = table.problems[0]
            raise DatasetError(Message("{file}: no row could be read ({skipped} skipped; row {row}: {reason}). Check "
                                       "that the file is really {kind}.", file=path.name, skipped=len(table.problems),
                                       row=first.row, reason=first.reason, kind=table.kind.upper()))
        raise DatasetError(_no_rows(path))
    return table


# ---- bytes to text ----------------------------------------------------------------------------------

def _refuse_binary(path: Path, data: bytes) -> None:
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise DatasetError(Message("{file} is {what}, not a data file. Supported files: {supported}.",
                                       file=path.name, what=what, supported=SUPPORTED))
    if b"\x00" in data and not any(data.startswith(bom) for bom, _ in _BOMS):
        raise DatasetError(Message("{file} is a binary file (it holds NUL bytes), or UTF-16 text without a byte-order "
                                   "mark. Supported files: {supported}. {advice}", file=path.name, supported=SUPPORTED,
                                   advice=SAVE_AS_UTF8))


def _decode(path: Path, data: bytes) -> tuple[str, str]:
    text, encoding = _decode_bytes(path, data)
    # Windows line endings would otherwise end up inside answers; a doubled BOM survives decoding
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    if _controls(text) > max(8, len(text) // 100):
        raise DatasetError(Message("{file} looks like a binary file (it is full of control characters). Supported "
                                   "files: {supported}.", file=path.name, supported=SUPPORTED))
    return text, encoding


def _decode_bytes(path: Path, data: bytes) -> tuple[str, str]:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                raise DatasetError(Message("{file} starts with a {encoding} byte-order mark but is not valid "
                                           "{encoding} text. {advice}", file=path.name, encoding=encoding.upper(),
                                           advice=SAVE_AS_UTF8)) from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    # Not UTF-8: most often a Windows (cp1252) or Latin-1 export; cp1252 reads both the same way for
    # printable text. Anything that does not decode into printable text is refused, not guessed.
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        text = None
    if text is None or _controls(text):
        raise DatasetError(Message("{file} is not UTF-8 text and its encoding cannot be recognised. {advice}",
                                   file=path.name, advice=SAVE_AS_UTF8))
    return text, "cp1252"


def _controls(text: str) -> int:
    return sum(1 for _ in _CONTROL.finditer(text))


def _sniff(path: Path, text: str) -> str:
    """The kind of a file whose extension does not say: JSON, JSONL, CSV or TSV, else refuse."""
    head = text.lstrip()
    if head[:1] in "[{":
        return "json"  # the JSON reader also accepts JSON Lines
    lines = [line for line in text.splitlines()[:20] if line.strip()]
    for delimiter, kind in (("\t", "tsv"), (",", "csv"), (";", "csv")):
        counts = {len(cells) for cells in csv.reader(lines, delimiter=delimiter)}
        if len(lines) >= 2 and len(counts) == 1 and counts.pop() >= 2:
            return kind
    raise DatasetError(Message("{file}: cannot tell what kind of file this is. Supported files: {supported}; give the "
                               "file one of these extensions.", file=path.name, supported=SUPPORTED))


def _read_text_kind(path: Path, text: str, kind: str) -> Table:
    if kind in ("csv", "tsv"):
        return _read_delimited(path, text, kind)
    if kind == "json":
        return _read_json(path, text)
    if kind == "jsonl":
        return _read_jsonl(text)
    return _read_plain(text)


# ---- the kinds ----------------------------------------------------------------------------------------

def _read_delimited(path: Path, text: str, kind: str) -> Table:
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if kind == "tsv" else max(_DELIMITERS, key=lambda d: (first_line.count(d), d == ","))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, numbers, problems = [], [], []
    try:
        header, header_row = None, 0
        for header_row, cells in enumerate(reader, 1):  # empty rows above the header are rows too
            if any(c.strip() for c in cells):
                header = cells
                break
        if header is None:
            raise DatasetError(_no_rows(path))
        columns = [name.strip() or f"column_{i + 1}" for i, name in enumerate(header)]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise DatasetError(Message("{file}: the header names the column '{column}' more than once. Give every "
                                       "column its own name in the first row.", file=path.name, column=repeated[0]))
        # Numbered as a spreadsheet numbers its rows: the header is row 1, the first example row 2.
        for number, cells in enumerate(reader, header_row + 1):
            if not any(c.strip() for c in cells):
                continue  # an empty line or a spreadsheet's empty row: not an example
            if len(cells) > len(columns) and any(c.strip() for c in cells[len(columns):]):
                problems.append(Problem(number, Message(
                    "has {cells} cells but the header has {columns} columns; put a value that contains the separator "
                    "in double quotes", cells=len(cells), columns=len(columns))))
                continue
            rows.append(dict(zip(columns, cells)))
            numbers.append(number)
    except csv.Error as e:
        raise DatasetError(Message("{file} is not valid {kind} near line {line}: {error}. Export it again from your "
                                   "spreadsheet.", file=path.name, kind=kind.upper(), line=reader.line_num,
                                   error=str(e))) from None
    return Table(rows, columns, problems, kind, numbers)


def _read_json(path: Path, text: str) -> Table:
    try:
        data = json.loads(text)
    except RecursionError:
        raise DatasetError(Message("{file} is nested too deeply to be a table of examples.", file=path.name)) from None
    except ValueError as e:
        if isinstance(e, json.JSONDecodeError) and e.msg == "Extra data":
            return _read_jsonl(text)  # one object per line in a file called .json
        raise DatasetError(Message("{file} is not valid JSON: {error}. Fix that spot, or check the file in a JSON "
                                   "validator.", file=path.name, error=_json_error(e, True))) from None
    return _table(enumerate(_rows_of(path, data), 1), [], "json")


def _rows_of(path: Path, data) -> list:
    """The list of rows in a JSON document: the document itself, or the one list of objects it holds."""
    if _is_turn_list(data):
        return [data]  # one conversation written as its list of turns
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise DatasetError(Message('{file} holds a single {type}, not a list of examples. Expected [{{"instruction": '
                                   '..., "output": ...}}, ...].', file=path.name, type=_type_name(data)))
    if any(_is_turn_list(v) for v in data.values()):
        return [data]  # one conversation on its own
    lists = [k for k, v in data.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
    if len(lists) == 1:
        return data[lists[0]]
    if len(lists) > 1:
        raise DatasetError(Message("{file} holds several lists of rows ({lists}). Keep only the one to train on, or "
                                   "save each in its own file.", file=path.name, lists=", ".join(lists)))
    if data and not any(isinstance(v, (list, dict)) for v in data.values()):
        return [data]  # a single example
    raise DatasetError(Message('{file} holds a JSON object but no list of rows in it. Expected [{{...}}, {{...}}] or '
                               '{{"data": [{{...}}, {{...}}]}}.', file=path.name))


def _is_turn_list(value) -> bool:
    """A list of chat turns such as [{"role": "user", "content": ...}, ...] (or ShareGPT's from/value)."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, dict) and ("role" in t or "from" in t) and ("content" in t or "value" in t) for t in value)


def _read_jsonl(text: str) -> Table:
    items, problems = [], []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            items.append((number, json.loads(line)))
        except RecursionError:
            problems.append(Problem(number, Message("broken JSON: nested too deeply")))
        except ValueError as e:
            problems.append(Problem(number, Message("broken JSON: {error}", error=_json_error(e, False))))
    return _table(items, problems, "jsonl")


def _table(numbered_items, problems: list[Problem], kind: str) -> Table:
    """A Table of the items that are rows; each one that is not becomes a problem under its number."""
    rows, numbers = [], []
    for number, item in numbered_items:
        row, reason = _as_row(item)
        if row is None:
            problems.append(Problem(number, reason))
        else:
            rows.append(row)
            numbers.append(number)
    return Table(rows, _columns(rows), sorted(problems, key=lambda p: p.row), kind, numbers)


def _json_error(error: ValueError, with_line: bool) -> str:
    if not isinstance(error, json.JSONDecodeError):
        return str(error)  # e.g. a number too long to convert
    what = error.msg.removesuffix(" starting at")  # Python's own words: left in English
    if with_line:
        return Message("{what} at line {line}, column {column}", what=what, line=error.lineno, column=error.colno)
    return Message("{what} at column {column}", what=what, column=error.colno)


def _as_row(item) -> tuple[dict | None, str]:
    if isinstance(item, str):
        item = {"text": item}
    elif _is_turn_list(item):
        item = {"messages": item}
    if not isinstance(item, dict):
        return None, Message("is a JSON {type}, not an object with named fields", type=_type_name(item))
    if _has_lone_surrogate(item):
        # "\ud800"-style escapes decode to characters that cannot be written or tokenized
        return None, Message("holds a broken \\u escape (half of a surrogate pair); fix or remove it")
    return item, ""


def _has_lone_surrogate(value) -> bool:
    stack = [value]
    while stack:  # a loop, not recursion: JSON may nest hundreds deep
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _read_plain(text: str) -> Table:
    lines = [line.rstrip("\r") for line in text.split("\n")]
    filled = [i for i, line in enumerate(lines) if line.strip()]
    paragraphs = any(not lines[i].strip() for i in range(filled[0], filled[-1] + 1))
    rows, numbers = [], []
    start = None
    for i, line in enumerate(lines + [""]):
        if not paragraphs and line.strip():
            rows.append({"text": line})
            numbers.append(i + 1)
        elif paragraphs and line.strip() and start is None:
            start = i
        elif paragraphs and not line.strip() and start is not None:
            rows.append({"text": "\n".join(lines[start:i])})
            numbers.append(start + 1)
            start = None
    return Table(rows, ["text"], [], "text", numbers)


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        rows = table.to_pylist()
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a damaged file; all mean the same
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DatasetError(Message("{file} is not a readable Parquet file ({reason}). Export it again, or save it as "
                               "CSV or JSONL.", file=path.name, reason=reason)) from None
    return Table(rows, [str(c) for c in table.column_names], [], "parquet", list(range(1, len(rows) + 1)))


def _empty(path: Path) -> Message:
    return Message("{file} is empty. Pick a file that holds your examples.", file=path.name)


def _no_rows(path: Path) -> Message:
    return Message("{file} holds no rows. Pick a file that holds your examples.", file=path.name)


def _columns(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _type_name(value) -> str:
    return {list: "list", dict: "object", str: "string", bool: "true/false", type(None): "null"}.get(
        type(value), "number")
