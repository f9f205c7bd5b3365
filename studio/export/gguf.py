"""GGUF export, for llama.cpp, Ollama and LM Studio: the run's merged model (checked against base + adapter),
converted by llama.cpp's own converter, quantised by llama.cpp's quantizer, then loaded and checked by llama.cpp
(gguf_check.py) before it is offered, with an Ollama Modelfile and a model card beside it, zipped.

llama.cpp comes from one pinned llama-cpp-python source (scripts/setup.sh): it builds the library that quantises,
checks and chats, and the same source holds the converter (convert_hf_to_gguf.py with the gguf-py it is written
against), which setup keeps in .venv/llama.cpp/. The converter runs as a child process: it imports its own gguf-py,
newer than the gguf package transformers reads GGUF files with, and that must not replace it in this process.
"""
from __future__ import annotations

import ast
import ctypes
import functools
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..messages import Message
from ..models import allow_remote_code, resolve_model
from ..runs import Run
from ..workspace import Workspace, read_json, safe_name, write_atomic, write_json
from .archive import export_folder, zip_folder
from .card import write_gguf_card
from .checks import (MARKER, ExportError, base_parameters, human_size, require_adapter, require_free_space,
                     require_replaceable, space_needed)
from .dataset import held_out_examples, system_prompt
from .gguf_check import GgufCheck, check_gguf, llama_threads
from .merge import merge_run, plain_failures
from .modelfile import chat_pieces, modelfile
from .place import failed_folder, recover, staging_folder, swap_in

Progress = Callable[[float, str], None]

CONVERTER = Path(sys.prefix) / "llama.cpp" / "convert_hf_to_gguf.py"
SIXTEEN_BIT = "16-bit"  # the merged model's own 16-bit type: bf16 or f16

# Bits per weight, for the size given before starting (llama.cpp's own figures for a 7B model; a small model's
# files are larger per weight: its embeddings are a larger share, and some rows do not suit k-quants).
QUANTS = {
    "q4_k_m": (4.9, Message("q4_k_m: the usual choice for laptops and CPUs, and for GPUs with little memory. "
                            "About a third of the 16-bit size; answers stay close to the merged model's.")),
    "q8_0": (8.5, Message("q8_0: nearly the merged model itself, at half the 16-bit size. For a GPU or a "
                          "computer with memory to spare.")),
    SIXTEEN_BIT: (16.0, Message("16-bit: the merged weights unchanged (bf16 or f16, as the model is stored). For "
                                "large GPUs, or to quantise further yourself.")),
}
_FTYPES = {"q8_0": 7, "q4_k_m": 15}  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q8_0 and _Q4_K_M
_WRITTEN = re.compile(r"Writing:\s+(\d+)%")  # the converter's progress bar


@dataclass(frozen=True)
class GgufResult:
    run_id: str
    folder: Path
    gguf_path: Path
    zip_path: Path | None
    card_path: Path
    check: GgufCheck
    size_bytes: int  # of the .gguf file
    earlier_zip: Path | None = None  # a file that fails its check replaces nothing: the earlier zip still offered


def expected_size(base: str, quant: str) -> int:
    """About how large the GGUF file of a base model (a folder) will be. The k-quants store rows in blocks of 256
    values; where the model's width is not a multiple of 256 (SmolLM2-135M: 576) llama.cpp's quantizer falls back to
    q5_0 and q8_0 for most tensors, and q4_k_m takes about 6.3 bits a weight (bench/results/gguf_export.json)."""
    from transformers import AutoConfig

    bits = QUANTS[quant][0]
    if quant == "q4_k_m" and getattr(AutoConfig.from_pretrained(base, trust_remote_code=allow_remote_code()),
                                     "hidden_size", 0) % 256:
        bits = 6.3
    return int(base_parameters(base) * bits / 8)


@functools.cache
def supported_architectures() -> frozenset[str]:
    """The text architectures llama.cpp's converter knows, read from its own table (not imported: importing it
    would bring its gguf-py into this process)."""
    source = CONVERTER.parent / "conversion" / "__init__.py"
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "TEXT_MODEL_MAP":
            return frozenset(ast.literal_eval(node.value))
    raise ExportError(Message("llama.cpp's converter in {folder} has no table of architectures. Run "
                              "scripts/setup.sh again to reinstall it.", folder=str(CONVERTER.parent)))


