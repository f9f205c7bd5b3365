"""The page in English, 繁體中文 or 简体中文: which language a request wants, the catalogs, and relabelling.

The catalogs (locales/<code>.json) are keyed by the English text itself, gettext style, so English needs no
file and a string missing from a catalog shows in English rather than not at all."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.messages import Message, stored, text_of

LANGUAGES = {"en": "English", "zh-Hant": "繁體中文", "zh-Hans": "简体中文"}
COOKIE = "studio_lang"
CATALOGS = {code: json.loads((Path(__file__).parent / "locales" / f"{code}.json").read_text(encoding="utf-8"))
            for code in LANGUAGES if code != "en"}
_TRADITIONAL_REGIONS = ("tw", "hk", "mo", "hant")


def translate(lang: str, text: str, **kw) -> str:
    text = CATALOGS.get(lang, {}).get(text) or text
    return text.format(**kw) if kw else text


def N_(text: str) -> str:
    """Marks English text for the catalog where it is defined; it is translated later, where it is shown."""
    return text


@dataclass(frozen=True)
class Translator:
    """`t("Run {id} is queued.", id=run.id)` in the language of the person who asked."""

    lang: str = "en"

    def __call__(self, text: str, **kw) -> str:
        return translate(self.lang, text, **kw)

    def message(self, text) -> str:
        """Text the engine wrote, given as a Message, an exception carrying one, or a record saved with
        `messages.fields`; what was not made as a Message shows as it is, in English."""
        if isinstance(text, BaseException):
            text = text_of(text)
        if isinstance(text, dict):
            text = stored(text)
        if not isinstance(text, Message):
            return "" if text is None else str(text)
        values = {k: self.message(v) if isinstance(v, Message) else v for k, v in text.values.items()}
        return translate(self.lang, text.template, **values)


english = Translator()


def _from_tag(tag: str) -> str | None:
    """The language of one Accept-Language tag, or None when we have none like it."""
    parts = tag.lower().split("-")
    if parts[0] == "en":
        return "en"
    if parts[0] == "zh":
        return "zh-Hant" if any(p in _TRADITIONAL_REGIONS for p in parts[1:]) else "zh-Hans"
    return None


def language_for(request: gr.Request | None) -> str:
    """The language a request asks for: the one picked on the page (a cookie), else the browser's."""
    if request is None:
        return "en"
    chosen = (getattr(request, "cookies", None) or {}).get(COOKIE)
    if chosen in LANGUAGES:
        return chosen
    header = (getattr(request, "headers", None) or {}).get("accept-language", "")
    wanted = []
    for position, item in enumerate(header.replace(" ", "").split(",")):
        tag, _, q = item.partition(";q=")
        try:
            wanted.append((-float(q or 1), position, tag))
        except ValueError:
            continue  # a malformed weight: skip that language
    for *_, tag in sorted(wanted):  # most wanted first; the first one we have wins
        if found := _from_tag(tag):
            return found
    return "en"


def translator(request: gr.Request | None) -> Translator:
    return Translator(language_for(request))


# Props whose text is words for people, whatever the component; a Markdown's or a Button's value is too.
TEXT_PROPS = ("label", "info", "placeholder", "title", "x_title", "y_title", "color_title")
SHOWN_VALUE = (gr.Markdown, gr.Button)


class Labels:
    """The components built with fixed English text, to show in another language when asked.

    `labels.add(gr.Button("Save dataset"))` registers a component with the English it was built with;
    choices=True also translates its (label, value) choices, for pickers whose choices never change."""

    def __init__(self, language: gr.Dropdown):
        self.language = language  # the page's language picker, for parts built again in a new language
        self.components: list[gr.components.Component] = []
        self._english: list[dict] = []

    def add(self, component, choices: bool = False):
        english = {p: getattr(component, p) for p in TEXT_PROPS if isinstance(getattr(component, p, None), str)}
        if isinstance(component, SHOWN_VALUE) and isinstance(component.value, str):
            english["value"] = component.value
        if choices:
            english["choices"] = list(component.choices)
        self.components.append(component)
        self._english.append(english)
        return component

    def relabel(self, lang: str) -> list:
        """One update per registered component, in the order of `components`."""
        t = Translator(lang)
        return [gr.update(**{prop: [(t(label), value) for label, value in text] if prop == "choices" else t(text)
                             for prop, text in english.items()})
                for english in self._english]
