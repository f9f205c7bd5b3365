"""How long the small-data defaults take on this machine: a preset (Chatbot) and nothing set by hand, on style
datasets of 16, 100 and 1,000 rows, through the job queue as the Train tab starts them, report card included;
and whether they worked: each run's report card against a run of the preset's own values on 16 rows.

Each size runs in full up to --max-updates updates (a 1,000-row run makes hundreds: an hour or more on two CPU
cores); beyond that the total is worked out: its measured start-up, the updates times the median time of one, the
full run's evaluations times the measured time of one, and the report card. The results file says which figures
were measured and which were worked out. It also records the embedded model's training speed on this CPU (tokens a
second), which the Train tab quotes for a first run.

    python bench/small_data.py --rows 16 100 1000 --out bench/results/small_data.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = ["What is the capital of {x}?", "How big is {x}?", "What is {x} known for?", "Where is {x}?"]
PLACES = ["France", "Peru", "Kenya", "Japan", "Norway", "Chile", "Egypt", "Canada", "Spain", "India", "Ghana",
          "Italy", "Nepal", "Cuba", "Iran", "Mali", "Laos", "Oman", "Chad", "Fiji", "Togo", "Iraq", "Niger", "Qatar",
          "Malta"]


def style_rows(n: int) -> list[dict]:
    """n distinct questions answered in a pirate's voice, as an alpaca-shaped file has them."""
    return [{"instruction": QUESTIONS[i % 4].format(x=PLACES[i // 4 % 25]) + ("" if i < 100 else f" (#{i})"),
             "output": f"Arr, matey! Ye ask about {PLACES[i // 4 % 25]}, a fine port it be, yo ho ho!"}
            for i in range(n)]


def measure(rows: int, max_updates: int, workspace, root: Path, rule: bool = True) -> dict:
    from studio.config import config_from_preset, load_presets
    from studio.data import inspect_file, save_dataset
    from studio.jobs import JobQueue
    from studio.models import load_tokenizer, resolve_model
    from studio.training import small_data

    tokenizer = load_tokenizer(resolve_model("embedded", workspace, progress=lambda _m: None))
    name = f"style-{rows}" + ("" if rule else "-preset-values")
    data = root / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in style_rows(rows)))
    report = inspect_file(data, tokenizer, max_length=1024)
    save_dataset(workspace, name, data, report)
    preset = config_from_preset(load_presets()["chatbot"], dataset=name)
    # Without the rule: the preset's own values, as if a person had set them by hand.
    config, schedule = small_data.apply(preset, rows, set() if rule else set(small_data.RULED))
    planned = schedule.updates
    if planned > max_updates:
        config.max_steps = max_updates  # measured in part; the rest worked out below
    queue = JobQueue(workspace, devices=[""], poll=0.5)
    load_before = os.getloadavg()[0]  # how busy the two cores were: a shared CPU slows every update
    started = time.time()
    run = queue.submit(config)
    state = queue.wait(run.id, timeout=6 * 3600)
    queue.close()
    wall = time.time() - started
    status, logged = run.status(), run.metrics()
    metrics = [m for m in logged if "loss" in m]
    steps = [m["elapsed"] for m in metrics]
    # An update's own time is the median gap between updates; what the gaps add up to beyond that went to the
    # evaluations between them. A shortened run evaluates every tenth of its own length, far more often than the
    # full run would, so the two are worked out apart.
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    per_update = statistics.median(gaps) if gaps else None
    evaluations = sum("eval_loss" in m for m in logged)
    per_evaluation = (sum(gaps) - per_update * len(gaps)) / evaluations if evaluations and gaps else 0.0
    full_evaluations = planned // (config.eval_steps or math.ceil(0.1 * planned)) if evaluations else 0
    card = json.loads((run.path / "report.json").read_text()) if (run.path / "report.json").exists() else {}
    card_s = card.get("seconds", 0.0)
    training_s = steps[-1] if steps else 0.0
    start_up = wall - training_s - card_s  # the child's start, model load, tokenizing, saving
    total = wall if planned <= max_updates else \
        start_up + planned * per_update + full_evaluations * per_evaluation + card_s
    return {"rows": rows, "small_data_rule": rule, "schedule": {"examples": schedule.examples, "passes": schedule.passes, "updates": planned,
                                       "learning_rate": schedule.learning_rate, "raised": schedule.raised},
            "state": state, "chrf_base": card.get("overall", {}).get("base_chrf"),
            "chrf_adapter": card.get("overall", {}).get("adapter_chrf"),
            "likelihood_gain": card.get("overall", {}).get("likelihood_gain"),
            "adapter_answers": [e["adapter"] for e in card.get("examples", [])], "message": status.get("message"), "updates_run": len(metrics),
            "measured_in_full": planned <= max_updates, "seconds_per_update": round(per_update or 0, 2),
            "seconds_per_evaluation": round(per_evaluation, 1), "evaluations_in_full_run": full_evaluations,
            "start_up_s": round(start_up, 1), "report_card_s": card_s, "verdict": card.get("verdict"),
            "total_s": round(total, 1), "total_min": round(total / 60, 1),
            "tokens_per_s_median": statistics.median(m["tokens_per_s"] for m in metrics) if metrics else None,
            "mean_tokens_per_row": report.tokens["mean"], "first_loss": metrics[0]["loss"] if metrics else None,
            "last_loss": metrics[-1]["loss"] if metrics else None,
            "early_stopped": len(metrics) < min(planned, max_updates),
            "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 100, 1000])
    parser.add_argument("--max-updates", type=int, default=80, help="run at most this many updates a size")
    parser.add_argument("--without-rule", type=int, nargs="*", default=[16],
                        help="also train these sizes with the preset's own passes and learning rate, to compare")
    parser.add_argument("--out", default="bench/results/small_data.json")
    args = parser.parse_args()
    from studio.workspace import Workspace

    root = Path(tempfile.mkdtemp())
    workspace = Workspace.at(root / "workspace")
    summary = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} cores, torch {torch.__version__}, CPU", "preset": "chatbot",
               "command": "python " + " ".join(sys.argv), "runs": []}
    sizes = [(rows, False) for rows in args.without_rule] + [(rows, True) for rows in args.rows]
    for rows, rule in sizes:  # written after each size: a long bench cut short keeps what it measured
        summary["runs"].append(measure(rows, args.max_updates, workspace, root, rule))
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
