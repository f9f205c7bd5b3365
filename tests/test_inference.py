"""The chat engine: pooled bases and adapters, answers equal to plain transformers/peft, side by side in one
batch, stopping, and many users at once while adapters come and go."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

from studio.inference import (AdapterError, ChatError, GenerationSettings, ModelPool, chat, compare, conversation,
                              render)
from studio.inference import pool as pool_module

REPO = Path(__file__).resolve().parent.parent
PROMPT = "Tell me a story about a cat."
TOKENS = 10
GREEDY = GenerationSettings(temperature=0, max_new_tokens=TOKENS)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_path(embedded_model_dir) -> str:
    return str(embedded_model_dir)


@pytest.fixture(scope="module")
def adapters(model_path, tmp_path_factory) -> list[str]:
    """Two LoRA adapters with random non-zero weights (seeds 1 and 2), so their answers differ from the base."""
    from peft import LoraConfig, get_peft_model

    from studio.models import load_base_model

    model, folders = load_base_model(model_path, "none"), []
    for seed in (1, 2):
        torch.manual_seed(seed)
        peft = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        folder = tmp_path_factory.mktemp(f"adapter-seed{seed}")
        peft.save_pretrained(folder)
        model = peft.unload()
        folders.append(str(folder))
    return folders


def plain_answer(model, tokenizer, messages, max_new_tokens=TOKENS) -> str:
    """A greedy answer straight from transformers, as a reference."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def reference(model_path, adapters, tokenizer) -> dict:
    """Answers to PROMPT from a freshly loaded plain base, and from plain peft with each adapter."""
    from peft import PeftModel

    from studio.models import load_base_model

    messages = [{"role": "user", "content": PROMPT}]
    base = load_base_model(model_path, "none")
    answers = {None: plain_answer(base, tokenizer, messages)}
    peft = PeftModel.from_pretrained(base, adapters[0])
    answers[adapters[0]] = plain_answer(peft, tokenizer, messages)
    peft.load_adapter(adapters[1], adapter_name="second")
    peft.set_adapter("second")
    answers[adapters[1]] = plain_answer(peft, tokenizer, messages)
    assert len(set(answers.values())) == 3, "the test adapters must change the answer"
    return answers


@pytest.fixture(scope="module")
def pool() -> ModelPool:
    return ModelPool(max_bases=1, max_adapters=4, max_concurrent=2)


@pytest.fixture()
def count_base_loads(monkeypatch) -> list:
    loads = []
    real = pool_module.load_base_model

    def counting(path, quantization="4bit", *args, **kwargs):
        loads.append((path, quantization))
        return real(path, quantization, *args, **kwargs)

    monkeypatch.setattr(pool_module, "load_base_model", counting)
    return loads


def answer(pool, model_path, adapter=None, **kwargs):
    return chat(pool, model_path, PROMPT, adapter=adapter, settings=GREEDY, quantization="none", **kwargs).collect()[0]


# ---- the pool ----

