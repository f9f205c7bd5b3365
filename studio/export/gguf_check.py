"""The GGUF check: llama.cpp itself (through llama-cpp-python) loads the file and is compared with the merged model
the file was made from, before the file is offered.

- Next tokens: both read the same few hundred token positions of validation text (the examples the run held out,
  else its first training examples, then a few fixed conversations); at each position, do both pick the same next
  token? A 16-bit file must agree almost everywhere; a quantised one loses some near-ties, and must stay above the
  floor stated for its type.
- Tokens: llama.cpp splits those texts into the same tokens as the model's tokenizer.
- Chat template: the template stored in the GGUF, rendered as llama-cpp-python renders it, gives the same tokens as
  the tokenizer's template, for conversations with and without a system prompt and with earlier turns.
- Modelfile: the TEMPLATE written for Ollama gives the same tokens too, tokenized as Ollama has llama.cpp do it.
- An answer: llama.cpp answers a held-out prompt (greedy), shown beside the merged model's answer.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..evaluation.report_card import Example
from ..messages import Message
from .modelfile import ChatPieces

# Share of positions where the GGUF must pick the merged model's next token. Quantising moves near-ties: measured on
# the embedded model (docs/benchmarks.md, "GGUF export"), 16-bit files agree at 100%, q8_0 at 96-97% and q4_k_m at
# 82-90%, while a file of another model (the adapter's changes lost) agrees at 57%.
FLOORS = {"f16": 0.98, "bf16": 0.98, "q8_0": 0.90, "q4_k_m": 0.75}
POSITIONS = 300  # enough that one flipped near-tie moves the agreement by a third of a point
_TEXT_TOKENS = 256  # per text, so that several examples share the positions
ANSWER_TOKENS = 32  # a sentence or two: enough to see the voice, quick on a CPU

# Read after the run's own examples when they are too few (or the dataset is gone): everyday questions and answers.
_FIXED = (
    ("Hello! Who are you?", "Hello! I am a small language model. I can answer questions, explain things and help "
                            "you write short texts."),
    ("Explain in two sentences why the sky is blue.", "Sunlight is scattered by the molecules of the air, and blue "
     "light is scattered much more than red light. So blue light reaches our eyes from every part of the sky."),
    ("Write a short Python function that reverses a string.", "def reverse(text):\n    return text[::-1]"),
    ("What should I pack for a weekend hike?", "Water, food, a warm layer, a rain jacket, a map, a small first-aid "
     "kit, sun cream and a charged phone. Good shoes matter most."),
)
_CONVERSATIONS = (  # for the template checks: no system prompt, a system prompt, earlier turns
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in one short sentence."},
     {"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a friendly tutor."}, {"role": "user", "content": "Hi!"},
     {"role": "assistant", "content": "Hello! What shall we learn today?"},
     {"role": "user", "content": "Fractions, please."}],
)


@dataclass(frozen=True)
class GgufCheck:
    quant: str
    agreement: float  # share of positions where the GGUF and the merged model pick the same next token
    positions: int
    same_tokens: bool  # llama.cpp splits the validation texts into the tokenizer's tokens
    chat_template: bool | None  # the GGUF's chat template renders like the tokenizer's; None: the model has none
    modelfile_template: bool | None  # the Modelfile's TEMPLATE does too, as Ollama uses it; None: none written
    prompt: str  # the held-out prompt both answered
    answer: str  # llama.cpp's answer
    merged_answer: str  # the merged model's answer

    @property
    def floor(self) -> float:
        return FLOORS[self.quant]

    @property
    def problems(self) -> list[Message]:
        found = []
        if self.agreement < self.floor:
            found.append(Message("the file picks the merged model's next token at only {agreement:.1%} of {positions} "
                                 "positions (at least {floor:.0%} is needed for {quant})", agreement=self.agreement,
                                 positions=self.positions, floor=self.floor, quant=self.quant))
        if not self.same_tokens:
            found.append(Message("llama.cpp splits text into other tokens than the model's tokenizer does"))
        if self.chat_template is False:
            found.append(Message("the chat template stored in the file lays conversations out differently from the "
                                 "model's own"))
        if not self.answer.strip():
            found.append(Message("llama.cpp gave an empty answer to the held-out prompt"))
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> Message:
        if not self.ok:
            return Message("FAILED: {problems}. This file is not offered: try q8_0 or 16-bit, or download the merged "
                           "model instead.", problems=Message.joined("; ", self.problems))
        return Message("OK: llama.cpp loads the {quant} file, picks the merged model's next token at {agreement:.1%} "
                       "of {positions} positions (floor {floor:.0%}) and reads the same tokens and chat layout.",
                       quant=self.quant, agreement=self.agreement, positions=self.positions, floor=self.floor)

    def to_dict(self) -> dict:
        return {**asdict(self), "floor": self.floor, "ok": self.ok, "verdict": self.verdict}

    @classmethod
    def from_dict(cls, record: dict) -> GgufCheck:
        return cls(**{f.name: record[f.name] for f in fields(cls)})


def check_gguf(gguf: Path, merged_dir: Path, quant: str, examples: list[Example],
               pieces: ChatPieces | None) -> GgufCheck:
    """Compare the GGUF file, run by llama.cpp, with the merged model folder it was made from. pieces: the chat
    template's pieces the Modelfile's TEMPLATE is written from, if any."""
    from ..models import load_tokenizer

    tokenizer = load_tokenizer(str(merged_dir))
    texts = _validation_texts(tokenizer, examples)
    token_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    read = [ids[:_TEXT_TOKENS] for ids in token_ids]
    prompt, prompt_ids = _prompt(tokenizer, examples)
    expected, merged_answer = _merged_model_reads(merged_dir, tokenizer, read, prompt_ids)

    llm = _load(gguf, n_ctx=max(map(len, read), default=0) + len(prompt_ids) + ANSWER_TOKENS)
    try:
        same_tokens = all(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == ids
                          for text, ids in zip(texts, token_ids))
        same = 0
        for ids, want in zip(read, expected):
            llm.reset()
            llm.eval(ids)
            same += sum(a == b for a, b in zip(llm.scores[:len(ids)].argmax(-1).tolist(), want))
        answer = llm.create_completion(prompt_ids, max_tokens=ANSWER_TOKENS, temperature=0.0,
                                       stop=[_token_text(llm, llm.token_eos())])["choices"][0]["text"].strip()
        chat_template = _chat_template_matches(llm, tokenizer)
        # Ollama has llama.cpp tokenize the rendered prompt with its special tokens, a beginning token included
        modelfile_template = None if pieces is None else all(
            llm.tokenize(pieces.render(messages).encode("utf-8"), add_bos=True, special=True)
            == _ids(tokenizer, messages) for messages in _CONVERSATIONS)
    finally:
        llm.close()
    positions = sum(map(len, read))
    return GgufCheck(quant, same / max(positions, 1), positions, same_tokens, chat_template, modelfile_template,
                     prompt, answer, merged_answer)


def _prompt(tokenizer, examples: list[Example]) -> tuple[str, list[int]]:
    """The held-out prompt both answer (the first one short enough), as its words and as the tokens read."""
    from ..inference.generate import render

    candidates = [e.prompt for e in examples] + [[{"role": "user", "content": _FIXED[0][0]}]]
    for prompt in candidates:
        ids = tokenizer(prompt if isinstance(prompt, str) else render(tokenizer, prompt),
                        add_special_tokens=False)["input_ids"]
        if len(ids) <= _TEXT_TOKENS or prompt is candidates[-1]:
            return (prompt if isinstance(prompt, str) else prompt[-1]["content"]), ids


def _merged_model_reads(merged_dir: Path, tokenizer, read: list[list[int]], prompt_ids: list[int]):
    """The merged model's next token at every position of `read`, and its greedy answer to the prompt."""
    import torch

    from ..models import free_memory, load_base_model

    model = load_base_model(str(merged_dir), quantization="none")
    try:
        device = model.get_input_embeddings().weight.device
        with torch.inference_mode():
            expected = [model(torch.tensor([ids], device=device)).logits[0].argmax(-1).tolist() for ids in read]
            prompt = torch.tensor([prompt_ids], device=device)
            output = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=ANSWER_TOKENS,
                                    do_sample=False, pad_token_id=tokenizer.pad_token_id)
        return expected, tokenizer.decode(output[0][len(prompt_ids):], skip_special_tokens=True).strip()
    finally:
        del model
        free_memory()


