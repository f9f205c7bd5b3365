"""Chat answers from the pool: the chat template, sampling settings, a stop button, and token streaming for
one answer, or for several answers side by side generated as one batch."""
from __future__ import annotations

import copy
import queue
import threading
import time
from dataclasses import asdict, dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer
from transformers.generation.streamers import BaseStreamer

from ..data.templating import FALLBACK_TEMPLATE
from ..messages import Message
from ..models import free_memory
from . import routing
from .pool import ModelPool

_DONE = object()


class ChatError(ValueError):
    """A conversation that cannot be answered as given; the message says what to change."""


@dataclass
class GenerationSettings:
    temperature: float = 0.7  # 0 = greedy: always the most likely next token
    top_p: float = 0.9
    max_new_tokens: int = 256
    repetition_penalty: float = 1.0

    _LIMITS = {"temperature": (0.0, 2.0), "top_p": (0.01, 1.0), "max_new_tokens": (1, 8192),
               "repetition_penalty": (1.0, 2.0)}

    def validate(self) -> "GenerationSettings":
        errors = [Message("{field} must be between {low:g} and {high:g} (got {value!r})", field=name, low=low,
                          high=high, value=getattr(self, name))
                  for name, (low, high) in self._LIMITS.items() if not low <= getattr(self, name) <= high]
        if errors:
            raise ChatError(Message.joined("; ", errors))
        return self

    def generation_config(self, defaults, eos_ids: list[int], pad_id: int | None):
        """The model's own generation config with these settings on top."""
        config = copy.deepcopy(defaults)
        sampling = self.temperature > 0
        # Greedy decoding ignores the sampling knobs; clearing them keeps transformers from warning about them.
        knobs = {"temperature": self.temperature, "top_p": self.top_p} if sampling else \
            {"temperature": None, "top_p": None, "top_k": None}
        config.update(do_sample=sampling, max_new_tokens=int(self.max_new_tokens),
                      repetition_penalty=self.repetition_penalty, eos_token_id=eos_ids, pad_token_id=pad_id, **knobs)
        return config


@dataclass
class Row:
    """One answer to generate: which adapter (a folder; None for the base model) and the conversation; or, with
    gguf (an exported .gguf file), llama.cpp running that file instead of the pool's model."""
    adapter: str | None
    messages: list[dict]
    gguf: str | None = None


@dataclass
class Answer:
    text: str
    adapter: str | None  # the adapter folder; None for the base model
    tokens: int  # tokens in the answer
    first_token_s: float  # from the request to the first token: waiting, loading and reading the prompt
    tokens_per_s: float  # writing speed after the first token
    total_s: float  # from the request to the last token
    adapter_load_s: float  # time this request spent attaching its adapter; 0 when it was already attached
    adapter_cached: bool | None  # whether the adapter was already attached (None for the base model)
    waited_s: float  # time spent waiting for a free generation slot
    finish: str  # "end": the model ended its answer; "length": max_new_tokens reached; "stopped": stop pressed
    warning: str = ""
    gguf: str | None = None  # the GGUF file llama.cpp answered with, if it was one

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def conversation(prompt: str, history: list[dict] = (), system: str = "") -> list[dict]:
    """Messages for the chat template: the system prompt, the earlier turns ({"role": "user"|"assistant",
    "content": ...} as Gradio's Chatbot hands them over), then the new message."""
    if not prompt or not prompt.strip():
        raise ChatError(Message("Type a message first."))
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    for turn in history:
        if turn.get("role") not in ("user", "assistant"):
            raise ChatError(Message("A chat history turn has role {role!r}; only 'user' and 'assistant' turns can be "
                                    "replayed.", role=turn.get("role")))
        messages.append({"role": turn["role"], "content": _text(turn.get("content"))})
    messages.append({"role": "user", "content": prompt})
    return messages


