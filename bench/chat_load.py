"""Several people chatting through the app's own API (gradio_client) while a training job runs.

Starts the app on a loopback port over a temporary workspace, queues a training run, then lets N users
each send M messages to the Chat tab's endpoint at once. Writes latency percentiles, how many answers
were generated at the same time (at most, and on average while any was) and the training's steps during
the load to bench/results/chat_load.json (or --out).

    python bench/chat_load.py --users 8 --messages 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

QUESTIONS = ["What is the capital of France?", "Name a fruit.", "What is 3 plus 4?", "Say hello.",
             "What colour is grass?", "Name an ocean.", "How many legs has a cat?", "What is ice?"]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)


def device_name() -> str:
    """What the app ran on: the GPU's name, else the CPU and how many cores this process may use."""
    from studio.gpu import list_gpus

    gpus = list_gpus()
    return gpus[0]["name"] if gpus else f"cpu ({len(os.sched_getaffinity(0))} cores)"


def main() -> None:
    from gradio_client import Client

    from app_server import GenerationsAtOnce, serving, with_embedded_model
    from studio.config import TrainConfig
    from studio.models import EMBEDDED_LABEL, resolve_model
    from studio.workspace import Workspace

    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--messages", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "chat_load.json"))
    args = parser.parse_args()

    model_dir = Path(resolve_model("embedded", Workspace.at(REPO / ".cache" / "test-workspace")))
    workspace = with_embedded_model(Workspace.at(Path(tempfile.mkdtemp()) / "workspace"), model_dir)
    with serving(workspace) as studio:
        run = studio.queue.submit(TrainConfig(model="embedded", dataset=str(REPO / "tests/data/pirate_chat.jsonl"),
                                              max_steps=400, batch_size=2, max_length=64, val_fraction=0.0))
        while not any("loss" in m for m in run.metrics()):  # the job is really training before the load starts
            time.sleep(1)
        steps_before = max(m["step"] for m in run.metrics() if "loss" in m)
        latencies, first_updates, errors = [], [], []
        at_once = GenerationsAtOnce(studio.pool)
        lock = threading.Lock()

        def user(number: int) -> None:
            client = Client(studio.url, verbose=False)
            for i in range(args.messages):
                question = QUESTIONS[(number + i) % len(QUESTIONS)]
                started = time.perf_counter()
                job = client.submit(question, [], [], EMBEDDED_LABEL, "auto", "Base model (no adapter)",
                                    "Base model (no adapter)", False, "", 0, 0.9, args.max_new_tokens, 1.1,
                                    api_name="/on_send")
                first = None
                for _update in job:
                    first = first or time.perf_counter() - started
                job.result()
                with lock:
                    latencies.append(time.perf_counter() - started)
                    first_updates.append(first or latencies[-1])
                    if "❌" in str(job.outputs()[-1]):
                        errors.append(str(job.outputs()[-1])[:200])

        load_started = time.time()
        users = [threading.Thread(target=user, args=(n,)) for n in range(args.users)]
        for thread in users:
            thread.start()
        for thread in users:
            thread.join()
        load_seconds = time.time() - load_started
        steps_after = max(m["step"] for m in run.metrics() if "loss" in m)
        studio.queue.stop(run.id)

    result = {"users": args.users, "messages_each": args.messages, "max_new_tokens": args.max_new_tokens,
              "device": device_name(), "requests": len(latencies), "errors": errors,
              "latency_s": {"p50": percentile(latencies, 0.5), "p90": percentile(latencies, 0.9),
                            "p99": percentile(latencies, 0.99), "mean": round(statistics.mean(latencies), 2)},
              "first_update_s": {"p50": percentile(first_updates, 0.5), "p90": percentile(first_updates, 0.9)},
              "generations_at_once": {"max": at_once.peak, "mean": round(at_once.mean, 2)},
              "load_seconds": round(load_seconds, 1), "training_steps_during_load": steps_after - steps_before}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