@pytest.fixture(scope="module")
def tiny_model_dir(tokenizer, tmp_path_factory) -> Path:
    """A small random Llama with the embedded model's tokenizer: quick to load, for the pool's bookkeeping."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-model")
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=2, vocab_size=len(tokenizer),
                                 tie_word_embeddings=True)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_pool_reuses_a_loaded_base_and_evicts_the_least_recently_used(tiny_model_dir, tmp_path, count_base_loads):
    # Three names for the same weights are three pool entries.
    a, b, c = (tmp_path / name for name in "abc")
    for link in (a, b, c):
        link.symlink_to(tiny_model_dir, target_is_directory=True)
    pool = ModelPool(max_bases=2)
    first_a = pool.base(str(a), "none")
    assert pool.base(str(a), "none") is first_a
    first_b = pool.base(str(b), "none")
    pool.base(str(a), "none")  # a is now the most recently used
    first_c = pool.base(str(c), "none")
    assert first_b.closed and first_b.model is None
    assert pool.base(str(a), "none") is first_a and not first_a.closed
    assert pool.base(str(c), "none") is first_c and not first_c.closed  # both kept, neither loaded again
    assert len(count_base_loads) == 3


def test_pools_in_one_process_never_load_at_once(tiny_model_dir, tmp_path):
    # Two models loading at once in one process come out broken (the tied output layer left unset), so
    # two pools (say, two users' first requests for different models) must take turns.
    links = []
    for name in "ab":
        links.append(tmp_path / name)
        links[-1].symlink_to(tiny_model_dir, target_is_directory=True)
    broken = []

    def load_repeatedly(pool):
        for i in range(2):
            model = pool.base(str(links[i % 2]), "none").model  # max_bases=1: every call loads
            if model.lm_head.weight is not model.model.embed_tokens.weight:
                broken.append(model)

    threads = [threading.Thread(target=load_repeatedly, args=(ModelPool(),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not broken


def test_auto_quantization_fits_the_machine(model_path, monkeypatch):
    from studio.inference import choose_quantization

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_quantization(model_path, "auto") == "none"
    # On a GPU: 16-bit weights of this 135M-parameter model take about 270 MB.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (10 * 2**30, 80 * 2**30))
    assert choose_quantization(model_path, "auto") == "none"
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (500 * 2**20, 80 * 2**30))
    assert choose_quantization(model_path, "auto") == "4bit"
    assert choose_quantization(model_path, "8bit") == "8bit"
    with pytest.raises(ValueError, match="quantization must be one of"):
        choose_quantization(model_path, "3bit")


def test_switching_cached_adapters_does_not_reload_anything(model_path, adapters, tmp_path, count_base_loads):
    pool = ModelPool(max_adapters=2)
    seen = []
    for adapter in (adapters[0], adapters[1], adapters[0], adapters[1], None):
        with pool.session(model_path, "none", [adapter]) as session:
            seen.append(session.loaded_now[0])
            base = session.base
    assert seen == [True, True, False, False, False]
    assert len(count_base_loads) == 1
    assert all(info.load_s > 0 for info in base.adapters())

    # A third adapter pushes out the least recently used one (adapters[0]), from the pool and from peft.
    third = shutil.copytree(adapters[0], tmp_path / "third")
    with pool.session(model_path, "none", [str(third)]) as session:
        third_name = session.names[0]
    assert [str(info.path) for info in base.adapters()] == [adapters[1], str(third)]
    assert set(base.model.peft_config) == {info.slot for info in base.adapters()}
    assert third_name in base.model.peft_config
    assert len(count_base_loads) == 1


def test_a_full_pool_swaps_a_new_adapter_into_the_layers_of_an_idle_one(model_path, adapters, reference, tokenizer,
                                                                        tmp_path):
    """With no room left, an adapter of the same layers and rank takes over the least recently used idle
    adapter's LoRA layers (peft's hot-swap, its own alpha included) instead of new layers being built; one
    of another layout gets layers of its own."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from studio.models import load_base_model

    pool = ModelPool(max_adapters=1)
    assert answer(pool, model_path, adapters[0]).text == reference[adapters[0]]
    base = pool.base(model_path, "none")
    [first] = base.adapters()
    assert answer(pool, model_path, adapters[1]).text == reference[adapters[1]]
    [held] = base.adapters()
    assert held.path == Path(adapters[1]) and held.slot == first.slot  # in the first adapter's layers
    assert list(base.model.peft_config) == [held.slot]
    assert answer(pool, model_path, adapters[0]).text == reference[adapters[0]]

    louder = edited_copy(adapters[1], tmp_path / "louder", lora_alpha=64)  # scaling 8, where the others have 1
    plain = PeftModel.from_pretrained(load_base_model(model_path, "none"), louder)
    louder_answer = answer(pool, model_path, louder).text
    assert louder_answer == plain_answer(plain, tokenizer, [{"role": "user", "content": PROMPT}])
    assert louder_answer != reference[adapters[1]]
    assert list(base.model.peft_config) == [held.slot]

    smaller = get_peft_model(load_base_model(model_path, "none"), LoraConfig(r=4, target_modules=["q_proj"]))
    smaller.save_pretrained(tmp_path / "smaller")
    answer(pool, model_path, str(tmp_path / "smaller"))
    [other] = base.adapters()
    assert other.slot != first.slot and list(base.model.peft_config) == [other.slot]