def _load(gguf: Path, n_ctx: int):
    from llama_cpp import Llama

    threads = llama_threads()
    return Llama(str(gguf), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, n_threads=threads, n_threads_batch=threads,
                 verbose=False)


def llama_threads() -> int:
    """Half the logical CPUs, as llama-cpp-python's default: llama.cpp's threads spin while they wait for each other,
    so hyper-threads, or cores other work is using, make more threads slower, not faster."""
    return max(1, (os.cpu_count() or 2) // 2)


def _validation_texts(tokenizer, examples: list[Example]) -> list[str]:
    """Whole examples as training laid them out (answers included: that is where training changed the model),
    then the fixed conversations, until they hold POSITIONS tokens."""
    from ..data.templating import render_record

    records = [{"text": e.prompt + e.expected} if isinstance(e.prompt, str) else
               {"messages": e.prompt + [{"role": "assistant", "content": e.expected}]} for e in examples]
    records += [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in _FIXED]
    texts, total = [], 0
    for record in records:
        texts.append(render_record(tokenizer, record).text)
        total += min(_TEXT_TOKENS, len(tokenizer(texts[-1], add_special_tokens=False)["input_ids"]))
        if total >= POSITIONS:
            break
    return texts


def _ids(tokenizer, messages: list[dict]) -> list[int]:
    """The tokens the model reads for a conversation: its chat template, or the studio's fallback it trained with."""
    from ..data.templating import FALLBACK_TEMPLATE

    return tokenizer.apply_chat_template(messages, chat_template=None if tokenizer.chat_template else
                                         FALLBACK_TEMPLATE, add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"]


def _chat_template_matches(llm, tokenizer) -> bool | None:
    """Does the GGUF's template, rendered as llama-cpp-python's chat does, give the tokenizer template's tokens?"""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    stored = llm.metadata.get("tokenizer.chat_template")
    if not tokenizer.chat_template:
        return None if not stored else False
    if not stored:
        return False
    formatter = Jinja2ChatFormatter(stored, eos_token=_token_text(llm, llm.token_eos()),
                                    bos_token=_token_text(llm, llm.token_bos()))
    try:
        return all(llm.tokenize(formatter(messages=messages).prompt.encode("utf-8"), add_bos=False, special=True)
                   == _ids(tokenizer, messages) for messages in _CONVERSATIONS)
    except Exception:  # noqa: BLE001 - a template that fails to render does not render the same
        return False


def _token_text(llm, token: int) -> str:
    return "" if token < 0 else llm.detokenize([token], special=True).decode("utf-8", errors="replace")