def require_gguf_support(model: str) -> str:
    """Refuse before any work when llama.cpp is missing or does not know the model's architecture (model: a folder
    or a hub id); the architecture otherwise."""
    from transformers import AutoConfig

    if importlib.util.find_spec("llama_cpp") is None or not CONVERTER.exists():
        raise ExportError(Message("GGUF export needs llama.cpp, which is not installed here. Run scripts/setup.sh "
                                  "(it builds llama.cpp once), then export again."))
    config = AutoConfig.from_pretrained(model, trust_remote_code=allow_remote_code())
    architecture = (config.architectures or ["(none named)"])[0]
    if architecture not in supported_architectures():
        raise ExportError(Message("llama.cpp cannot convert this model: its architecture, {architecture}, is not one "
                                  "llama.cpp runs. Export the merged model or the adapter instead.",
                                  architecture=architecture))
    return architecture


def export_gguf(run: Run, quant: str = "q4_k_m", out_dir: str | Path | None = None, *, workspace: Workspace,
                make_zip: bool = True, progress: Progress | None = None) -> GgufResult:
    """Export the run as a GGUF file (quant: q4_k_m, q8_0, 16-bit, f16 or bf16) into out_dir (default
    workspace/exports/<run-id>/gguf-<quant>) with its Modelfile and card, zipped beside it as
    <run-id>-<quant>-gguf.zip. progress(fraction, message) hears of every stage."""
    report = progress or (lambda _fraction, _message: None)
    report(0.0, Message("Checking run {run}", run=run.id))
    if quant not in (*QUANTS, "f16", "bf16"):
        raise ExportError(Message("Unknown GGUF type {quant}: choose q4_k_m, q8_0 or 16-bit (f16 or bf16).",
                                  quant=quant))
    require_adapter(run)
    base = resolve_model(run.config.model, workspace, progress=lambda message: report(0.01, message))
    require_gguf_support(base)
    target = (Path(out_dir).expanduser() if out_dir else export_folder(workspace, run) / f"gguf-{quant}").resolve()
    for folder in (target, failed_folder(target)):
        require_replaceable(folder)
    zip_path = target.parent / f"{safe_name(run.id, 'run')}-{quant}-gguf.zip"

    if earlier := _unchanged_export(run, target, zip_path if make_zip else None):
        report(1.0, Message("Already exported and checked, from the same adapter: {folder}", folder=str(target)))
        return earlier

    parameters = base_parameters(base)
    merged = _fresh_merge(run, workspace)
    sixteen = parameters * 2
    quantised = expected_size(base, quant) if quant in _FTYPES else 0
    # the merged model (unless there is one), the 16-bit file, the quantised one, and the zip of what is offered
    needed = space_needed((0 if merged else sixteen) + sixteen + quantised + ((quantised or sixteen) if make_zip else 0),
                          copies=1)
    what = Message("the GGUF export")
    require_free_space(target.parent, needed, what)
    with plain_failures(target.parent, needed, what):
        if merged:
            report(0.32, Message("Using the merged model already exported in {folder}", folder=str(merged)))
        else:
            merged = _merge(run, workspace, report)
        return _build(run, workspace, merged, quant, target, zip_path, make_zip, report)


def _merge(run: Run, workspace: Workspace, report: Progress) -> Path:
    """The run's merged model, made now (without its zip), and checked against base + adapter."""
    result = merge_run(run, workspace=workspace, make_zip=False,
                       progress=lambda fraction, message: report(0.02 + 0.3 * fraction, message))
    if not result.check.ok:
        raise ExportError(Message("The merged model failed its check, so no GGUF was made from it: {verdict}",
                                  verdict=result.check.verdict))
    return result.merged_dir


def _fresh_merge(run: Run, workspace: Workspace) -> Path | None:
    """The run's merged model in its default place, when it passed its check and is newer than the adapter."""
    folder = export_folder(workspace, run) / "merged"
    return folder if _newer_than_adapter(run, read_json(folder / MARKER, {}) or {}) else None


