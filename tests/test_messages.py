"""Message: English text that remembers its template and values, so the page can show it in another language."""
import json
import pickle

from studio.messages import Message, fields, stored, text_of


def test_a_message_is_its_english_text():
    m = Message("turn {i} has no role", i=3)
    assert m == "turn 3 has no role" and isinstance(m, str)
    assert m.template == "turn {i} has no role" and m.values == {"i": 3}
    assert Message("Finished.") == "Finished." and Message("Finished.").values == {}
    assert Message("{x:.1f} GB", x=1.25) == "1.2 GB"


def test_join_keeps_every_part():
    parts = [Message("turn {i} has no role", i=1), Message("'{column}' is empty", column="a{b}")]
    joined = Message.joined("; ", parts)
    assert joined == "turn 1 has no role; 'a{b}' is empty"
    assert list(joined.values.values()) == parts
    assert Message.joined("; ", []) == ""


def test_it_survives_pickle_and_json():
    m = Message("{file}: {error}", file="a.csv", error=Message("broken JSON: {error}", error="x"))
    copy = pickle.loads(pickle.dumps(m))
    assert copy == m and copy.values["error"].template == "broken JSON: {error}"
    record = json.loads(json.dumps(fields(m)))
    assert record["message"] == m
    again = stored(record)
    assert again == m and again.template == m.template and again.values["error"].values == {"error": "x"}
    assert fields("plain") == {"message": "plain"} and stored({"message": "plain"}) == "plain"


def test_text_of_an_exception():
    m = Message("turn {i} has no role", i=2)
    assert text_of(ValueError(m)) is m
    assert text_of(ValueError("a", "b")) == "('a', 'b')"


def test_a_message_is_a_str_to_str_functions():
    import html

    assert html.escape(Message("{a} & {b}", a="<x>", b="y")) == "&lt;x&gt; &amp; y"
    assert Message("a-b").replace("-", "+") == "a+b"
