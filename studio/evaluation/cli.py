"""`python -m studio eval RUN [--data FILE] [--json]`: a run's report card, made now."""
from __future__ import annotations

import json

from ..runs import run_folder_or_id
from ..workspace import Workspace


def register(commands) -> None:
    parser = commands.add_parser(
        "eval", help="make a run's report card: base vs adapter on examples it did not train on",
        description="Answer held-out prompts with the base model and with the run's adapter, score both against the "
                    "expected answers, and give a verdict. The card is saved in the run folder (report.json, or "
                    "reports/<data>.json for other data); its fields are described in docs/report-card.md.")
    parser.add_argument("run", help="a run folder or a run id")
    parser.add_argument("--data", help="a saved dataset's name or a data file (default: the data the run trained on, "
                                       "on the examples it held out)")
    parser.add_argument("--json", action="store_true", help="print the report card as one JSON object")
    parser.set_defaults(func=eval_command)


def eval_command(args) -> int:
    from ..data import DatasetError
    from ..models import ModelNotFound
    from .evaluate import evaluate_run

    workspace = Workspace.at(args.workspace)
    quiet = (lambda _m: None) if args.json else (lambda m: print(m, flush=True))
    try:
        card = evaluate_run(run_folder_or_id(workspace, args.run), workspace, args.data, progress=quiet)
    except (FileNotFoundError, DatasetError, ModelNotFound, ValueError) as e:
        print(f"error: {e}", flush=True)
        return 2
    print(json.dumps(card, ensure_ascii=False, indent=1) if args.json else describe(card), flush=True)
    return 0


def describe(card: dict) -> str:
    """The card as a few lines for a terminal."""
    o = card["overall"]
    pairs = card.get("kind") == "pairs"
    what = "pairs" if pairs else "examples"
    source = {"held_out": f"held-out {what}", "training": f"TRAINING {what} (none were held out)",
              "other": f"{what} of {card['data']}"}[card["source"]]
    lines = [f"Report card for {card['run']}, on {o['examples']} {source}"]
    if pairs:
        lines += [f"  prefers the chosen answer: base {o['base_prefers_chosen']:.0%}, adapter "
                  f"{o['adapter_prefers_chosen']:.0%}",
                  f"  margin per token (chosen minus rejected): base {o['base_margin']:.3f}, adapter "
                  f"{o['adapter_margin']:.3f}"]
    else:
        lines += [f"  expected answers {o['likelihood_gain']:.2f}x as likely per token with the adapter",
                  f"  closeness to the expected answers (chrF): base {o['base_chrf']:.1f}, adapter "
                  f"{o['adapter_chrf']:.1f}"]
    lines += [f"  verdict: {card['verdict_text']}", f"  next: {card['next_step']}", ""]
    for e in card["examples"]:
        prompt = e["prompt"] if isinstance(e["prompt"], str) else e["prompt"][-1]["content"]
        wanted = [f"  chosen:   {e['chosen']}", f"  rejected: {e['rejected']}"] if pairs else \
            [f"  expected: {e['expected']}"]
        lines += [f"> {prompt}", *wanted, f"  base:     {e['base']}", f"  adapter:  {e['adapter']}", ""]
    return "\n".join(lines)
