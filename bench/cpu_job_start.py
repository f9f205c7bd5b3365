"""How soon a training job on the CPU gets going: a child started afresh (`python -m studio train RUN`, what the
queue did before) against one forked warm by studio/launcher.py, the same short run of the embedded model in turn.
For each: seconds from the start to the run's first logged update, and to the child's end; and the helper's own
cost (seconds to import, resident memory).

    python bench/cpu_job_start.py --out bench/results/cpu_job_start.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "tests" / "data" / "pirate_chat.jsonl"  # 32 chats


def timed(start_child, run) -> dict:
    """Seconds to the first logged update and to the end, for a child start_child() starts on the run."""
    started = time.time()
    child = start_child()
    first = None
    while (code := child.poll() if hasattr(child, "poll") else child.returncode) is None:
        if first is None and run.metrics():
            first = time.time() - started
        time.sleep(0.05)
    ended = time.time() - started
    assert code == 0, f"the run failed ({code}): {run.log_tail()}"
    return {"to_first_update_s": round(first or ended, 2), "to_end_s": round(ended, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", help="write the results here as JSON")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from studio.config import TrainConfig
    from studio.jobs import child_env, train_command
    from studio.launcher import Launcher
    from studio.models import EMBEDDED, resolve_model
    from studio.runs import create_run
    from studio.workspace import Workspace

    model = resolve_model(EMBEDDED, Workspace.at(), progress=lambda _m: None)
    workspace = Workspace.at(tempfile.mkdtemp(prefix="cpu-job-start-"))
    env = child_env([""])

    def new_run():
        return create_run(workspace, TrainConfig(model=model, dataset=str(DATA), max_steps=args.steps, batch_size=2,
                                                 logging_steps=1, val_fraction=0.0, report_card=False))

    began = time.time()
    launcher = Launcher(env=env)
    ready = create_run(workspace, TrainConfig(dataset="d"))  # a first command returns once the imports are done
    launcher.start(["--workspace", str(workspace.root), "runs"], env, ready.log_path).wait()
    helper_ready_s = time.time() - began
    helper_rss_mb = int(Path(f"/proc/{launcher.pid}/status").read_text().split("VmRSS:")[1].split()[0]) // 1024

    results = {"fresh": [], "warm": []}
    for _ in range(args.repeats):
        run = new_run()

        def fresh(run=run):
            with open(run.log_path, "ab") as log:
                return subprocess.Popen(train_command(workspace, run), stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True, cwd=ROOT)
        results["fresh"].append(timed(fresh, run))
        run = new_run()
        command = train_command(workspace, run)[3:]
        results["warm"].append(timed(lambda: launcher.start(command, env, run.log_path), run))
    launcher.close()

    def median(kind: str, key: str) -> float:
        values = sorted(r[key] for r in results[kind])
        return values[len(values) // 2]

    import torch

    report = {
        "command": "python bench/cpu_job_start.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, no GPU used",
        "load_average_after": round(os.getloadavg()[0], 1),
        "run": f"embedded model, {args.steps} updates of 2 rows, 4-bit, no validation, no report card",
        "helper": {"ready_s": round(helper_ready_s, 1), "resident_mb": helper_rss_mb},
        "runs": results,
        "median": {kind: {key: median(kind, key) for key in ("to_first_update_s", "to_end_s")}
                   for kind in results},
    }
    report["median"]["saved_s"] = round(report["median"]["fresh"]["to_first_update_s"]
                                        - report["median"]["warm"]["to_first_update_s"], 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
