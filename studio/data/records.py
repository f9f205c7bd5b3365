"""Turn table rows into training records, checking each row and naming the ones that cannot be used.

A chat record is {"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]};
a raw-text record is {"text": str}; a preference pair is {"prompt": [messages before the answer], "chosen": str,
"rejected": str}.
"""
from __future__ import annotations

import math

from ..messages import Message
from .errors import Problem
from .readers import Table
from .shapes import as_turns, check_format

ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
         "bot": "assistant", "model": "assistant", "chatgpt": "assistant"}


def is_pairs(records: list[dict]) -> bool:
    """Whether records are preference pairs (a dataset holds one kind of record)."""
    return bool(records) and "chosen" in records[0]


def normalise(table: Table, fmt: str, mapping: dict[str, str]) -> tuple[list[dict], list[Problem]]:
    """The valid records, and a problem for every row that was skipped (the reader's ones included)."""
    numbered, problems = normalise_numbered(table, fmt, mapping)
    return [record for _, record in numbered], problems


def normalise_numbered(table: Table, fmt: str, mapping: dict[str, str]) -> tuple[list[tuple[int, dict]], list[Problem]]:
    """Like normalise, with each record's row number kept beside it."""
    check_format(fmt)
    columns = {field: column for column, field in mapping.items()}
    make = {"sharegpt": _chat, "messages": _chat, "text": _text, "pairs": _pair}.get(fmt, _qa)
    records, problems = [], list(table.problems)
    for number, row in zip(table.row_numbers, table.rows):
        record, reasons = make(row, columns)
        if reasons:
            problems.append(Problem(number, Message.joined("; ", reasons)))
        else:
            records.append((number, record))
    problems.sort(key=lambda p: p.row)
    return records, problems


def _qa(row: dict, columns: dict[str, str]) -> tuple[dict | None, list[str]]:
    """alpaca (instruction, input, output) and completion (prompt, completion) rows."""
    reasons: list[str] = []
    user = _field(row, columns.get("instruction") or columns.get("prompt"), True, reasons)
    extra = _field(row, columns.get("input"), False, reasons)
    answer = _field(row, columns.get("output") or columns.get("completion"), True, reasons)
    system = _field(row, columns.get("system"), False, reasons)
    if reasons:
        return None, reasons
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": f"{user}\n\n{extra}" if extra else user})
    messages.append({"role": "assistant", "content": answer})
    return {"messages": messages}, []


def _text(row: dict, columns: dict[str, str]) -> tuple[dict | None, list[str]]:
    reasons: list[str] = []
    text = _field(row, columns["text"], True, reasons)
    return (None, reasons) if reasons else ({"text": text}, [])


def _chat(row: dict, columns: dict[str, str]) -> tuple[dict | None, list[str]]:
    """sharegpt (from/value) and messages (role/content) rows; either kind of turn is accepted."""
    column = columns.get("conversations") or columns["messages"]
    reasons: list[str] = []
    system = _field(row, columns.get("system"), False, reasons)
    if column not in row:
        return None, [_missing(column)]
    raw = row[column]
    turns = as_turns(raw)
    if turns is None:
        if isinstance(raw, str) and raw.lstrip().startswith("["):
            return None, [Message("'{column}' is not valid JSON", column=column)]
        if raw in (None, "", []):
            return None, [_empty(column)]
        return None, [Message("'{column}' holds {value}, expected a list of turns with role and content",
                              column=column, value=_a(raw))]
    messages = _turns(turns, reasons)
    if not reasons and not any(m["role"] == "assistant" for m in messages):
        reasons.append(Message("no assistant turn, so there is no answer to learn from"))
    if reasons:
        return None, reasons
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages}, []


def _pair(row: dict, columns: dict[str, str]) -> tuple[dict | None, list[str]]:
    """A prompt with a chosen and a rejected answer: two texts beside a prompt column, or two conversations that
    share every turn but their last answer (UltraFeedback, Anthropic HH), the shared turns being the prompt."""
    reasons: list[str] = []
    system = _field(row, columns.get("system"), False, reasons)
    chosen, rejected = (_answer(row, columns[side], reasons) for side in ("chosen", "rejected"))
    if reasons:
        return None, reasons
    (chosen_before, chosen_text), (rejected_before, rejected_text) = chosen, rejected
    names = {"chosen": columns["chosen"], "rejected": columns["rejected"]}
    if (chosen_before is None) != (rejected_before is None):
        return None, [Message("'{chosen}' and '{rejected}' must both be texts or both be conversations", **names)]
    if chosen_before != rejected_before:
        return None, [Message("'{chosen}' and '{rejected}' differ before their last answer: both must answer the same "
                              "prompt", **names)]
    prompt = chosen_before or []
    if not prompt:  # the answers are texts, or conversations of the answer alone: the prompt has its own column
        column = columns.get("prompt") or columns.get("instruction")
        if column is None:
            return None, [Message("no prompt: map the column that holds it, or give '{chosen}' and '{rejected}' as "
                                  "conversations that start with it", **names)]
        prompt = _prompt(row, column, reasons)
    if chosen_text.strip() == rejected_text.strip():
        reasons.append(Message("the chosen and the rejected answer are the same, so there is nothing to prefer"))
    if reasons:
        return None, reasons
    if system and prompt[0]["role"] != "system":
        prompt.insert(0, {"role": "system", "content": system})
    return {"prompt": prompt, "chosen": chosen_text, "rejected": rejected_text}, []