def _unchanged_export(run: Run, target: Path, zip_path: Path | None) -> GgufResult | None:
    """The export already in `target`, when it passed its check, was made from the adapter as it is now by this
    llama.cpp, and has its zip if one is wanted: made again, it would be the same file (minutes, for a 7B model)."""
    import llama_cpp

    record = read_json(target / MARKER, {}) or {}
    files = sorted(target.glob("*.gguf"))
    if not (files and _newer_than_adapter(run, record) and record.get("llama_cpp") == llama_cpp.__version__
            and (zip_path is None or zip_path.exists())):
        return None
    return GgufResult(run.id, target, files[0], zip_path, target / "README.md", GgufCheck.from_dict(record["check"]),
                      files[0].stat().st_size)


def _newer_than_adapter(run: Run, record: dict) -> bool:
    """Whether an export's record says it passed its check and was made after the adapter was last saved."""
    trained = max((p.stat().st_mtime for p in run.adapter_dir.rglob("*") if p.is_file()), default=float("inf"))
    return bool((record.get("check") or {}).get("ok")) and record.get("created", 0) >= trained


def _build(run: Run, workspace: Workspace, merged: Path, quant: str, target: Path, zip_path: Path, make_zip: bool,
           report: Progress) -> GgufResult:
    import llama_cpp

    from ..models import load_tokenizer

    tokenizer = load_tokenizer(str(merged))
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target, zip_path)
    staging = staging_folder(target)
    try:
        outtype = quant if quant in ("f16", "bf16") else _stored_16_bit(merged)  # what the converter writes
        kind = quant if quant in _FTYPES else outtype  # what the file holds in the end
        gguf = staging / f"{safe_name(run.id, 'run')}-{kind}.gguf"
        sixteen = gguf if kind == outtype else staging / f"{gguf.stem}-{outtype}.gguf"
        _convert(merged, sixteen, outtype, report)
        if kind in _FTYPES:
            report(0.56, Message("Quantising to {quant} with llama.cpp", quant=kind))
            _quantize(sixteen, gguf, kind)
            sixteen.unlink()

        report(0.62, Message("Check: llama.cpp loads the file and reads validation text beside the merged model"))
        pieces = _template_pieces(tokenizer, gguf)
        check = check_gguf(gguf, merged, kind, held_out_examples(workspace, run.config), pieces)
        report(0.9, Message("GGUF check: {verdict}", verdict=check.verdict))
        system = system_prompt(workspace, run.config.dataset)
        write_atomic(staging / "Modelfile", modelfile(gguf.name, pieces if check.modelfile_template else None,
                                                      _stops(tokenizer, merged), system))
        write_json(staging / MARKER, {"run_id": run.id, "base_model": run.config.model, "created": time.time(),
                                      "quant": kind, "llama_cpp": llama_cpp.__version__, "check": check.to_dict()})
        card = write_gguf_card(staging, run, workspace, check, gguf.name, system).name
        if check.ok:
            if make_zip:
                report(0.92, Message("Zipping the GGUF file into {file}", file=zip_path.name))
                zip_folder(staging, staging / zip_path.name,  # inside the folder until it is in place
                           progress=lambda fraction, message: report(0.92 + 0.07 * fraction, message))
            swap_in(staging, target, zip_path)
            shutil.rmtree(failed_folder(target), ignore_errors=True)
            folder = target
        else:  # kept beside for a look, never where downloads come from
            folder = failed_folder(target)
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only left after a failure: no half folder stays behind
    size = (folder / gguf.name).stat().st_size
    report(1.0, Message("Done: {folder} ({size})", folder=str(folder / gguf.name), size=human_size(size)))
    if check.ok:
        return GgufResult(run.id, folder, folder / gguf.name, zip_path if make_zip else None, folder / card, check,
                          size)
    return GgufResult(run.id, folder, folder / gguf.name, None, folder / card, check, size,
                      earlier_zip=zip_path if zip_path.exists() else None)


