"""Answers from an exported GGUF file, run by llama.cpp (llama-cpp-python) with the chat template stored in the file:
what someone gets from it in LM Studio or Ollama, put beside the adapter it was made from in the Chat tab.

One GGUF model is kept loaded (the last one asked for), and it writes one answer at a time: a llama.cpp context
holds one conversation's state, and the CPU it runs on is shared with everything else anyway.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Callable

from .generate import Answer, GenerationSettings

_N_CTX = 4096  # the longest conversation a GGUF answers here; the file's own context may be longer


class LoadedGguf:
    def __init__(self):
        self._lock = threading.Lock()
        self._file: tuple[str, float] | None = None  # the path and modification time of the file loaded
        self._llm = None

    @contextmanager
    def use(self, path: str):
        """The llama.cpp model of the file at `path`, for this caller alone; loaded unless it is the one already
        loaded (a file exported again since is loaded again)."""
        with self._lock:
            file = (path, os.stat(path).st_mtime)
            if self._file != file:
                if self._llm is not None:
                    self._llm.close()
                self._llm = self._file = None  # a load that fails leaves nothing half there
                self._llm, self._file = _load(path), file
            yield self._llm


LOADED = LoadedGguf()


def _load(path: str):
    from llama_cpp import Llama

    from ..export.gguf_check import llama_threads

    threads = llama_threads()
    llm = Llama(path, n_ctx=_N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False)
    if "tokenizer.chat_template" in llm.metadata:
        llm.chat_format = "chat_template.default"  # the file's own template, as LM Studio uses it, never a guess
    return llm


def gguf_answer(path: str, messages: list[dict], settings: GenerationSettings, stop_event: threading.Event,
                put: Callable[[str], None], requested: float) -> Answer:
    """Stream llama.cpp's answer to `messages` through put(text); the Answer once it ends."""
    times, pieces, finish = [], [], "length"
    with LOADED.use(path) as llm:
        stream = llm.create_chat_completion(messages, stream=True, max_tokens=int(settings.max_new_tokens),
                                            temperature=settings.temperature, top_p=settings.top_p,
                                            repeat_penalty=settings.repetition_penalty)
        for chunk in stream:
            choice = chunk["choices"][0]
            text = choice["delta"].get("content") or ""
            if text:
                times.append(time.perf_counter())
                pieces.append(text)
                put(text)
            if choice.get("finish_reason"):
                finish = "end" if choice["finish_reason"] == "stop" else "length"
            if stop_event.is_set():
                finish = "stopped"
                break
        stream.close()
    times = times or [time.perf_counter()]
    writing_s = times[-1] - times[0]
    return Answer(text="".join(pieces).strip(), adapter=None, tokens=len(pieces), first_token_s=times[0] - requested,
                  tokens_per_s=(len(pieces) - 1) / writing_s if writing_s > 0 else 0.0,
                  total_s=times[-1] - requested, adapter_load_s=0.0, adapter_cached=None, waited_s=0.0,
                  finish=finish, gguf=path)
