"""Merge and export, checked with plain transformers and peft: the merged folder must stand on its own."""
import errno
import itertools
import json
import os
import shutil
import subprocess
import sys
import weakref
import zipfile
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from studio.config import TrainConfig
from studio.export import ExportError, MergeCheck, NotEnoughSpace, export_adapter, merge_run
from studio.export.card import render_card
from studio.export.checks import human_size
from studio.export.cli import register
from studio.runs import create_run
from studio.workspace import Workspace, append_jsonl, write_json

REPO = Path(__file__).resolve().parent.parent
DATASET = "greetings"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def _encode(tokenizer, prompt: str):
    return tokenizer.apply_chat_template(_messages(prompt), add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True)


def make_trained_run(workspace: Workspace, model_dir: Path):
    """A finished run whose adapter has random, non-zero weights, so it visibly changes the logits."""
    run = create_run(workspace, TrainConfig(model=str(model_dir), dataset=DATASET, lora_r=8, lora_alpha=16,
                                            target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    model.save_pretrained(run.adapter_dir)
    run.set_status(state="completed")
    append_jsonl(run.path / "metrics.jsonl", {"step": 10, "loss": 2.5, "learning_rate": 2e-4})
    append_jsonl(run.path / "metrics.jsonl", {"step": 20, "loss": 1.875, "eval_loss": 2.125})
    run.curves_path.write_bytes(b"\x89PNG\r\n\x1a\n curves of the run")
    return run


def save_dataset(workspace: Workspace) -> None:
    """A saved dataset as the data tab leaves it: records.jsonl and report.json."""
    folder = workspace.datasets / DATASET
    folder.mkdir(parents=True)
    records = [{"messages": _messages("Say hello to Ada.") + [{"role": "assistant", "content": "Hello, Ada!"}]},
               {"text": "Greetings are short and kind."}]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    write_json(folder / "report.json", {"rows": 1250, "valid": 1200, "invalid": 50, "max_length": 1024})


FAILED_CHECK = MergeCheck(2.9, 2.9, 0.80, positions=117, prompts=3, dataset_examples=0, dtype="bfloat16")


def stand_in_merge(monkeypatch, check: MergeCheck, weights: str) -> None:
    """The real merge is tested on its own; the tests using this are about the folders and zips around it."""
    import studio.export.merge as merge

    def merge_into(folder, *_args):
        (folder / "weights.txt").write_text(weights)
        return check

    monkeypatch.setattr(merge, "_merge_into", merge_into)


def fail_moves(monkeypatch, failing: range) -> None:
    """The renames of files and folders numbered in `failing` (counting from 1) fail, as on a broken disk."""
    calls = itertools.count(1)

    def breaking(real):
        def move(self, target):
            if next(calls) in failing:
                raise OSError(errno.EIO, "Input/output error")
            return real(self, target)
        return move

    for name in ("rename", "replace"):
        monkeypatch.setattr(Path, name, breaking(getattr(Path, name)))


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under folder, hidden ones too, by its path there."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def zipped(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        return {name.split("/", 1)[1]: zf.read(name) for name in zf.namelist()}


@pytest.fixture(scope="module")
def export_workspace(tmp_path_factory) -> Workspace:
    workspace = Workspace.at(tmp_path_factory.mktemp("export") / "workspace")
    save_dataset(workspace)
    return workspace


@pytest.fixture(scope="module")
def trained_run(export_workspace, embedded_model_dir):
    return make_trained_run(export_workspace, embedded_model_dir)


@pytest.fixture(scope="module")
def exported(trained_run, export_workspace):
    steps = []
    result = merge_run(trained_run, workspace=export_workspace, progress=lambda f, m: steps.append((f, m)))
    return result, steps


def test_default_paths(exported, trained_run, export_workspace):
    result, _ = exported
    folder = export_workspace.exports / trained_run.id
    assert result.merged_dir == folder / "merged"
    assert result.zip_path == folder / f"{trained_run.id}-merged.zip"
    assert result.card_path == folder / "merged" / "README.md"
    names = {p.name for p in folder.iterdir()}
    assert {"merged", result.zip_path.name} <= names
    assert not [n for n in names if n.startswith(".")]  # no staging folder or temporary zip left behind


def test_merged_logits_match_base_plus_adapter(exported, trained_run, embedded_model_dir, tokenizer):
    """Read in float32 with plain transformers and peft: the saved bfloat16 weights differ from base + adapter by
    their rounding alone."""
    inputs = _encode(tokenizer, "Write a haiku about merging weights.")
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, trained_run.adapter_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(exported[0].merged_dir, dtype=torch.float32)
    with torch.inference_mode():
        want = adapted(**inputs).logits
        with adapted.disable_adapter():
            plain = adapted(**inputs).logits
        got = merged(**inputs).logits
    effect = (want - plain).abs().max().item()
    assert effect > 1.0  # the adapter is in there
    assert (got - want).abs().max().item() < 0.25 * effect
    assert (got.argmax(-1) == want.argmax(-1)).float().mean().item() >= 0.9


def test_merge_check_numbers(exported):
    result, _ = exported
    check = result.check
    assert check.ok and check.verdict.startswith("OK")
    assert check.dtype == "bfloat16"
    assert check.merge_diff < 0.25 * check.adapter_effect and 1.0 < check.adapter_effect
    assert check.token_agreement >= 0.9
    assert (check.prompts, check.dataset_examples) == (3, 2)
    saved = json.loads((result.merged_dir / "studio-export.json").read_text())
    assert saved["check"]["merge_diff"] == check.merge_diff and saved["check"]["ok"] is True


def saved_dtypes(merged_dir: Path) -> set[str]:
    dtypes = set()
    for shard in merged_dir.glob("*.safetensors"):
        with safe_open(shard, "pt") as f:
            dtypes |= {f.get_slice(name).get_dtype() for name in f.keys()}
    return dtypes


def test_a_4bit_trained_run_is_merged_in_16_bit(exported, trained_run):
    assert trained_run.config.quantization == "4bit"
    merged_dir = exported[0].merged_dir
    config = json.loads((merged_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    assert saved_dtypes(merged_dir) == {"BF16"}  # the base's own dtype, even on a CPU; never packed 4-bit weights


def test_a_qlora_trained_adapter_is_merged_in_bfloat16(pirate_run, tmp_path):
    """An adapter trained on the 4-bit base (the session's pirate run, QLoRA on the CPU) is merged into the
    embedded model's bfloat16 weights."""
    workspace, run = pirate_run
    assert run.config.quantization == "4bit"
    result = merge_run(run, tmp_path / "merged", workspace=workspace, make_zip=False)
    assert result.check.ok and result.check.dtype == "bfloat16" and result.check.adapter_effect > 0.5
    assert saved_dtypes(result.merged_dir) == {"BF16"}


@pytest.mark.parametrize("stored, saved", [
    ({"dtype": "bfloat16"}, "bfloat16"),
    ({"torch_dtype": "float16"}, "float16"),  # as older configs name it
    ({"dtype": "float32"}, "bfloat16"),
    ({}, "bfloat16"),  # read as float32
])
def test_the_merged_model_is_saved_in_the_bases_16_bit_dtype(stored, saved, embedded_model_dir, tmp_path):
    from studio.export.merge import _read_base

    config = json.loads((embedded_model_dir / "config.json").read_text())
    config.pop("dtype", None)
    (tmp_path / "config.json").write_text(json.dumps({**config, **stored}))
    assert _read_base(str(tmp_path)).dtype == getattr(torch, saved)


def test_tokenizer_and_generation_config_come_along(exported, tokenizer):
    merged_dir = exported[0].merged_dir
    saved = AutoTokenizer.from_pretrained(merged_dir)
    assert saved.chat_template == tokenizer.chat_template
    assert json.loads((merged_dir / "generation_config.json").read_text())["eos_token_id"] == tokenizer.eos_token_id


def test_zip_holds_what_the_card_lists(exported):
    result, _ = exported
    card = result.card_path.read_text()
    listed = {line[3:-1] for line in card.split("## Files", 1)[1].splitlines() if line.startswith("- `")}
    with zipfile.ZipFile(result.zip_path) as zf:
        assert zf.testzip() is None
        names = {n.split("/", 1)[1] for n in zf.namelist()}
        assert {n.split("/", 1)[0] for n in zf.namelist()} == {result.zip_path.stem}
    assert names == listed
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
            "generation_config.json", "curves.png"} <= names


def test_card_tells_how_it_was_made(exported, trained_run, export_workspace):
    result, _ = exported
    card = result.card_path.read_text()
    assert "SmolLM2-135M-Instruct" in card
    assert f"`{DATASET}`: 1,200 examples (1,250 rows, 50 skipped as unusable)" in card
    assert "| LoRA rank (r) | 8 |" in card and "| Adapted layers | q_proj, v_proj |" in card
    assert "Final training loss: 1.875 (step 20)" in card and "Final validation loss: 2.125 (step 20)" in card
    assert "(curves.png)" in card
    assert (result.merged_dir / "curves.png").read_bytes() == trained_run.curves_path.read_bytes()
    assert f"{result.check.merge_diff:.3g}" in card and f"{result.check.adapter_effect:.3g}" in card
    assert "4-bit quantised base" in card
    assert "The weights are in bfloat16, as the base model's are." in card
    from_float32 = render_card(trained_run, export_workspace, result.check, "float32", files=[])
    assert "The weights are in bfloat16, 16 bits each; the base model is stored in float32." in from_float32


def test_card_quotes_the_runs_report_card(exported, trained_run, export_workspace):
    from test_report_card import card as report_card

    result = exported[0]
    assert "No report card was made for this run" in render_card(trained_run, export_workspace, result.check,
                                                                 "bfloat16", files=[])
    write_json(trained_run.path / "report.json", {**report_card("learned", 3.25, 21.5, 63.0), "examples": [
        {"prompt": [{"role": "user", "content": "Who | what?"}], "expected": "A.", "base": "b\nb", "adapter": "a"}]})
    try:
        card = render_card(trained_run, export_workspace, result.check, "bfloat16", files=[])
    finally:
        (trained_run.path / "report.json").unlink()
    assert "**It learned: on prompts it never saw" in card and "held-out examples" in card
    assert "| Closeness to the expected answers (chrF, 0-100) | 21.5 | 63.0 |" in card and "3.25x as likely" in card
    assert "| Who \\| what? | A. | b b | a |" in card


def test_card_snippet_loads_and_generates(exported, capsys):
    """The card's example, as a user would run it: plain transformers, no studio and no peft."""
    card = exported[0].card_path.read_text()
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    assert '"path/to/this/folder"' in code and "max_new_tokens=100" in code
    code = code.replace('"path/to/this/folder"', repr(str(exported[0].merged_dir)))
    exec(code.replace("max_new_tokens=100", "max_new_tokens=3"), {})  # noqa: S102 - the card's own example
    assert capsys.readouterr().out.strip()


def test_progress_is_reported_in_order(exported):
    _, steps = exported
    fractions = [f for f, _ in steps]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    assert len(steps) >= 8 and all(message for _, message in steps)
    assert any("Merging" in m for _, m in steps) and any("Zipp" in m for _, m in steps)


def test_adapter_zip(trained_run, export_workspace):
    path = export_adapter(trained_run, export_workspace)
    assert path == export_workspace.exports / trained_run.id / f"{trained_run.id}-adapter.zip"
    with zipfile.ZipFile(path) as zf:
        names = {n.split("/", 1)[1] for n in zf.namelist()}
        assert {"adapter_config.json", "adapter_model.safetensors"} <= names
        config = json.loads(zf.read(f"{path.stem}/adapter_config.json"))
    assert config["r"] == 8


def test_a_run_without_adapter_is_refused(workspace, embedded_model_dir):
    run = create_run(workspace, TrainConfig(model=str(embedded_model_dir), dataset="x"))
    run.set_status(state="failed")
    for export in (lambda: merge_run(run, workspace=workspace), lambda: export_adapter(run, workspace)):
        with pytest.raises(ExportError, match="has no adapter yet"):
            export()
    assert not any(workspace.exports.iterdir())


def test_the_export_tab_lists_every_run_the_export_accepts(workspace):
    from studio.ui.context import Studio
    from studio.ui.export_tab import finished_runs

    runs = {}
    for state in ("completed", "stopped", "failed", "interrupted", "running", "queued"):
        runs[state] = create_run(workspace, TrainConfig(model="embedded", dataset="x"))
        runs[state].adapter_dir.mkdir(parents=True)
        (runs[state].adapter_dir / "adapter_config.json").write_text("{}")
        runs[state].set_status(state=state)
    no_adapter = create_run(workspace, TrainConfig(model="embedded", dataset="x"))
    no_adapter.set_status(state="completed")
    # The same rule as require_adapter: stopped training (whatever way) and saved an adapter.
    assert sorted(finished_runs(Studio(workspace, queue=None))) == \
        sorted(runs[state].id for state in ("completed", "stopped", "failed", "interrupted"))


def test_a_run_still_training_is_refused(workspace, embedded_model_dir):
    run = create_run(workspace, TrainConfig(model=str(embedded_model_dir), dataset="x"))
    run.set_status(state="running")
    with pytest.raises(ExportError, match="still running. Wait until it finishes"):
        merge_run(run, workspace=workspace)


def test_not_enough_disk_is_refused(trained_run, export_workspace, tmp_path, monkeypatch):
    free = 300 * 1024**2
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(10 * free, 9 * free, free))
    out = tmp_path / "elsewhere" / "merged"
    with pytest.raises(NotEnoughSpace) as with_zip:
        merge_run(trained_run, out, workspace=export_workspace)
    weights = 134_515_008 * 2  # SmolLM2-135M's parameters in bfloat16
    assert with_zip.value.needed > 2 * weights and with_zip.value.free == free
    message = str(with_zip.value)
    assert f"needs about {human_size(with_zip.value.needed)}" in message and "only 300 MB is free" in message
    assert "delete older exports" in message and "ask the administrator" in message  # not a folder chooser
    assert not out.parent.exists()
    with pytest.raises(NotEnoughSpace) as folder_only:
        merge_run(trained_run, out, workspace=export_workspace, make_zip=False)
    assert weights < folder_only.value.needed < 2 * weights < with_zip.value.needed


def test_a_folder_of_other_files_is_not_overwritten(trained_run, export_workspace, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an earlier LoRA Studio export"):
        merge_run(trained_run, out, workspace=export_workspace)
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_failed_merge_leaves_the_earlier_export_whole(exported, trained_run, export_workspace, monkeypatch):
    import studio.export.merge as merge

    def disk_full(folder, *_args):
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    result, _ = exported
    before = {p.name: p.stat().st_size for p in result.merged_dir.iterdir()}
    monkeypatch.setattr(merge, "_merge_into", disk_full)
    with pytest.raises(NotEnoughSpace, match="The disk filled up while writing the merged model") as full:
        merge_run(trained_run, workspace=export_workspace, make_zip=False)
    assert "delete older exports" in str(full.value) and "ask the administrator" in str(full.value)
    assert {p.name: p.stat().st_size for p in result.merged_dir.iterdir()} == before
    assert not [p for p in result.merged_dir.parent.iterdir() if p.name.startswith(".")]


def test_a_disk_that_fills_up_while_zipping_is_not_enough_space(exported, trained_run, export_workspace, tmp_path,
                                                                 monkeypatch):
    import studio.export.merge as merge

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(merge, "_merge_into", lambda folder, *_args: exported[0].check)
    monkeypatch.setattr(merge, "zip_folder", disk_full)
    with pytest.raises(NotEnoughSpace, match="while writing the merged model and its zip"):
        merge_run(trained_run, tmp_path / "merged", workspace=export_workspace)


def test_a_failed_merge_check_replaces_nothing(exported, trained_run, export_workspace, tmp_path, monkeypatch):
    import studio.ui.export_tab as export_tab
    from studio.ui.context import Studio

    def shown_in_the_tab(result):
        monkeypatch.setattr(export_tab, "merge_run", lambda *_args, **_kwargs: result)
        return export_tab.merge(Studio(export_workspace, queue=None), trained_run.id)

    assert not FAILED_CHECK.ok
    out = tmp_path / "merged"
    stand_in_merge(monkeypatch, FAILED_CHECK, "failed")
    first = merge_run(trained_run, out, workspace=export_workspace)
    assert first.merged_dir == tmp_path / "merged-failed-check" and first.zip_path is first.earlier_zip is None
    assert (first.merged_dir / "weights.txt").read_text() == "failed"  # kept for a look, never zipped
    message, download = shown_in_the_tab(first)
    assert download is None and message.startswith("✖") and "download the adapter alone" in message

    stand_in_merge(monkeypatch, exported[0].check, "good")
    good = merge_run(trained_run, out, workspace=export_workspace)
    assert {p.name for p in tmp_path.iterdir()} == {"merged", good.zip_path.name}  # the failed one is gone
    folder, zip_bytes = contents(out), good.zip_path.read_bytes()

    stand_in_merge(monkeypatch, FAILED_CHECK, "failed again")
    again = merge_run(trained_run, out, workspace=export_workspace)
    assert contents(out) == folder and good.zip_path.read_bytes() == zip_bytes
    assert (again.merged_dir / "weights.txt").read_text() == "failed again" and again.earlier_zip == good.zip_path
    message, download = shown_in_the_tab(again)
    assert download == str(good.zip_path) and "which passed its check, is kept" in message


@pytest.mark.parametrize("step", ["merge", "card", "zip", "rename 1", "rename 2", "rename 3"])
def test_an_export_that_breaks_off_leaves_the_earlier_one_as_it_was(step, exported, trained_run, export_workspace,
                                                                     tmp_path, monkeypatch):
    import studio.export.merge as merge

    def broken(*_args, **_kwargs):
        raise OSError(errno.EIO, "Input/output error")

    def half_merged(folder, *_args):
        (folder / "weights.txt").write_text("half")
        broken()

    stand_in_merge(monkeypatch, exported[0].check, "earlier")
    merge_run(trained_run, tmp_path / "merged", workspace=export_workspace)
    before = contents(tmp_path)
    stand_in_merge(monkeypatch, exported[0].check, "new")
    if step == "merge":
        monkeypatch.setattr(merge, "_merge_into", half_merged)
    elif step == "card":
        monkeypatch.setattr(merge, "write_card", broken)
    elif step == "zip":  # after the first file, inside the real zipping
        zip_folder = merge.zip_folder
        monkeypatch.setattr(merge, "zip_folder", lambda folder, path, progress: zip_folder(folder, path, broken))
    else:
        fail_moves(monkeypatch, range(int(step[-1]), int(step[-1]) + 1))
    with pytest.raises(OSError, match="Input/output error"):
        merge_run(trained_run, tmp_path / "merged", workspace=export_workspace)
    assert contents(tmp_path) == before  # the folder and its zip as they were, and nothing left beside them


@pytest.mark.parametrize("cut_at, kept", [(2, "earlier"), (3, "new")])
def test_an_export_cut_short_is_put_right_by_the_next_one(cut_at, kept, exported, trained_run, export_workspace,
                                                          tmp_path, monkeypatch):
    """As a crash between two renames: every rename from one on fails, putting the earlier export back too. One
    whole export is left, and the next export, even one that fails its check, puts it back in its place."""
    stand_in_merge(monkeypatch, exported[0].check, "earlier")
    earlier = merge_run(trained_run, tmp_path / "merged", workspace=export_workspace)
    stand_in_merge(monkeypatch, exported[0].check, "new")
    with monkeypatch.context() as broken_disk:
        fail_moves(broken_disk, range(cut_at, 100))
        with pytest.raises(OSError, match="Input/output error"):
            merge_run(trained_run, tmp_path / "merged", workspace=export_workspace)

    stand_in_merge(monkeypatch, FAILED_CHECK, "failed")
    result = merge_run(trained_run, tmp_path / "merged", workspace=export_workspace)
    assert (earlier.merged_dir / "weights.txt").read_text() == kept
    assert zipped(earlier.zip_path) == contents(earlier.merged_dir) and result.earlier_zip == earlier.zip_path
    assert {p.name for p in tmp_path.iterdir()} == {"merged", "merged-failed-check", earlier.zip_path.name}


def test_running_out_of_gpu_memory_says_what_to_do(trained_run, export_workspace, tmp_path, monkeypatch):
    import studio.export.merge as merge

    class HalfBuiltModel:
        pass

    built, alive_when_freed = [], []

    def out_of_memory(*_args):
        model = HalfBuiltModel()  # what the failed merge had loaded, held by this frame
        built.append(weakref.ref(model))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(merge, "_merge_into", out_of_memory)
    monkeypatch.setattr(merge, "free_memory", lambda: alive_when_freed.append(built[0]() is not None))
    with pytest.raises(ExportError, match="not enough GPU memory") as refused:
        merge_run(trained_run, tmp_path / "merged", workspace=export_workspace, make_zip=False)
    assert "Wait until the training jobs and chats are done" in str(refused.value)
    assert alive_when_freed[-1] is False  # the memory is handed back once the model is really gone
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("numbers, ok", [
    ((1e-4, 1e-4, 1.0, "bfloat16"), True),  # an adapter that does nothing, merged
    ((0.59, 4.6, 1.0, "bfloat16"), True),  # what bf16 rounding gave on the embedded model after 4 QLoRA steps
    ((1.31, 21.5, 0.94, "bfloat16"), True),  # and with a strong random one, read in bfloat16
    ((1.96, 2.9, 0.987, "bfloat16"), True),  # and with a weak one: same next tokens
    ((2.9, 2.9, 0.80, "bfloat16"), False),  # the adapter lost in the merge
    ((9.0, 21.5, 0.85, "float16"), False),
])
def test_merge_check_verdict(numbers, ok):
    merge_diff, effect, agreement, dtype = numbers
    check = MergeCheck(merge_diff, effect, agreement, positions=117, prompts=3, dataset_examples=0, dtype=dtype)
    assert check.ok is ok
    assert check.verdict.startswith("OK" if ok else "MISMATCH")
    assert f"{merge_diff:.3g}" in check.verdict and f"{effect:.3g}" in check.verdict


def test_a_new_export_replaces_an_earlier_one(exported, trained_run, export_workspace, tmp_path, monkeypatch):
    out = tmp_path / "out" / "merged"
    stand_in_merge(monkeypatch, exported[0].check, "export 1")
    merge_run(trained_run, out, workspace=export_workspace, make_zip=False)
    (out / "stale.txt").write_text("from the first export")
    stand_in_merge(monkeypatch, exported[0].check, "export 2")
    merge_run(trained_run, out, workspace=export_workspace, make_zip=False)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "curves.png", "studio-export.json", "weights.txt"]
    assert (out / "weights.txt").read_text() == "export 2"
    assert [p.name for p in out.parent.iterdir()] == ["merged"]


def test_an_already_quantised_base_is_refused(trained_run, workspace, embedded_model_dir):
    quantised = workspace.models / "quantised"
    quantised.mkdir()
    config = json.loads((embedded_model_dir / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantised / "config.json").write_text(json.dumps(config))
    run = create_run(workspace, TrainConfig(model=str(quantised), dataset="x"))
    shutil.copytree(trained_run.adapter_dir, run.adapter_dir)
    run.set_status(state="completed")
    with pytest.raises(ExportError, match="stored already quantised \\(bitsandbytes\\), so it cannot be merged"):
        merge_run(run, workspace=workspace)


def _cli(argv):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_passes_the_run_and_options_and_prints_the_outcome(exported, trained_run, export_workspace, tmp_path,
                                                              capsys, monkeypatch):
    import studio.export.cli as cli

    calls = []

    def merge_run_as_before(run, out_dir, *, workspace, make_zip, progress):  # the real merge is tested above
        calls.append((run.path, out_dir, workspace.root, make_zip))
        progress(0.0, "Checking run")
        progress(1.0, "Done")
        return exported[0]

    monkeypatch.setattr(cli, "merge_run", merge_run_as_before)
    out = str(tmp_path / "cli-out")
    root = str(export_workspace.root)
    assert _cli(["--workspace", root, "merge", str(trained_run.path), "--out", out, "--zip"]) == 0
    assert _cli(["--workspace", root, "merge", trained_run.id]) == 0  # a run id works as well as its folder
    assert calls == [(trained_run.path, out, export_workspace.root, True),
                     (trained_run.path, None, export_workspace.root, False)]
    printed = capsys.readouterr().out
    assert "[  0%] Checking run" in printed and "[100%] Done" in printed
    assert f"Merge check:  {exported[0].check.verdict}" in printed
    assert f"Merged model: {exported[0].merged_dir}" in printed and f"Zip:          {exported[0].zip_path}" in printed


def test_cli_errors_are_one_line_with_status_2(export_workspace, capsys):
    status = _cli(["--workspace", str(export_workspace.root), "merge", "no-such-run"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("error: No run folder at 'no-such-run'")


def test_python_m_studio_merge(trained_run, export_workspace, tmp_path):
    out = tmp_path / "from-the-command-line"
    done = subprocess.run([sys.executable, "-m", "studio", "--workspace", str(export_workspace.root), "merge",
                           str(trained_run.path), "--out", str(out), "--zip"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "[100%] Done" in done.stdout and "Merge check:  OK" in done.stdout
    zip_path = tmp_path / f"{trained_run.id}-merged.zip"  # beside the folder given with --out
    assert f"Merged model: {out}" in done.stdout and f"Zip:          {zip_path}" in done.stdout
    assert (out / "model.safetensors").exists() and zip_path.exists()

    missing = subprocess.run([sys.executable, "-m", "studio", "--workspace", str(export_workspace.root), "merge",
                              "no-such-run"], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: No run folder") and missing.stderr.count("\n") == 1