def _stored_16_bit(merged: Path) -> str:
    """The merged model's 16-bit type, as llama.cpp names it (merge.py saves bfloat16 or float16)."""
    config = read_json(merged / "config.json", {}) or {}
    dtype = config.get("dtype") or config.get("torch_dtype")  # as transformers 5 and older versions name it
    return "f16" if dtype == "float16" else "bf16"


def _convert(merged: Path, out: Path, outtype: str, report: Progress) -> None:
    """llama.cpp's convert_hf_to_gguf.py, in a child process. Its log names each tensor as it plans the file, then
    counts the bytes written in per cent: both move the progress bar."""
    from safetensors import safe_open

    total = sum(len(safe_open(shard, "np").keys()) for shard in merged.glob("*.safetensors")) or 1
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # it must use its own gguf-py
    command = [sys.executable, str(CONVERTER), str(merged), "--outfile", str(out), "--outtype", outtype]
    report(0.33, Message("Converting the merged model to GGUF ({outtype}) with llama.cpp's converter",
                         outtype=outtype))
    tail: deque[str] = deque(maxlen=30)
    planned = 0
    # text mode reads the writer's \r-separated progress bar as lines too
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                          env={**env, "HF_HUB_OFFLINE": "1"}) as child:
        for line in child.stdout:
            tail.append(line.rstrip())
            if " --> " in line:
                planned += 1
                report(0.33 + 0.05 * min(planned / total, 1.0),
                       Message("Converting with llama.cpp: tensor {done} of about {total}", done=planned, total=total))
            elif written := _WRITTEN.match(line):
                report(0.38 + 0.17 * int(written[1]) / 100,
                       Message("Converting with llama.cpp: {percent}% written", percent=int(written[1])))
    if child.returncode != 0:
        reason = next((line for line in reversed(tail) if "Error" in line), tail[-1] if tail else "")
        raise ExportError(Message("llama.cpp's converter failed: {reason}", reason=reason.strip()[:300]))


def _quantize(source: Path, target: Path, quant: str) -> None:
    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # not a line per tensor on the console
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _FTYPES[quant]
    params.nthread = llama_threads()
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) != 0:
        raise ExportError(Message("llama.cpp could not quantise the model to {quant}.", quant=quant))


def _template_pieces(tokenizer, gguf: Path):
    """The pieces of the chat template the run trained with, for the Modelfile, less the beginning-of-text token
    when llama.cpp adds that token itself (as it does for Ollama)."""
    from ..data.templating import FALLBACK_TEMPLATE

    template = None if tokenizer.chat_template else FALLBACK_TEMPLATE
    pieces = chat_pieces(lambda messages, generation: tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=generation))
    if pieces is None or not tokenizer.bos_token or not _adds_bos(gguf):
        return pieces
    return pieces.without_start(tokenizer.bos_token)


def _adds_bos(gguf: Path) -> bool:
    """Whether llama.cpp puts the beginning-of-text token before a prompt it tokenizes for this file."""
    from llama_cpp import Llama

    vocabulary = Llama(str(gguf), vocab_only=True, verbose=False)
    try:
        return vocabulary.tokenize(b"", add_bos=True, special=True) == [vocabulary.token_bos()]
    finally:
        vocabulary.close()


def _stops(tokenizer, merged: Path) -> list[str]:
    """The texts of the tokens that end an answer: the generation config's and the tokenizer's end of text."""
    configured = (read_json(merged / "generation_config.json", {}) or {}).get("eos_token_id")
    ids = configured if isinstance(configured, list) else [] if configured is None else [configured]
    texts = [tokenizer.convert_ids_to_tokens(i) for i in ids] + [tokenizer.eos_token]
    return list(dict.fromkeys(t for t in texts if t))


def offered_ggufs(workspace: Workspace) -> list[tuple[str, str, Path]]:
    """(run id, type, file) of every GGUF export in its default place that passed its check."""
    found = []
    for marker in sorted(workspace.exports.glob(f"*/gguf-*/{MARKER}")):
        record = read_json(marker, {}) or {}
        files = sorted(marker.parent.glob("*.gguf"))
        if (record.get("check") or {}).get("ok") and files:
            found.append((record.get("run_id", marker.parent.parent.name), record.get("quant", "?"), files[0]))
    return found
