"""Which shape a table has (alpaca, sharegpt, messages, completion, text, pairs) and which column plays which part.

A mapping is {source column: field}. Fields come in slots that mean the same thing in every format:
the user's request (instruction / prompt), extra context (input), the answer (output / completion),
a system prompt (system), a whole conversation (conversations / messages), raw text (text), and the better
and the worse answer of a preference pair (chosen / rejected).
"""
from __future__ import annotations

import json

from ..messages import Message
from .errors import DatasetError, MappingError

FORMATS = ("alpaca", "sharegpt", "messages", "completion", "text", "pairs")
IGNORE = "ignore"  # an override that takes a column out of the mapping

_SLOT = {"instruction": "user", "prompt": "user", "input": "context", "output": "assistant",
         "completion": "assistant", "system": "system", "conversations": "conversation",
         "messages": "conversation", "text": "text", "chosen": "chosen", "rejected": "rejected"}
FIELDS = tuple(_SLOT)
_FORMAT_FIELDS = {  # slot -> field name, per format
    "alpaca": {"user": "instruction", "context": "input", "assistant": "output", "system": "system"},
    "completion": {"user": "prompt", "assistant": "completion", "system": "system"},
    "sharegpt": {"conversation": "conversations", "system": "system"},
    "messages": {"conversation": "messages", "system": "system"},
    "text": {"text": "text"},
    # the answers are texts (the prompt in its own column) or conversations that end in them
    "pairs": {"user": "prompt", "system": "system", "chosen": "chosen", "rejected": "rejected"},
}
_REQUIRED = {"alpaca": ("user", "assistant"), "completion": ("user", "assistant"),
             "sharegpt": ("conversation",), "messages": ("conversation",), "text": ("text",),
             "pairs": ("chosen", "rejected")}

# Column names that mean a field, best first; compared lower-case without spaces, '_' and '-'.
_SYNONYMS = (
    ("conversations", ("conversations", "conversation", "messages", "chat", "chats", "dialog", "dialogue",
                       "dialogs", "dialogues", "turns")),
    ("system", ("system", "systemprompt", "systemmessage")),
    ("prompt", ("prompt",)),
    ("completion", ("completion",)),
    ("instruction", ("instruction", "instructions", "question", "query", "prompt", "task", "human", "user")),
    ("output", ("output", "answer", "response", "completion", "target", "reply", "outputs", "answers",
                "responses", "assistant", "gpt", "bot")),
    ("input", ("input", "context", "inputs")),
    ("text", ("text", "content", "document", "body", "passage")),
    ("chosen", ("chosen", "preferred", "better", "accepted")),
    ("rejected", ("rejected", "dispreferred", "worse")),
)


def detect_format(columns: list[str], rows: list[dict], overrides: dict[str, str] | None = None,
                  fmt: str | None = None) -> tuple[str, dict[str, str]]:
    """The format of the rows and the mapping {column: field} it uses.

    overrides ({column: field}, field may be 'ignore') are applied over the guessed mapping and steer the
    decision: a column mapped to 'text' by hand makes the format text. fmt forces the format.
    """
    if fmt is not None:
        check_format(fmt)
    overrides = _check_overrides(columns, overrides or {})
    mapping = _guess(columns, rows)
    for column, field in overrides.items():
        mapping = {c: f for c, f in mapping.items() if c != column and _SLOT[f] != _SLOT.get(field)}
        if field != IGNORE:
            mapping[column] = field
    wanted = {_SLOT[f] for f in overrides.values() if f != IGNORE}
    fmt = fmt or _decide(mapping, rows, wanted, columns)
    by_slot = {_SLOT[f]: c for c, f in mapping.items()}
    missing = [s for s in _REQUIRED[fmt] if s not in by_slot]
    if missing:
        need = [_FORMAT_FIELDS[fmt][s] for s in missing]
        raise MappingError(Message("The {format} format needs a column for {fields}, but none of the columns "
                                   "({columns}) was recognised as one.",
                                   format=fmt, fields=" and ".join(need), columns=", ".join(columns)))
    unusable = [(c, f) for c, f in overrides.items() if f != IGNORE and _SLOT[f] not in _FORMAT_FIELDS[fmt]]
    if unusable:
        raise MappingError(Message("The {format} format has no place for {columns}. Choose another format, or set "
                                   "those columns to '{ignore}'.", format=fmt, ignore=IGNORE,
                                   columns=Message.joined(", ", [Message("column '{column}' as {field}", column=c,
                                                                       field=f) for c, f in unusable])))
    if fmt in ("sharegpt", "messages") and not _conversation_values(rows, by_slot["conversation"]):
        raise MappingError(Message('Column \'{column}\' does not hold conversations (lists of turns like [{{"role": '
                                   '"user", "content": ...}}]). Map another column or choose another format.',
                                   column=by_slot["conversation"]))
    names = _FORMAT_FIELDS[fmt]
    used = {column: names[slot] for slot, column in by_slot.items() if slot in names}
    return fmt, {column: used[column] for column in columns if column in used}  # in the file's column order


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise DatasetError(Message("Unknown format '{format}'. Choose one of: {formats}.", format=fmt,
                                   formats=", ".join(FORMATS)))


