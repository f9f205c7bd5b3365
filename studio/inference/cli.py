"""python -m studio chat: ask a trained adapter a question, optionally next to its base model."""
from __future__ import annotations

import argparse
import json
import sys

from ..models import EMBEDDED, ModelNotFound, resolve_model
from ..runs import run_folder_or_id
from ..workspace import Workspace
from .pool import QUANTIZATIONS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "chat", help="ask a trained adapter a question (optionally next to its base model)",
        description="Answer one message with a LoRA adapter. Greedy (the most likely answer) unless --temperature "
                    "is above 0.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a run folder, or the id of a run in the workspace")
    source.add_argument("--adapter", help="any peft LoRA adapter folder (the one holding adapter_config.json)")
    p.add_argument("--model", help="the base model: a folder, hub id or .gguf file. Default: the run's model; for "
                                   "--adapter, the model the adapter names if it is available, else the embedded one")
    p.add_argument("--prompt", required=True, help="the message to answer")
    p.add_argument("--system", default="", help="a system prompt")
    p.add_argument("--compare", action="store_true", help="also answer with the base model, side by side")
    p.add_argument("--json", action="store_true", help="print one JSON object with the answers and their timings")
    p.add_argument("--max-new-tokens", type=int, default=256, help="the longest answer, in tokens (default 256)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 = greedy (default); up to 2 for more varied answers")
    p.add_argument("--top-p", type=float, default=0.9, help="with --temperature above 0: sample from the most "
                                                            "likely tokens that together have this probability")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="above 1 discourages repeating (default 1)")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="auto",
                   help="how to load the base model; auto = what fits this machine")
    p.set_defaults(func=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    try:
        workspace = Workspace.at(getattr(args, "workspace", None))
        adapter, model_path = _adapter_and_model(args, workspace)
        # torch and transformers load only now: a wrong folder or run is reported at once.
        from .generate import GenerationSettings, chat, compare
        from .pool import ModelPool

        settings = GenerationSettings(temperature=args.temperature, top_p=args.top_p,
                                      max_new_tokens=args.max_new_tokens,
                                      repetition_penalty=args.repetition_penalty).validate()
        _quiet_libraries()
        pool = ModelPool(max_bases=1, max_adapters=1, max_concurrent=1)
        ask = dict(system=args.system, settings=settings, quantization=args.quantization)
        stream = compare(pool, model_path, args.prompt, left=None, right=adapter, **ask) if args.compare \
            else chat(pool, model_path, args.prompt, adapter=adapter, **ask)
        if args.json or args.compare:
            answers = stream.collect()
        else:
            try:
                for deltas in stream:
                    print(deltas[0], end="", flush=True)
            except KeyboardInterrupt:
                stream.stop()
                print()
                return 130
            print()
            answers = stream.answers
    except (ValueError, OSError) as e:  # every user-facing error of the studio is one of these
        print(f"error: {(str(e).strip().splitlines() or [type(e).__name__])[0]}", file=sys.stderr)
        return 2
    for answer in answers:
        if answer.warning:
            print(f"warning: {answer.warning}", file=sys.stderr)
    labels = ["base", "adapter"] if args.compare else ["adapter"]
    if args.json:
        print(json.dumps({**{k: a.text for k, a in zip(labels, answers)},
                          "timing": {k: {n: v for n, v in a.to_dict().items() if n != "text"}
                                     for k, a in zip(labels, answers)}}, ensure_ascii=False))
    elif args.compare:
        for label, answer in zip(["base model", "adapter"], answers):
            print(f"--- {label} ---\n{answer.text}")
    return 0


def _adapter_and_model(args, workspace: Workspace) -> tuple[str, str]:
    """The adapter folder and the resolved base model path."""
    from .adapters import read_adapter

    if args.run:
        run = run_folder_or_id(workspace, args.run)
        if not run.has_adapter():
            raise ValueError(f"Run {run.id} has no adapter yet (it is {run.state}). Chat with it once it has "
                             "finished training.")
        return str(run.adapter_dir), _resolve(args.model or run.config.model, workspace)
    source = read_adapter(args.adapter)
    if args.model:
        return str(source.path), _resolve(args.model, workspace)
    if source.base_model:
        try:
            return str(source.path), _resolve(source.base_model, workspace)
        except ModelNotFound:
            print(f"note: the adapter's base model '{source.base_model}' is not available here; using the "
                  "embedded model (pass --model to choose another)", file=sys.stderr)
    return str(source.path), _resolve(EMBEDDED, workspace)


def _resolve(spec: str, workspace: Workspace) -> str:
    # Progress notes go to stderr: stdout carries only the answer (or the JSON object).
    return resolve_model(spec, workspace, progress=lambda message: print(message, file=sys.stderr))


def _quiet_libraries() -> None:
    """Library progress bars and advice would bury the answer and the one-line errors."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
