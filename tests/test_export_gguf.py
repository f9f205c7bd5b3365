"""GGUF export around llama.cpp: refusals before any work, the folders and zips, the Ollama Modelfile, the card, the
page's words and the command line. llama.cpp's conversion, quantisation and check stand in here; they run for real
on the journey's trained adapter in tests/test_journey.py (q8_0 and q4_k_m, loaded and run by llama.cpp)."""
import dataclasses
import json
import os
import shutil
import zipfile
from collections import namedtuple

import pytest

from studio.config import TrainConfig
from studio.export import ExportError, NotEnoughSpace
from studio.export.gguf import export_gguf, offered_ggufs, supported_architectures
from studio.export.gguf_check import FLOORS, GgufCheck
from studio.export.modelfile import chat_pieces
from studio.runs import create_run
from studio.workspace import Workspace, write_json
from test_export import DATASET, make_trained_run

SYSTEM = "You greet people by name, warmly and in one sentence."
PASSED = GgufCheck("q4_k_m", agreement=0.99, positions=312, same_tokens=True, chat_template=True,
                   modelfile_template=True, prompt="Say hello to Ada.", answer="Hello, Ada!", merged_answer="Hello!")
# The Modelfile TEMPLATE of the embedded model's ChatML template, as Ollama's Go templates write it.
CHATML = ('{{ $previous := "" }}{{ range .Messages }}{{ if eq $previous "" }}{{ if eq .Role "system" }}'
          '<|im_start|>system\n{{ else }}<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by '
          'Hugging Face<|im_end|>\n<|im_start|>user\n{{ end }}'
          '{{ else if eq .Role "assistant" }}<|im_end|>\n<|im_start|>assistant\n'
          '{{ else if eq $previous "system" }}<|im_end|>\n<|im_start|>user\n'
          '{{ else }}<|im_end|>\n<|im_start|>user\n{{ end }}{{ .Content }}{{ $previous = .Role }}{{ end }}'
          '{{ if eq $previous "user" }}<|im_end|>\n<|im_start|>assistant\n{{ end }}')


@pytest.fixture(scope="module")
def gguf_workspace(tmp_path_factory) -> Workspace:
    """A workspace whose saved dataset opens every conversation with the same system prompt."""
    workspace = Workspace.at(tmp_path_factory.mktemp("gguf") / "workspace")
    folder = workspace.datasets / DATASET
    folder.mkdir(parents=True)
    records = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Say hello to {n}."},
                             {"role": "assistant", "content": f"Hello, {n}!"}]} for n in ("Ada", "Alan", "Grace")]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    write_json(folder / "report.json", {"rows": 3, "valid": 3, "invalid": 0})
    return workspace


@pytest.fixture(scope="module")
def gguf_run(gguf_workspace, embedded_model_dir):
    return make_trained_run(gguf_workspace, embedded_model_dir)


@pytest.fixture()
def stand_in(monkeypatch, embedded_model_dir, tmp_path):
    """llama.cpp stands in: the 'GGUF' files are a few bytes, and the check's verdict is `checks[0]` (set it to
    change it). The merged model is the embedded model's configuration and tokenizer, which is all that the steps
    after the check read. Returns what was done, by step."""
    import studio.export.gguf as gguf

    merged = tmp_path / "merged"
    merged.mkdir()
    for name in os.listdir(embedded_model_dir):
        if not name.endswith(".safetensors"):
            shutil.copy(embedded_model_dir / name, merged / name)
    done = {"merge": 0, "convert": [], "quantize": []}
    checks = [PASSED]

    def merge(*_args):
        done["merge"] += 1
        return merged

    def convert(_merged, out, outtype, report):
        done["convert"].append(outtype)
        report(0.4, "Converting with llama.cpp: 50% written")
        out.write_bytes(b"GGUF " + outtype.encode())

    def quantize(_source, target, quant):
        done["quantize"].append(quant)
        target.write_bytes(b"GGUF " + quant.encode())

    monkeypatch.setattr(gguf, "_merge", merge)
    monkeypatch.setattr(gguf, "_convert", convert)
    monkeypatch.setattr(gguf, "_quantize", quantize)
    monkeypatch.setattr(gguf, "_adds_bos", lambda _path: False)  # as llama.cpp says of the embedded model's file
    monkeypatch.setattr(gguf, "check_gguf", lambda _gguf, _merged, quant, _examples, pieces: dataclasses.replace(
        checks[0], quant=quant, modelfile_template=pieces is not None and checks[0].modelfile_template))
    return done, checks