def _check_overrides(columns: list[str], overrides: dict[str, str]) -> dict[str, str]:
    checked = {}
    for column, field in overrides.items():
        if column not in columns:
            raise DatasetError(Message("There is no column '{column}' to map. Columns: {columns}.", column=column,
                                       columns=", ".join(columns)))
        field = str(field).strip().lower()
        if field not in _SLOT and field != IGNORE:
            raise DatasetError(Message("Unknown field '{field}' for column '{column}'. Fields: {fields}, or '{ignore}' "
                                       "to leave the column out.", field=field, column=column,
                                       fields=", ".join(FIELDS), ignore=IGNORE))
        checked[column] = field
    return checked


def _key(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch not in " _-")


def _guess(columns: list[str], rows: list[dict]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    keys = {c: _key(c) for c in columns}
    for field, names in _SYNONYMS:
        if any(_SLOT[f] == _SLOT[field] for f in mapping.values()):
            continue
        for name in names:
            column = next((c for c in columns if keys[c] == name and c not in mapping), None)
            if column is None:
                continue
            if field == "conversations" and not _conversation_values(rows, column):
                continue
            if field == "prompt" and not any(keys[c] == "completion" for c in columns):
                break  # a lone prompt column is the instruction of an alpaca row
            if field == "completion" and "prompt" not in mapping.values():
                break
            mapping[column] = field
            break
    slots = {_SLOT[f] for f in mapping.values()}
    if "context" in slots and "user" not in slots:
        # only input/output columns: the input is the request itself
        column = next(c for c, f in mapping.items() if f == "input")
        mapping[column] = "instruction"
    if not mapping and len(columns) == 1:
        mapping[columns[0]] = "text"
    return mapping


def _decide(mapping: dict[str, str], rows: list[dict], wanted: set[str], columns: list[str]) -> str:
    slots = {_SLOT[f] for f in mapping.values()}
    candidates = []
    if {"chosen", "rejected"} <= slots:  # before conversations: preference files often keep one beside the pair
        candidates.append("pairs")
    if "conversation" in slots:
        column = next(c for c, f in mapping.items() if _SLOT[f] == "conversation")
        candidates.append(_conversation_kind(rows, column))
    if "user" in slots and "assistant" in slots:
        qa_style = set(mapping.values()) & {"prompt", "completion"} and "context" not in slots
        candidates.append("completion" if qa_style else "alpaca")
    if "text" in slots:
        candidates.append("text")
    for fmt in candidates:
        if wanted <= set(_FORMAT_FIELDS[fmt]):
            return fmt
    for fmt in FORMATS:  # what the user's own mapping is heading for; the caller says what is missing
        if wanted and wanted <= set(_FORMAT_FIELDS[fmt]):
            return fmt
    raise MappingError(Message("Could not tell which columns hold the examples (columns: {columns}).",
                               columns=", ".join(columns)))


def _conversation_values(rows: list[dict], column: str) -> bool:
    """Whether the column holds lists (or JSON text of lists) of turns, judged on its first filled values: one
    of them all turns is enough, so that a broken turn in one row is that row's problem, not the whole file's."""
    seen = [v for v in (as_turns(row.get(column)) for row in rows[:50]) if v is not None]
    return any(all(isinstance(t, dict) for t in turns) for turns in seen)


def _conversation_kind(rows: list[dict], column: str) -> str:
    for row in rows[:50]:
        for turn in as_turns(row.get(column)) or []:
            if isinstance(turn, dict):
                return "sharegpt" if "from" in turn or "value" in turn else "messages"
    return "messages"


def as_turns(value) -> list | None:
    """A conversation cell as a list: a list already, or JSON text of one (as a CSV file holds it)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    return value if isinstance(value, list) and value else None