def _text(content) -> str:
    """A turn's text. Gradio 6's Chatbot hands content back as a list of parts, {"type": "text", "text": ...}
    among them; files and other parts hold nothing a language model reads."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text") or ""
    if isinstance(content, (list, tuple)):
        return "\n".join(text for text in map(_text, content) if text)
    return ""


def render(tokenizer, messages: list[dict]) -> str:
    """The prompt text, laid out the way the model was trained: its chat template, or the studio's
    fallback template for models without one (the same one training used)."""
    template = None if tokenizer.chat_template else FALLBACK_TEMPLATE
    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=True)
    except Exception as e:  # noqa: BLE001 - a model's template is foreign code; any failure means the same
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ChatError(Message("The model's chat template refused this conversation ({reason}). Some models accept "
                                "no system prompt: try without one.", reason=reason)) from None


class ChatStream:
    """Answers being generated in a background thread. Iterate it for text as it is written: each item is
    a list with, per row, the text added since the previous item ('' when that row added nothing). After
    the iteration, .answers holds each row's full Answer. stop(), or leaving the iteration before its end,
    ends every row early."""

    def __init__(self, pool: ModelPool, model_path: str, rows: list[Row], settings: GenerationSettings | None = None,
                 quantization: str = "auto", stop_event: threading.Event | None = None):
        if not rows:
            raise ChatError(Message("Nothing to answer: no rows given."))
        self.rows = rows
        self.settings = (settings or GenerationSettings()).validate()
        self.answers: list[Answer] = []
        self.stop_event = stop_event or threading.Event()
        self._pool, self._model_path, self._quantization = pool, model_path, quantization
        self._pieces: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._finished = False
        self._requested = time.perf_counter()
        self._thread = threading.Thread(target=self._work, name="chat-generate", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def __iter__(self):
        try:
            while not self._finished:
                deltas, item = [""] * len(self.rows), self._pieces.get()
                while item is not _DONE:  # take everything already written, so rows stream side by side
                    row, text = item
                    deltas[row] += text
                    try:
                        item = self._pieces.get_nowait()
                    except queue.Empty:
                        break
                self._finished = item is _DONE
                if any(deltas):
                    yield deltas
        finally:
            if not self._finished:  # the reader left (a closed browser tab): stop writing for nobody
                self.stop()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def collect(self) -> list[Answer]:
        """Wait for every answer and return them."""
        for _ in self:
            pass
        return self.answers

    def _work(self) -> None:
        try:
            answers = {}
            pooled = [i for i, row in enumerate(self.rows) if row.gguf is None]
            if pooled:
                with self._pool.session(self._model_path, self._quantization,
                                        [self.rows[i].adapter for i in pooled]) as session:
                    answers.update(zip(pooled, self._generate(session, pooled)))
            for i, row in enumerate(self.rows):  # after the pool's batch, which is the quicker on a GPU
                if row.gguf is not None:
                    from .gguf import gguf_answer

                    answers[i] = gguf_answer(row.gguf, row.messages, self.settings, self.stop_event,
                                             lambda text, i=i: self._pieces.put((i, text)), self._requested)
            self.answers = [answers[i] for i in range(len(self.rows))]
        except torch.OutOfMemoryError:
            self._error = ChatError(Message(
                "The GPU ran out of memory for this answer. Ask for a shorter answer, choose 4bit precision, untick "
                "side by side, or wait until the training jobs finish, then send the message again."))
            free_memory()
        except BaseException as e:  # noqa: BLE001 - handed to the iterating thread, which raises it
            self._error = e
        finally:
            self._pieces.put(_DONE)

    def _generate(self, session, rows: list[int]) -> list[Answer]:
        """One batch for the rows numbered `rows`, streamed under their numbers; their Answers."""
        tokenizer, model = session.base.tokenizer, session.base.model
        # The template writes the special tokens itself; adding them again would double them.
        ids = [tokenizer(render(tokenizer, self.rows[i].messages), add_special_tokens=False)["input_ids"]
               for i in rows]
        batch = tokenizer.pad({"input_ids": ids}, padding=True, padding_side="left", return_tensors="pt")
        batch = batch.to(model.device)
        ends = eos_ids(model, tokenizer)
        clock = _StopAndClock(self.stop_event)
        with routing.route(session.names):
            output = model.generate(**batch, streamer=_RowStreamer(tokenizer, rows, ends, self._pieces),
                                    generation_config=self.settings.generation_config(
                                        model.generation_config, ends, tokenizer.pad_token_id),
                                    stopping_criteria=StoppingCriteriaList([clock]))
        new_tokens = output[:, batch["input_ids"].shape[1]:].tolist()
        return [self._answer(i, tokens, ends, clock, session, tokenizer) for i, tokens in enumerate(new_tokens)]

    def _answer(self, i: int, tokens: list[int], eos_ids: list[int], clock, session, tokenizer) -> Answer:
        ended = next((k for k, t in enumerate(tokens) if t in eos_ids), None)
        tokens = tokens if ended is None else tokens[:ended]
        finish = "end" if ended is not None else "stopped" if self.stop_event.is_set() else "length"
        times = clock.times[:max(1, len(tokens))]
        writing_s = times[-1] - times[0]
        info = session.adapters[i]
        return Answer(
            text=tokenizer.decode(tokens, skip_special_tokens=True),
            adapter=str(info.path) if info else None,
            tokens=len(tokens),
            first_token_s=times[0] - self._requested,
            tokens_per_s=(len(tokens) - 1) / writing_s if writing_s > 0 else 0.0,
            total_s=times[-1] - self._requested,
            adapter_load_s=info.load_s if info and session.loaded_now[i] else 0.0,
            adapter_cached=(not session.loaded_now[i]) if info else None,
            waited_s=session.waited_s,
            finish=finish,
            warning=info.warning if info else "")


def chat(pool: ModelPool, model_path: str, prompt: str, *, adapter: str | None = None, history: list[dict] = (),
         system: str = "", settings: GenerationSettings | None = None, quantization: str = "auto",
         stop_event: threading.Event | None = None) -> ChatStream:
    """One answer, from the adapter (a folder) or, with adapter=None, from the base model."""
    return ChatStream(pool, model_path, [Row(adapter, conversation(prompt, history, system))], settings,
                      quantization, stop_event)


def compare(pool: ModelPool, model_path: str, prompt: str, *, left: str | None = None, right: str | None = None,
            left_history: list[dict] = (), right_history: list[dict] = (), system: str = "",
            settings: GenerationSettings | None = None, quantization: str = "auto",
            stop_event: threading.Event | None = None) -> ChatStream:
    """Two answers to the same message side by side, in one batch on one copy of the base model: left and
    right are adapter folders, None for the base model. Each side keeps its own history."""
    return ChatStream(pool, model_path, [Row(left, conversation(prompt, left_history, system)),
                                         Row(right, conversation(prompt, right_history, system))],
                      settings, quantization, stop_event)


def eos_ids(model, tokenizer) -> list[int]:
    """The tokens that end an answer: the model's configured ones and the tokenizer's end of text."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [] if configured is None else [configured])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


