"""python -m studio merge RUN [--out DIR] [--zip] and python -m studio export RUN --format gguf --quant Q [--out DIR]
[--zip]: the Export tab, from the command line."""
from __future__ import annotations

import argparse
import sys

from ..runs import run_folder_or_id
from ..workspace import Workspace
from .checks import ExportError, human_size
from .gguf import QUANTS, export_gguf
from .merge import merge_run


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "merge", help="merge a run's adapter into its base model and save a standalone model",
        description="Reload the run's base model unquantised, merge the LoRA adapter into it, check that the merged "
                    "model answers like base + adapter, and save it in the base's 16-bit dtype (safetensors), with "
                    "its tokenizer and a model card. "
                    "Exit status: 0 done, 1 the merge check failed (that model is saved beside as DIR-failed-check; an "
                    "earlier export in DIR stays as it was), 2 nothing saved (the reason is printed).")
    parser.add_argument("run", metavar="RUN", help="a run folder (it holds run.yaml) or a run id in the workspace")
    parser.add_argument("--out", metavar="DIR",
                        help="where to save the merged model (default: workspace/exports/<run-id>/merged)")
    parser.add_argument("--zip", action="store_true", help="also write <run-id>-merged.zip next to the folder")
    parser.set_defaults(func=run_merge)

    parser = subparsers.add_parser(
        "export", help="export a run for llama.cpp, Ollama and LM Studio (GGUF)",
        description="Merge the run's adapter (or reuse its checked merged model), convert it to GGUF with llama.cpp's "
                    "converter, quantise it with llama.cpp's quantizer, and check the file in llama.cpp against the "
                    "merged model before writing it with an Ollama Modelfile and a model card. "
                    "Exit status: 0 done, 1 the GGUF check failed (that file is saved beside as DIR-failed-check; an "
                    "earlier export in DIR stays as it was), 2 nothing saved (the reason is printed).")
    parser.add_argument("run", metavar="RUN", help="a run folder (it holds run.yaml) or a run id in the workspace")
    parser.add_argument("--format", choices=["gguf"], default="gguf", help="the file format (gguf)")
    parser.add_argument("--quant", choices=[*QUANTS, "f16", "bf16"], default="q4_k_m",
                        help="q4_k_m (laptops and CPUs), q8_0 (nearly lossless), 16-bit (the model's own bf16 or "
                             "f16), or f16 / bf16 by name (default: q4_k_m)")
    parser.add_argument("--out", metavar="DIR",
                        help="where to save it (default: workspace/exports/<run-id>/gguf-<quant>)")
    parser.add_argument("--zip", action="store_true", help="also write <run-id>-<quant>-gguf.zip next to the folder")
    parser.set_defaults(func=run_export)


def run_merge(args: argparse.Namespace) -> int:
    return _exported(args, lambda workspace, run: merge_run(run, args.out, workspace=workspace, make_zip=args.zip,
                                                           progress=_print_progress),
                     lambda result: [("Merge check", result.check.verdict),
                                     ("Merged model", f"{result.merged_dir} ({human_size(result.size_bytes)})")],
                     "the merge check failed; the files were saved, but use the adapter instead")


def run_export(args: argparse.Namespace) -> int:
    return _exported(args, lambda workspace, run: export_gguf(run, args.quant, args.out, workspace=workspace,
                                                             make_zip=args.zip, progress=_print_progress),
                     lambda result: [("GGUF check", result.check.verdict),
                                     ("GGUF file", f"{result.gguf_path} ({human_size(result.size_bytes)})"),
                                     ("Modelfile", result.folder / "Modelfile")],
                     "the GGUF check failed; the file was saved for a look, but is not offered")


def _exported(args: argparse.Namespace, export, lines, failed: str) -> int:
    """Run an export of args.run and print what it made: its own lines, then the model card and the zip; exit code 0,
    1 when its check failed (the earlier export kept, if any), 2 when it could not be made."""
    try:
        workspace = Workspace.at(getattr(args, "workspace", None))
        result = export(workspace, run_folder_or_id(workspace, args.run))
    except (ExportError, ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    for label, value in [*lines(result), ("Model card", result.card_path), ("Zip", result.zip_path)]:
        if value:
            print(f"{label + ':':<14}{value}")
    if not result.check.ok:
        if result.earlier_zip:
            print(f"{'Kept:':<14}{result.earlier_zip} (an earlier export, which passed its check)")
        print(f"error: {failed}", file=sys.stderr)
        return 1
    return 0


def _print_progress(fraction: float, message: str) -> None:
    print(f"[{fraction:4.0%}] {message}", flush=True)
