"""English text for people that remembers how it was made, so the page can show it in another language.

`Message("turn {i} has no role", i=3)` is the str "turn 3 has no role" everywhere (CLI, logs, tests); the UI
looks its template up in a catalog and fills in the same values. Values that are Messages are translated too."""
from __future__ import annotations


class Message(str):
    template: str
    values: dict

    def __new__(cls, template: str, **values):
        self = super().__new__(cls, template.format(**values) if values else template)
        self.template, self.values = template, values
        return self

    def __reduce__(self):  # pickled (queues, processes) as template and values, not as the finished text
        return _rebuild, (self.template, self.values)

    # Named apart from str's own replace and join, which html.escape and other str users rely on.
    def with_values(self, **values) -> Message:
        """The same message with some of its values changed."""
        return type(self)(self.template, **{**self.values, **values})

    @classmethod
    def joined(cls, separator: str, parts) -> Message:
        """`separator.join(parts)`, each part translated on its own."""
        parts = list(parts)
        template = separator.replace("{", "{{").replace("}", "}}").join(f"{{_{i}}}" for i in range(len(parts)))
        return cls(template, **{f"_{i}": part for i, part in enumerate(parts)})

    def to_json(self) -> dict:
        return {"template": self.template,
                "values": {k: v.to_json() if isinstance(v, Message) else v for k, v in self.values.items()}}

    @classmethod
    def from_json(cls, data: dict) -> Message:
        return cls(data["template"], **{k: cls.from_json(v) if _is_message(v) else v
                                        for k, v in data.get("values", {}).items()})


def _rebuild(template: str, values: dict) -> Message:
    return Message(template, **values)


def _is_message(value) -> bool:
    return isinstance(value, dict) and set(value) == {"template", "values"}


def fields(text, key: str = "message") -> dict:
    """For a JSON record: `key` holds the English text and, for a Message, `key`_template and `key`_values
    how to make it again (JSON keeps no str subclass)."""
    if not isinstance(text, Message):
        return {key: text}
    data = text.to_json()
    return {key: str(text), f"{key}_template": data["template"], f"{key}_values": data["values"]}


def stored(record: dict, key: str = "message") -> str | None:
    """The text saved under `key` by `fields`, as a Message again where it was one."""
    if f"{key}_template" in record:
        return Message.from_json({"template": record[f"{key}_template"], "values": record.get(f"{key}_values", {})})
    return record.get(key)


def text_of(error: BaseException) -> str:
    """What an exception says: the Message it was raised with, else its plain text."""
    return error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) else str(error)
