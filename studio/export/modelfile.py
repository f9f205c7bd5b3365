"""The Ollama Modelfile of a GGUF export: FROM the file, a TEMPLATE that lays a conversation out as the model's own
chat template does, the tokens that end an answer, and the system prompt the dataset trained with.

Ollama's templates are Go templates, and a Jinja chat template cannot be translated into one line by line. So the
model's template is rendered on conversations whose contents are markers, and the text between the markers is what
the template writes around each turn (ChatML: "<|im_start|>user\\n" before a user turn, "<|im_end|>\\n<|im_start|>
assistant\\n" between it and the answer). The Go template writes those pieces around Ollama's .Messages. The GGUF
check then renders real conversations through both and compares the tokens (gguf_check.py); a template that does
something else, such as moving the system prompt into the first user turn, yields no pieces, and the Modelfile then
has no TEMPLATE: Ollama picks one itself from the chat template stored in the GGUF.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Contents no template changes: no spaces to strip, no markup, no capitals to fold.
_MARKERS = tuple(f"lorastudiomarker{i}" for i in range(5))

Render = Callable[[list[dict], bool], str]  # (messages, add_generation_prompt) -> text


@dataclass(frozen=True)
class ChatPieces:
    """What the chat template writes between the contents of a conversation's turns."""
    head_system: str  # before a first system message
    head_user: str  # before a first user message (with the default system prompt some templates add)
    system_user: str  # between the system message and the first user message
    user_assistant: str  # between a user message and the answer
    assistant_user: str  # between an answer and the next user message
    generation: str  # after the last user message: where the answer starts

    def without_start(self, start: str) -> ChatPieces:
        """The pieces less a text both heads begin with, such as a beginning-of-text token the runtime adds."""
        if not start or not (self.head_system.startswith(start) and self.head_user.startswith(start)):
            return self
        return ChatPieces(self.head_system[len(start):], self.head_user[len(start):], self.system_user,
                          self.user_assistant, self.assistant_user, self.generation)

    def render(self, messages: list[dict]) -> str:
        """The text Ollama makes of `messages` with go_template(self): the same steps, in Python."""
        out, previous = [], ""
        for message in messages:
            if not previous:
                out.append(self.head_system if message["role"] == "system" else self.head_user)
            elif message["role"] == "assistant":
                out.append(self.user_assistant)
            elif previous == "system":
                out.append(self.system_user)
            else:
                out.append(self.assistant_user)
            out.append(message["content"])
            previous = message["role"]
        if previous == "user":
            out.append(self.generation)
        return "".join(out)

    def go_template(self) -> str:
        """The Go template for Ollama. No trim markers ({{- or -}}): they would eat the pieces' own newlines."""
        return ('{{ $previous := "" }}{{ range .Messages }}'
                '{{ if eq $previous "" }}{{ if eq .Role "system" }}' + self.head_system
                + '{{ else }}' + self.head_user + '{{ end }}'
                '{{ else if eq .Role "assistant" }}' + self.user_assistant
                + '{{ else if eq $previous "system" }}' + self.system_user
                + '{{ else }}' + self.assistant_user + '{{ end }}'
                '{{ .Content }}{{ $previous = .Role }}{{ end }}'
                '{{ if eq $previous "user" }}' + self.generation + '{{ end }}')


def chat_pieces(render: Render) -> ChatPieces | None:
    """The pieces of the template that `render` applies, or None when it is not one piece per turn."""
    system, user, answer, again = _MARKERS[:4]
    try:
        with_system = _between(render([{"role": "system", "content": system}, {"role": "user", "content": user}],
                                      True), [system, user])
        turns = _between(render([{"role": "user", "content": user}, {"role": "assistant", "content": answer},
                                 {"role": "user", "content": again}], True), [user, answer, again])
    except Exception:  # noqa: BLE001 - a template may refuse a system message, or anything else: no pieces then
        return None
    if with_system is None or turns is None or with_system[-1] != turns[-1]:
        return None
    pieces = ChatPieces(with_system[0], turns[0], with_system[1], turns[1], turns[2], turns[3])
    # Text Go or the Modelfile would read as their own syntax cannot be written into either.
    if any(mark in piece for piece in vars(pieces).values() for mark in ("{{", "}}", '"""')):
        return None
    return pieces


def _between(text: str, markers: list[str]) -> list[str] | None:
    """The texts before, between and after the markers, each found once and in order; None otherwise."""
    pieces, rest = [], text
    for marker in markers:
        if text.count(marker) != 1 or marker not in rest:
            return None
        before, rest = rest.split(marker)
        pieces.append(before)
    return pieces + [rest]


def modelfile(gguf_name: str, pieces: ChatPieces | None, stops: list[str], system: str | None) -> str:
    """The Modelfile's text. Stops or a system prompt holding what the Modelfile cannot quote are left out."""
    lines = [f"FROM ./{gguf_name}"]
    if pieces:
        lines.append(f'TEMPLATE """{pieces.go_template()}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in stops if stop and '"' not in stop and "\n" not in stop]
    if system and '"""' not in system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"