class _StopAndClock(StoppingCriteria):
    """Ends generation once the stop event is set; notes when each step's tokens arrived."""

    def __init__(self, stop_event: threading.Event):
        self.stop_event = stop_event
        self.times: list[float] = []

    def __call__(self, input_ids, scores, **kwargs):
        self.times.append(time.perf_counter())
        return torch.full((input_ids.shape[0],), self.stop_event.is_set(), dtype=torch.bool, device=input_ids.device)


class _RowText(TextStreamer):
    """transformers' word-by-word detokeniser for one row; finished pieces go to the shared queue."""

    def __init__(self, tokenizer, row: int, pieces: queue.Queue):
        super().__init__(tokenizer, skip_special_tokens=True)
        self.row, self.pieces = row, pieces

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.pieces.put((self.row, text))


class _RowStreamer(BaseStreamer):
    """Splits each step of a batched generate into its rows; a row that has ended is not fed the padding
    that generate appends to it while the other rows go on. One answer is a batch of one row, so it takes
    the same path: TextIteratorStreamer is TextStreamer with a queue of its own, and the rows of a batch
    need one shared queue to stream side by side."""

    def __init__(self, tokenizer, rows: list[int], eos_ids: list[int], pieces: queue.Queue):
        self._rows = [_RowText(tokenizer, row, pieces) for row in rows]  # streamed under the ChatStream's numbers
        self._open = [True] * len(rows)
        self._eos = set(eos_ids)
        self._prompt = True

    def put(self, value) -> None:
        if self._prompt:  # generate hands over the prompt first
            self._prompt = False
            return
        for i, token in enumerate(value.tolist()):
            if not self._open[i]:
                continue
            if token in self._eos:
                self._open[i] = False
                self._rows[i].end()
            else:
                self._rows[i].put(value[i:i + 1])

    def end(self) -> None:
        for i, row in enumerate(self._rows):
            if self._open[i]:
                self._open[i] = False
                row.end()