def test_plain_lora_adapters_are_loaded_without_peft_walking_the_model(model_path, adapters, reference, tokenizer,
                                                                       tmp_path, monkeypatch):
    """Adapters of plain LoRA matrices get their tensors put into their layers directly, and beside an attached
    adapter with LoRA layers in exactly the same modules, into those layers (their own alpha; dropout off in
    chat). Answers equal plain peft's. peft's load_adapter still loads an adapter aimed at other modules,
    and one with a rank pattern."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from studio.models import load_base_model

    louder = edited_copy(adapters[1], tmp_path / "louder", lora_alpha=64, lora_dropout=0.3)
    plain = PeftModel.from_pretrained(load_base_model(model_path, "none"), louder)
    louder_reference = plain_answer(plain.eval(), tokenizer, [{"role": "user", "content": PROMPT}])
    assert louder_reference != reference[adapters[1]]
    peft_loads = []
    real_load = PeftModel.load_adapter
    monkeypatch.setattr(PeftModel, "load_adapter", lambda self, path, *args, **kwargs:
                        peft_loads.append(str(path)) or real_load(self, path, *args, **kwargs))
    pool = ModelPool(max_adapters=5)
    assert answer(pool, model_path, adapters[0]).text == reference[adapters[0]]
    assert answer(pool, model_path, adapters[1]).text == reference[adapters[1]]
    assert answer(pool, model_path, louder).text == louder_reference
    assert peft_loads == []

    query_only = tmp_path / "query-only"
    get_peft_model(load_base_model(model_path, "none"), LoraConfig(r=8, target_modules=["q_proj"])) \
        .save_pretrained(query_only)
    patterned = edited_copy(adapters[0], tmp_path / "patterned", rank_pattern={"q_proj": 8})
    answer(pool, model_path, str(query_only))
    assert answer(pool, model_path, patterned).text == reference[adapters[0]]
    assert peft_loads == [str(query_only), patterned]
    base = pool.base(model_path, "none")
    assert set(base.model.peft_config) == {info.slot for info in base.adapters()}
    # The adapters loaded directly leave like any other when evicted.
    answer(pool, model_path, str(shutil.copytree(adapters[0], tmp_path / "sixth")))
    assert [info.path for info in base.adapters()][0] == Path(adapters[1])
    assert set(base.model.peft_config) == {info.slot for info in base.adapters()}
    assert answer(pool, model_path, louder).text == louder_reference


def test_an_adapter_loaded_again_never_takes_over_layers_that_hold_another(model_path, adapters, reference,
                                                                            tmp_path):
    """The first adapter is swapped out of its layers, which then hold a third one; loaded again while no place
    is free, it gets new layers, and the third keeps answering as itself."""
    from studio.inference.adapters import read_adapter

    first, second = adapters
    third = str(shutil.copytree(first, tmp_path / "third"))  # the same weights as the first, another adapter
    pool = ModelPool(max_adapters=2)
    for adapter in (first, second, third):  # the third takes over the first's layers
        answer(pool, model_path, adapter)
    base = pool.base(model_path, "none")
    with base.pinned([read_adapter(second), read_adapter(third)]):  # no idle place to take over
        assert answer(pool, model_path, first).text == reference[first]
    assert len(set(info.slot for info in base.adapters())) == len(base.adapters())
    assert answer(pool, model_path, third).text == reference[first]
    assert answer(pool, model_path, second).text == reference[second]


# ---- answers ----

def test_base_answer_with_adapters_attached_equals_a_plain_base(pool, model_path, adapters, reference):
    with pool.session(model_path, "none", adapters):  # both adapters attached to the pooled base
        pass
    result = answer(pool, model_path)
    assert result.text == reference[None]
    assert result.adapter is None and result.adapter_cached is None


def test_adapter_answers_equal_plain_peft(pool, model_path, adapters, reference):
    for adapter in adapters:
        stream = chat(pool, model_path, PROMPT, adapter=adapter, settings=GREEDY, quantization="none")
        streamed = "".join(deltas[0] for deltas in stream)
        result = stream.answers[0]
        assert result.text == reference[adapter] == streamed
        assert result.tokens == TOKENS and result.finish == "length"
        assert result.first_token_s > 0 and result.tokens_per_s > 0 and result.total_s >= result.first_token_s


def test_side_by_side_batch_equals_two_separate_answers(pool, model_path, adapters, reference):
    stream = compare(pool, model_path, PROMPT, left=None, right=adapters[0], settings=GREEDY, quantization="none")
    deltas = list(stream)
    assert any(left and right for left, right in deltas), "both answers stream at the same time"
    assert [a.text for a in stream.answers] == [reference[None], reference[adapters[0]]]
    assert ["".join(d[i] for d in deltas) for i in (0, 1)] == [reference[None], reference[adapters[0]]]

    # Adapter against adapter, each side with its own (different length) history: left padding at work.
    left_history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}]
    right_history = [{"role": "user", "content": "What is two plus two, and why is it four and not five?"},
                     {"role": "assistant", "content": "Two plus two is four: count two, then two more."}]
    both = compare(pool, model_path, PROMPT, left=adapters[0], right=adapters[1], left_history=left_history,
                   right_history=right_history, system="Answer briefly.", settings=GREEDY, quantization="none")
    separate = [chat(pool, model_path, PROMPT, adapter=adapter, history=history, system="Answer briefly.",
                     settings=GREEDY, quantization="none").collect()[0].text
                for adapter, history in ((adapters[0], left_history), (adapters[1], right_history))]
    assert [a.text for a in both.collect()] == separate


def test_stop_ends_the_answer_early(pool, model_path):
    stream = chat(pool, model_path, PROMPT, settings=GenerationSettings(temperature=0, max_new_tokens=200),
                  quantization="none")
    for _ in stream:
        stream.stop()
    result = stream.answers[0]
    assert result.finish == "stopped"
    assert 0 < result.tokens < 20

    # A reader that goes away (Gradio cancelling a closed tab's request) stops the answer too.
    abandoned = chat(pool, model_path, PROMPT, settings=GenerationSettings(temperature=0, max_new_tokens=200),
                     quantization="none")
    for _ in abandoned:
        break
    assert abandoned.collect()[0].finish == "stopped"


def test_sampling_settings(pool, model_path):
    from transformers import GenerationConfig

    greedy = GREEDY.generation_config(GenerationConfig(), [2], 2)
    sampled = GenerationSettings(temperature=0.8, top_p=0.5).generation_config(GenerationConfig(), [2], 2)
    assert (greedy.do_sample, greedy.temperature) == (False, None)
    assert (sampled.do_sample, sampled.temperature, sampled.top_p) == (True, 0.8, 0.5)
    result = chat(pool, model_path, PROMPT, settings=GenerationSettings(temperature=0.8, max_new_tokens=4),
                  quantization="none").collect()[0]
    assert 0 < result.tokens <= 4
    with pytest.raises(ChatError, match="temperature must be between 0 and 2"):
        GenerationSettings(temperature=3).validate()


def test_prompt_layout(tokenizer):
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    text = render(tokenizer, conversation("And now?", history, system="Be brief."))
    assert text.index("Be brief.") < text.index("Hi") < text.index("Hello!") < text.index("And now?")
    assert text.endswith("<|im_start|>assistant\n")
    # Gradio 6's Chatbot hands earlier turns back with their content as a list of parts.
    from_gradio = [{"role": "user", "content": [{"type": "text", "text": "Hi"}], "metadata": None},
                   {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}], "metadata": None}]
    assert render(tokenizer, conversation("And now?", from_gradio, system="Be brief.")) == text
    without_template = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    without_template.chat_template = None  # the fallback training uses for such models
    assert render(without_template, conversation("And now?")).endswith("### Assistant:\n")
    with pytest.raises(ChatError, match="Type a message"):
        conversation("   ")


# ---- many users ----

def test_concurrent_users_each_get_their_own_adapter(model_path, adapters, reference, tmp_path, monkeypatch):
    pool = ModelPool(max_adapters=2, max_concurrent=3)
    attaches = []  # adapters put into the model: into new layers, or into an evicted adapter's
    for method in ("_attach", "_swap_into"):
        real = getattr(pool_module.PooledBase, method)
        monkeypatch.setattr(pool_module.PooledBase, method, lambda self, *args, real=real:
                            attaches.append(args[-1].path) or real(self, *args))
    # Copies of an adapter are other adapters to the pool: loading them evicts the users' adapters.
    churn = [str(shutil.copytree(adapters[0], tmp_path / f"churn{i}")) for i in range(2)]
    results, errors, churn_rounds = {}, [], [0]
    start = threading.Barrier(4)

    def user(adapter):
        try:
            start.wait()
            # answer until the loader has churned three times, so answers and evictions really interleave
            while churn_rounds[0] < 3 or len(results.get(adapter, [])) < 2:
                results.setdefault(adapter, []).append(answer(pool, model_path, adapter).text)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    def loader():
        try:
            start.wait()
            while any(u.is_alive() for u in users):  # attach and evict for as long as the users are answered
                for adapter in churn:
                    with pool.session(model_path, "none", [adapter]):
                        pass
                churn_rounds[0] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    users = [threading.Thread(target=user, args=(a,)) for a in (None, *adapters)]
    threads = [*users, threading.Thread(target=loader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    assert set(results) == {None, *adapters}
    assert all(texts == [reference[adapter]] * len(texts) for adapter, texts in results.items())
    assert len(attaches) > 4  # adapters were evicted and attached again while the users were answered


def test_two_people_chatting_through_the_app_are_answered_at_once_each_with_their_own_adapter(
        workspace, embedded_model_dir, adapters, reference):
    from gradio_client import Client

    from app_server import GenerationsAtOnce, serving, with_embedded_model
    from studio.models import EMBEDDED_LABEL
    from studio.ui.chat_tab import BASE, UPLOADED

    for i, adapter in enumerate(adapters):  # in place before the app starts, so its adapter pickers offer them
        shutil.copytree(adapter, workspace.models / "uploaded-adapters" / f"person{i}")
    with serving(with_embedded_model(workspace, embedded_model_dir)) as studio:
        people = [Client(studio.url, verbose=False) for _ in adapters]

        def send(person: int):
            return people[person].submit(PROMPT, [], [], EMBEDDED_LABEL, "auto", BASE, f"{UPLOADED}person{person}",
                                          False, "", 0, 0.9, TOKENS, 1.0, api_name="/on_send")

        # First one after the other: attaching an adapter waits for the generations running on the model.
        firsts = [send(person).result() for person in range(len(people))]
        watch = GenerationsAtOnce(studio.pool)
        seconds = [job.result() for job in [send(person) for person in range(len(people))]]
    for answers in (firsts, seconds):
        assert [chat[-1]["content"][0]["text"] for _left, chat, *_stats in answers] == [reference[a] for a in adapters]
    assert watch.peak == 2


HOLD_S = 0.3


def test_generations_at_once_never_exceed_the_limit(pool, model_path, adapters, monkeypatch):
    base = pool.base(model_path, "none")
    running, peak, guard = [0], [0], threading.Lock()
    real_generate = base.model.generate

    def counting_generate(*args, **kwargs):
        with guard:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(HOLD_S)  # every generation holds its slot at least this long
            return real_generate(*args, **kwargs)
        finally:
            with guard:
                running[0] -= 1

    monkeypatch.setattr(base.model, "generate", counting_generate)
    settings = GenerationSettings(temperature=0, max_new_tokens=4)
    streams = [chat(pool, model_path, PROMPT, adapter=a, settings=settings, quantization="none")
               for a in (None, *adapters, None, adapters[0])]
    results = [s.collect()[0] for s in streams]
    assert peak[0] == pool.max_concurrent == 2
    # Two slots for five answers: three of them waited for a slot while an answer held it.
    assert sum(r.waited_s >= HOLD_S / 2 for r in results) >= len(results) - pool.max_concurrent


def test_running_out_of_gpu_memory_says_what_to_do(pool, model_path, monkeypatch):
    base = pool.base(model_path, "none")

    def out_of_memory(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(base.model, "generate", out_of_memory)
    with pytest.raises(ChatError, match="ran out of memory") as refused:
        chat(pool, model_path, PROMPT, settings=GREEDY, quantization="none").collect()
    assert all(advice in str(refused.value) for advice in ("shorter answer", "4bit", "side by side", "training"))


# ---- uploaded adapters (the Chat tab) ----


def zipped(folder: Path, zip_path: Path, only: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for file in Path(folder).iterdir():
            if not only or file.name in only:
                archive.write(file, f"my-adapter/{file.name}")
    return zip_path


def test_an_uploaded_adapter_is_checked_and_kept_apart(workspace, adapters, tmp_path):
    from studio.inference import read_adapter
    from studio.models import EMBEDDED_LABEL
    from studio.ui.chat_tab import adapter_folder, base_model_of, store_upload
    from studio.ui.context import Studio

    studio = Studio(workspace, queue=None)
    upload = zipped(adapters[0], tmp_path / "adapter.zip")
    first_message, first = store_upload(studio, str(upload))
    second_message, second = store_upload(studio, str(upload))  # another person, the same file name
    assert "ready to chat with" in first_message and "ready to chat with" in second_message
    assert first != second and adapter_folder(studio, first) != adapter_folder(studio, second)
    assert read_adapter(adapter_folder(studio, first)).name and read_adapter(adapter_folder(studio, second)).name
    assert read_adapter(adapters[0]).base_model.endswith("SmolLM2-135M-Instruct")
    assert base_model_of(studio, first) == EMBEDDED_LABEL  # the embedded model, wherever it was trained
    bases = [("someone/other-model", "someone/other-model"), (str(tmp_path), str(tmp_path)),
             ("/home/someone/models/Other-7B", None)]  # the last: a folder on the machine it was trained on
    for i, (named, shown) in enumerate(bases):
        elsewhere = zipped(edited_copy(adapters[0], tmp_path / f"base{i}", base_model_name_or_path=named),
                           tmp_path / f"base{i}.zip")
        assert base_model_of(studio, store_upload(studio, str(elsewhere))[1]) == shown

    uploads = sorted(p.name for p in (workspace.models / "uploaded-adapters").iterdir())
    message, choice = store_upload(studio, str(zipped(adapters[0], tmp_path / "config-only.zip",
                                                      only=("adapter_config.json",))))
    assert choice is None and message.startswith("❌") and "no adapter weights" in message
    assert sorted(p.name for p in (workspace.models / "uploaded-adapters").iterdir()) == uploads  # nothing left

    damaged = tmp_path / "damaged.zip"
    data = bytearray(upload.read_bytes())
    weights_at = data.index(b"my-adapter/adapter_model.safetensors") + 200  # inside the weights' bytes
    data[weights_at:weights_at + 16] = bytes(16)  # the CRC no longer matches: zipfile.BadZipFile on reading
    damaged.write_bytes(bytes(data))
    message, choice = store_upload(studio, str(damaged))
    assert choice is None and message.startswith("❌ The zip could not be unpacked")
    assert sorted(p.name for p in (workspace.models / "uploaded-adapters").iterdir()) == uploads

    studio.max_upload_mb = 0.001
    message, choice = store_upload(studio, str(upload))
    assert choice is None and "adapter uploads here are limited to 0.001 MB" in message


# ---- wrong adapters ----

def test_an_uploaded_adapter_is_removed_by_the_person_who_uploaded_it_or_an_administrator(workspace, adapters,
                                                                                           tmp_path, monkeypatch):
    from studio.ui import chat_tab
    from studio.ui.chat_tab import UPLOAD_RECORD, adapter_choices, adapter_folder, remove_upload, store_upload
    from studio.ui.context import Studio

    studio = Studio(workspace, queue=None)
    upload = zipped(adapters[0], tmp_path / "adapter.zip")
    _message, anas = store_upload(studio, str(upload), owner="ana")
    _message, older = store_upload(studio, str(upload), owner="bo")
    (Path(adapter_folder(studio, older)) / UPLOAD_RECORD).unlink()  # uploaded before owners were recorded

    assert "Pick an uploaded adapter" in remove_upload(studio, None, "ana", False)[0]
    message, removed = remove_upload(studio, anas, "bo", False)
    assert not removed and "Only ana, who uploaded" in message and Path(adapter_folder(studio, anas)).exists()
    message, removed = remove_upload(studio, older, "bo", False)
    assert not removed and "Only an administrator" in message
    def refused(path):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patched:  # a folder the app may not delete: said, not claimed removed
        patched.setattr(chat_tab.shutil, "rmtree", refused)
        message, removed = remove_upload(studio, anas, "ana", False)
    assert not removed and "could not be removed (Permission denied)" in message and "administrator" in message
    assert remove_upload(studio, anas, "ana", False)[1] and not Path(adapter_folder(studio, anas)).exists()
    assert remove_upload(studio, older, "cy", True)[1]  # an administrator
    assert [value for _label, value in adapter_choices(studio)] == [adapter_choices(studio)[0][1]]  # the base alone


def edited_copy(adapter: str, folder: Path, **changes) -> str:
    shutil.copytree(adapter, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, **changes}))
    return str(folder)


def test_clear_errors_for_adapters_chat_cannot_use(pool, model_path, adapters, reference, tmp_path):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4, vocab_size=500))
    tiny.name_or_path = "someone/tiny-llama"
    get_peft_model(tiny, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "tiny")
    (tmp_path / "empty").mkdir()
    damaged = Path(edited_copy(adapters[0], tmp_path / "damaged"), "adapter_model.safetensors")
    damaged.write_bytes(damaged.read_bytes()[:200])
    incomplete = Path(edited_copy(adapters[0], tmp_path / "incomplete"), "adapter_model.safetensors")
    weights = load_file(incomplete)
    save_file({key: tensor for key, tensor in weights.items() if ".layers.0." not in key}, incomplete)
    cases = {
        str(damaged.parent): "is damaged",
        str(incomplete.parent): "lacks some of the layers",
        edited_copy(adapters[0], tmp_path / "bias", lora_bias=True): "lacks some of the layers",
        edited_copy(adapters[0], tmp_path / "rank", r=4): "other sizes than adapter_config.json says",
        str(tmp_path / "empty"): "not a peft adapter folder",
        str(tmp_path / "missing"): "No adapter folder",
        str(tmp_path / "tiny"): "does not fit SmolLM2-135M-Instruct.*trained for 'someone/tiny-llama'",
        edited_copy(adapters[0], tmp_path / "dora", use_dora=True): "DoRA adapter",
        edited_copy(adapters[0], tmp_path / "ia3", peft_type="IA3"): "adapter of kind IA3",
    }
    for folder, message in cases.items():
        with pytest.raises(AdapterError, match=message):
            answer(pool, model_path, folder)
    for folder, message in ((incomplete.parent, "lacks some of the layers"), (tmp_path / "rank", "other sizes")):
        with pytest.raises(AdapterError, match=message):  # as the first adapter on a base
            answer(ModelPool(), model_path, str(folder))
    # Same sizes but another base model named: it loads, with a warning for the user.
    other = edited_copy(adapters[0], tmp_path / "other", base_model_name_or_path="someone/other-model")
    with pool.session(model_path, "none", [other]) as session:
        assert "trained on 'someone/other-model'" in session.adapters[0].warning
    # The refused adapters left the shared model as it was.
    assert answer(pool, model_path).text == reference[None]
    assert answer(pool, model_path, adapters[0]).text == reference[adapters[0]]


# ---- the command line ----

def run_cli(argv: list[str], workspace) -> tuple[int, str, str]:
    """python -m studio ... in a child process, as people run it."""
    command = [sys.executable, "-m", "studio", "--workspace", str(workspace.root), *argv]
    # One torch thread, as in this process (see one_torch_thread).
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    return done.returncode, done.stdout, done.stderr


def test_cli_compare_json(workspace, model_path, adapters, reference):
    from studio.config import TrainConfig
    from studio.runs import create_run

    run = create_run(workspace, TrainConfig(model=model_path, dataset="x"))
    shutil.copytree(adapters[0], run.adapter_dir)
    code, out, err = run_cli(["chat", "--run", str(run.path), "--prompt", PROMPT, "--compare", "--json",
                              "--max-new-tokens", str(TOKENS), "--quantization", "none"], workspace)
    assert code == 0, err
    result = json.loads(out)
    assert (result["base"], result["adapter"]) == (reference[None], reference[adapters[0]])
    assert result["timing"]["adapter"]["tokens"] == TOKENS


def test_cli_errors_are_one_line_and_status_2(workspace, tmp_path):
    code, out, err = run_cli(["chat", "--adapter", str(tmp_path), "--prompt", "hi"], workspace)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error:") and "not a peft adapter folder" in err