def test_an_export_writes_the_file_its_modelfile_and_card_and_zips_them(stand_in, gguf_run, gguf_workspace):
    done, _ = stand_in
    steps = []
    result = export_gguf(gguf_run, "q4_k_m", workspace=gguf_workspace, progress=lambda f, m: steps.append((f, m)))
    assert done == {"merge": 1, "convert": ["bf16"], "quantize": ["q4_k_m"]}  # the merged model's own 16-bit type
    folder = gguf_workspace.exports / gguf_run.id
    assert result.folder == folder / "gguf-q4_k_m" and result.zip_path == folder / f"{gguf_run.id}-q4_k_m-gguf.zip"
    assert result.gguf_path.read_bytes() == b"GGUF q4_k_m" and result.check.ok
    assert sorted(p.name for p in result.folder.iterdir()) == sorted(
        [f"{gguf_run.id}-q4_k_m.gguf", "Modelfile", "README.md", "curves.png", "studio-export.json"])  # no 16-bit left
    with zipfile.ZipFile(result.zip_path) as zf:
        assert {n.split("/", 1)[0] for n in zf.namelist()} == {f"{gguf_run.id}-q4_k_m-gguf"}
        assert {n.split("/", 1)[1] for n in zf.namelist()} == {p.name for p in result.folder.iterdir()}
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist() if i.filename.endswith(".gguf"))
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    record = json.loads((result.folder / "studio-export.json").read_text())
    assert record["check"]["agreement"] == 0.99 and record["check"]["floor"] == FLOORS["q4_k_m"] == 0.75

    lines = (result.folder / "Modelfile").read_text().splitlines()
    assert lines[0] == f"FROM ./{gguf_run.id}-q4_k_m.gguf"
    assert f'TEMPLATE """{CHATML}"""' in "\n".join(lines)
    assert 'PARAMETER stop "<|im_end|>"' in lines and f'SYSTEM """{SYSTEM}"""' in lines  # the dataset's system prompt

    card = result.card_path.read_text()
    assert "as GGUF (q4_k_m)" in card and "quantised to q4_k_m by llama.cpp's quantizer" in card
    assert "| Same next token as the merged model | 99.0% (at least 75% is asked of q4_k_m) |" in card
    assert "ollama create my-model -f Modelfile" in card and f"lms import {gguf_run.id}-q4_k_m.gguf" in card
    assert f"llama-cli -m {gguf_run.id}-q4_k_m.gguf" in card and "sets the system prompt the training data used" in card
    assert "| Say hello to Ada. | Hello! | Hello, Ada! |" in card and "| LoRA rank (r) | 8 |" in card

    again = export_gguf(gguf_run, "q4_k_m", workspace=gguf_workspace)  # nothing changed: the same file, at once
    assert again.gguf_path == result.gguf_path and again.check == result.check and len(done["convert"]) == 1
    assert offered_ggufs(gguf_workspace) == [(gguf_run.id, "q4_k_m", result.gguf_path)]


def test_the_modelfile_template_lays_out_chats_as_the_tokenizer_does(tokenizer):
    pieces = chat_pieces(lambda messages, generation: tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation))
    assert pieces.go_template() == CHATML
    for messages in ([{"role": "user", "content": "Hi"}],
                     [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Say hello to Ada."},
                      {"role": "assistant", "content": "Hello, Ada!"}, {"role": "user", "content": "And Alan?"}]):
        assert pieces.render(messages) == tokenizer.apply_chat_template(messages, tokenize=False,
                                                                       add_generation_prompt=True)


LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + "
          "m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
# As Mistral's first templates do: the system prompt opens the first user turn.
SYSTEM_IN_FIRST_USER = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + (messages[0]['content'] + '\n\n' if "
    "messages[0]['role'] == 'system' and loop.index0 == 1 else '') + m['content'] + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] + '</s>' }}{% endif %}{% endfor %}")
# As Mistral's later templates do: it opens the last user turn, wherever that is; no piece per turn can say that.
SYSTEM_IN_LAST_USER = SYSTEM_IN_FIRST_USER.replace("loop.index0 == 1", "loop.last")
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
             "{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}")


def test_chat_pieces_of_other_templates(tokenizer):
    from studio.data.templating import FALLBACK_TEMPLATE

    def layout(template, messages=None):
        render = lambda messages, generation: tokenizer.apply_chat_template(  # noqa: E731
            messages, chat_template=template, tokenize=False, add_generation_prompt=generation)
        return chat_pieces(render) if messages is None else render(messages, True)

    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]
    for template in (LLAMA3, FALLBACK_TEMPLATE, SYSTEM_IN_FIRST_USER):
        assert layout(template).render(conversation) == layout(template, conversation)
    llama3 = layout(LLAMA3)
    assert llama3.head_user.startswith(tokenizer.bos_token)
    assert not llama3.without_start(tokenizer.bos_token).head_system.startswith(tokenizer.bos_token)
    # pieces, but not the template's layout: the GGUF check finds that, and the Modelfile gets no TEMPLATE
    assert layout(SYSTEM_IN_LAST_USER).render(conversation) != layout(SYSTEM_IN_LAST_USER, conversation)
    assert layout(NO_SYSTEM) is None