def _answer(row: dict, column: str, reasons: list[str]) -> tuple[list[dict] | None, str]:
    """One side of a pair: (the turns before its answer, or None when it is a text; the answer)."""
    if column not in row:
        reasons.append(_missing(column))
        return None, ""
    turns = as_turns(row[column])
    if turns is None:  # a text (one that only looks like JSON is a text too)
        return None, _field(row, column, True, reasons)
    broken: list[str] = []
    messages = _turns(turns, broken)
    if broken:  # two conversations in a row: say in which one the turn is
        reasons.extend(Message("'{column}': {reason}", column=column, reason=reason) for reason in broken)
        return None, ""
    if messages[-1]["role"] != "assistant":
        reasons.append(Message("the last turn of '{column}' is the {role}'s; it must be the answer (assistant)",
                               column=column, role=messages[-1]["role"]))
        return None, ""
    return messages[:-1], messages[-1]["content"]


def _prompt(row: dict, column: str, reasons: list[str]) -> list[dict]:
    """A prompt column as the turns before the answer: a text is the user's request; a conversation is itself."""
    turns = as_turns(row.get(column))
    if turns is not None:
        return _turns(turns, reasons)
    text = _field(row, column, True, reasons)
    return [{"role": "user", "content": text}] if text else []


def _turns(turns: list, reasons: list[str]) -> list[dict]:
    """A conversation's turns as messages; every turn that cannot be used adds its reason."""
    messages = []
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            reasons.append(Message("turn {i} is {value}, expected an object with role and content", i=i,
                                   value=_a(turn)))
            continue
        raw_role = turn.get("role", turn.get("from"))
        if raw_role is None:
            reasons.append(Message("turn {i} has no role", i=i))
            continue
        role = ROLES.get(raw_role.strip().lower()) if isinstance(raw_role, str) else None
        if role is None:
            reasons.append(Message("turn {i} has unknown role '{role}' (use system, user or assistant; human and gpt "
                                   "also work)", i=i, role=raw_role))
            continue
        key = next((k for k in ("content", "value", "text") if k in turn), None)
        if key is None:
            reasons.append(Message("turn {i} ({role}) has no content", i=i, role=role))
            continue
        content = _turn_text(turn[key], i, role, reasons)
        if content is not None:
            messages.append({"role": role, "content": content})
    return messages


def _turn_text(value, i: int, role: str, reasons: list[str]) -> str | None:
    if isinstance(value, list):
        # OpenAI-style content parts: only text parts can be trained
        if all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value):
            value = "".join(p["text"] for p in value)
        else:
            reasons.append(Message("turn {i} ({role}) holds an image or other non-text part; only text can be trained",
                                   i=i, role=role))
            return None
    text = _as_text(value)
    if text is None:
        reasons.append(Message("turn {i} ({role}) holds {value}, expected text", i=i, role=role, value=_a(value)))
    elif not text.strip():
        reasons.append(Message("turn {i} ({role}) is empty", i=i, role=role))
        return None
    return text


def _field(row: dict, column: str | None, required: bool, reasons: list[str]) -> str:
    """The text in a column, or '' with a reason added when a required value is missing or wrong."""
    if column is None:
        return ""
    if column not in row:
        if required:
            reasons.append(_missing(column))
        return ""
    value = row[column]
    text = _as_text(value)
    if text is None:
        reasons.append(Message("'{column}' holds {value}, expected text", column=column, value=_a(value)))
        return ""
    if required and not text.strip():
        reasons.append(_empty(column))
    return text if text.strip() else ""


def _as_text(value) -> str | None:
    """Text as is, numbers as their digits, missing values (null, NaN) as ''; None for anything else."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _missing(column: str) -> Message:
    return Message("missing field '{column}'", column=column)


def _empty(column: str) -> Message:
    return Message("'{column}' is empty", column=column)


_KINDS = {list: Message("a list"), dict: Message("an object"), bool: Message("true/false"), str: Message("text")}


def _a(value) -> Message:
    return _KINDS.get(type(value)) or Message("a {type}", type=type(value).__name__)
