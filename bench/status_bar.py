"""What the status bar costs the server while many pages are open.

Serves the app on a loopback port over a temporary workspace that looks like a lab's after a while (finished runs,
one training, two waiting; the job queue's dispatcher is stopped, so nothing really trains), opens N pages in
Debian's chromium (in a child process, so the browser's work is not counted as the server's), leaves them open on
the first view for a while and records:

- the two parts of each refresh's handler on the server: getting the shared survey (taking it, for the first
  page that asks after it is a second old; waiting for it or reading it, for the others) and rendering it for
  the page; and how many surveys were taken for how many refreshes;
- each refresh's server time as the browser saw it (request sent to first byte back, on the loopback);
- the server process's CPU time over the window, as a share of one core, against the same window with no page.

    python bench/status_bar.py --pages 8 --seconds 60     # writes bench/results/status_bar.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # as tests/conftest.py launches it


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {}
    at = lambda share: round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)  # noqa: E731
    return {"count": len(ordered), "p50": at(0.5), "p95": at(0.95), "max": round(ordered[-1], 2),
            "mean": round(statistics.mean(ordered), 2)}


def lab_workspace(workspace, finished: int) -> None:
    """Finished runs with their metrics, one run training (step 12 of 40) and two waiting."""
    from studio.config import TrainConfig
    from studio.runs import create_run
    from studio.workspace import append_jsonl

    for i in range(finished):
        run = create_run(workspace, TrainConfig(dataset="d"), owner=f"user{i % 5}", name=f"done-{i}",
                         state="completed")
        for step in range(1, 41):
            append_jsonl(run.path / "metrics.jsonl", {"step": step, "max_steps": 40, "loss": 3 - step / 20})
    training = create_run(workspace, TrainConfig(dataset="d"), owner="ana", name="training", state="running")
    for step in range(1, 13):
        append_jsonl(training.path / "metrics.jsonl", {"step": step, "max_steps": 40, "loss": 3 - step / 20})
    for owner in ("bo", "cy"):
        create_run(workspace, TrainConfig(dataset="d"), owner=owner, name="waiting")


class Timed:
    """Wraps a function: the seconds each call took (from any thread)."""

    def __init__(self, owner, name: str):
        self.seconds: list[float] = []
        function = getattr(owner, name)
        lock = threading.Lock()

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    self.seconds.append(time.perf_counter() - started)

        setattr(owner, name, timed)


def server_cpu_share(seconds: float) -> float:
    """This process's CPU time over `seconds` of wall time, as a share of one core."""
    cpu, wall = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    return round((time.process_time() - cpu) / (time.perf_counter() - wall), 4)


def open_pages(url: str, pages: int, seconds: float) -> dict:
    """(In the child process) N pages open for `seconds`: every request's server time, by endpoint."""
    from playwright.sync_api import sync_playwright

    by_endpoint: dict[str, list[float]] = {}

    def finished(request):
        if "/gradio_api/" not in request.url or request.method != "POST":
            return
        timing = request.timing
        endpoint = request.url.split("/gradio_api/", 1)[1].split("?")[0]
        by_endpoint.setdefault(endpoint, []).append(timing["responseStart"] - timing["requestStart"])

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        opened = []
        for _ in range(pages):
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(url)
            page.locator("#status-bar .status-items").wait_for()
            opened.append(page)
        started = time.perf_counter()
        for page in opened:
            page.on("requestfinished", finished)
        print("open", flush=True)  # the parent measures from here
        while time.perf_counter() - started < seconds:
            opened[0].wait_for_timeout(200)  # lets playwright deliver the pages' events meanwhile
        browser.close()
    return {endpoint: percentiles(times) for endpoint, times in by_endpoint.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--finished-runs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "status_bar.json")
    parser.add_argument("--open-pages", metavar="URL", help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args(argv)
    if args.open_pages:
        print(json.dumps(open_pages(args.open_pages, args.pages, args.seconds)))
        return {}

    from app_server import serving, with_embedded_model
    from studio.gpu import list_gpus
    from studio.models import resolve_model
    from studio.ui import status_bar
    from studio.workspace import Workspace

    load = [round(os.getloadavg()[0], 2)]
    model_dir = Path(resolve_model("embedded", Workspace.at(REPO / ".cache" / "test-workspace")))
    with tempfile.TemporaryDirectory(prefix="status-bar-bench-") as tmp:
        workspace = with_embedded_model(Workspace.at(Path(tmp) / "workspace"), model_dir)
        surveys, shared, renders = (Timed(status_bar, "survey"), Timed(status_bar.SharedSurvey, "__call__"),
                                    Timed(status_bar, "render"))
        with serving(workspace) as studio:
            studio.queue.close()  # nothing trains: the bench measures the pages, not a job
            lab_workspace(workspace, args.finished_runs)
            idle = server_cpu_share(args.seconds / 2)
            child = subprocess.Popen([sys.executable, __file__, "--open-pages", studio.url, "--pages", str(args.pages),
                                      "--seconds", str(args.seconds)], stdout=subprocess.PIPE, text=True)
            assert child.stdout.readline().strip() == "open", "the pages did not open"
            for timed in (surveys, shared, renders):
                timed.seconds.clear()  # the pages' first loads are not the steady state
            busy = server_cpu_share(args.seconds)
            seen = json.loads(child.stdout.read())
            child.wait()
    gpus = list_gpus()
    result = {
        "pages": args.pages, "seconds": args.seconds, "refresh_every_s": status_bar.REFRESH_S,
        "survey_shared_for_s": status_bar.SHARED_S, "finished_runs": args.finished_runs,
        "device": gpus[0]["name"] if gpus else f"cpu ({len(os.sched_getaffinity(0))} cores)",
        "refreshes": len(renders.seconds), "surveys_taken": len(surveys.seconds),
        "survey_ms": percentiles([s * 1000 for s in surveys.seconds]),
        "waiting_for_the_shared_survey_ms": percentiles([s * 1000 for s in shared.seconds]),
        "render_ms": percentiles([s * 1000 for s in renders.seconds]),
        "browser_seen_server_ms": seen,
        "server_cpu_share_of_one_core": {"no_page": idle, "pages_open": busy},
        "load_average_1min": {"start": load[0], "end": round(os.getloadavg()[0], 2)},  # others' work on the machine
        "command": "python bench/status_bar.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