def test_a_failed_check_offers_nothing_and_keeps_the_earlier_file(stand_in, gguf_run, gguf_workspace):
    import studio.ui.export_tab as export_tab
    from studio.ui.context import Studio

    _, checks = stand_in
    good = export_gguf(gguf_run, "q8_0", workspace=gguf_workspace)
    before = good.zip_path.read_bytes()
    os.utime(gguf_run.adapter_dir / "adapter_config.json")  # trained again since: the export is made again
    checks[0] = dataclasses.replace(PASSED, agreement=0.5, modelfile_template=False)
    message, download = export_tab.gguf(Studio(gguf_workspace, queue=None), gguf_run.id, "q8_0")
    assert message.startswith("✖") and "not offered" in message and "at only 50.0% of 312 positions" in message
    assert download == str(good.zip_path) and good.zip_path.read_bytes() == before
    failed = good.folder.with_name("gguf-q8_0-failed-check")
    assert (failed / good.gguf_path.name).exists() and "TEMPLATE" not in (failed / "Modelfile").read_text()
    assert good.gguf_path in [path for _, _, path in offered_ggufs(gguf_workspace)]


@pytest.mark.parametrize("changes, problem", [
    ({"agreement": 0.74}, "picks the merged model's next token at only 74.0% of 312 positions (at least 75% is "
                          "needed for q4_k_m)"),
    ({"same_tokens": False}, "llama.cpp splits text into other tokens"),
    ({"chat_template": False}, "the chat template stored in the file lays conversations out differently"),
    ({"answer": " "}, "llama.cpp gave an empty answer"),
])
def test_each_failed_check_is_named(changes, problem):
    check = dataclasses.replace(PASSED, **changes)
    assert not check.ok and check.verdict.startswith("FAILED") and problem in check.verdict
    assert "try q8_0 or 16-bit, or download the merged model" in check.verdict
    assert dataclasses.replace(PASSED, chat_template=None, modelfile_template=False).ok  # no template, or no Go one
    assert GgufCheck.from_dict(json.loads(json.dumps(PASSED.to_dict()))) == PASSED


def test_an_unknown_architecture_is_refused_before_any_work(gguf_run, workspace, embedded_model_dir):
    from studio.ui.context import Studio
    from studio.ui.export_tab import gguf_plan

    assert {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"} <= supported_architectures()
    model = workspace.models / "odd"
    model.mkdir(parents=True)
    config = json.loads((embedded_model_dir / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "architectures": ["OddForCausalLM"]}))
    run = create_run(workspace, TrainConfig(model=str(model), dataset="x"))
    shutil.copytree(gguf_run.adapter_dir, run.adapter_dir)
    run.set_status(state="completed")
    with pytest.raises(ExportError, match="its architecture, OddForCausalLM, is not one llama.cpp runs"):
        export_gguf(run, "q4_k_m", workspace=workspace)
    assert not workspace.exports.exists() or not any(workspace.exports.iterdir())
    assert "❌ llama.cpp cannot convert this model" in gguf_plan(Studio(workspace, queue=None), run.id, "q4_k_m")


def test_the_page_says_what_each_type_suits_and_how_large_the_file_will_be(gguf_run, gguf_workspace):
    from studio.ui.context import Studio
    from studio.ui.export_tab import gguf_plan
    from studio.ui.i18n import Translator

    studio = Studio(gguf_workspace, queue=None)
    # 134.5M weights: q4_k_m falls back to q5_0 and q8_0 on rows 576 wide (bench/results/gguf_export.json: 100.6 MB)
    assert gguf_plan(studio, gguf_run.id, "q4_k_m").endswith("The file will be about 101 MB.")
    assert "laptops and CPUs" in gguf_plan(studio, None, "q4_k_m")
    assert gguf_plan(studio, gguf_run.id, "16-bit").endswith("The file will be about 257 MB.")
    assert "檔案大約 136 MB。" in gguf_plan(studio, gguf_run.id, "q8_0", Translator("zh-Hant"))


def test_not_enough_disk_is_refused_before_any_work(gguf_run, gguf_workspace, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(10**9, 9 * 10**8, 10**8))
    out = tmp_path / "elsewhere" / "gguf"
    with pytest.raises(NotEnoughSpace, match="Not enough disk space for the GGUF export"):
        export_gguf(gguf_run, "q8_0", out, workspace=gguf_workspace)
    assert not out.parent.exists()


def test_python_m_studio_export_prints_the_outcome(stand_in, gguf_run, gguf_workspace, tmp_path, capsys):
    from studio.__main__ import main

    root = str(gguf_workspace.root)
    out = tmp_path / "cli" / "gguf"
    assert main(["--workspace", root, "export", gguf_run.id, "--format", "gguf", "--quant", "16-bit", "--out",
                 str(out), "--zip"]) == 0
    printed = capsys.readouterr().out
    assert "[100%] Done" in printed and "GGUF check:   OK: llama.cpp loads the bf16 file" in printed
    assert f"GGUF file:    {out / f'{gguf_run.id}-bf16.gguf'}" in printed
    assert f"Zip:          {out.parent / f'{gguf_run.id}-16-bit-gguf.zip'}" in printed and "Modelfile:" in printed
    assert main(["--workspace", root, "export", "no-such-run"]) == 2
    assert capsys.readouterr().err.startswith("error: No run folder")
    assert main(["--workspace", root, "merge", "no-such-run"]) == 2  # merge is still there beside export
