"""The status bar under every view: each GPU's memory and load, the jobs running with their owner and progress,
how many wait in the queue, and who is logged in. It refreshes itself.

Every open page asks every few seconds, so one survey of the machine answers all the pages that ask within a
second: many open pages cost the server about one survey a second, not one per page."""
from __future__ import annotations

import html
import threading
import time
from dataclasses import dataclass

import gradio as gr

from ..gpu import survey_gpus
from ..messages import Message
from .context import Studio
from .i18n import Labels, Translator

REFRESH_S = 2.0  # how often each page asks
SHARED_S = 1.0  # how long one survey answers every page


@dataclass(frozen=True)
class Survey:
    gpus: list[dict]  # as studio.gpu.survey_gpus reads them: index, name, used_gb, total_gb, util
    gpu_problem: Message | None  # why NVML cannot see this machine's GPUs
    running: list[dict]  # each running job: run, owner, kind ("train" or "eval"), step, total
    waiting: int  # jobs queued behind them


def survey(studio: Studio) -> Survey:
    gpus, problem = survey_gpus()
    running, waiting = [], 0
    for run in studio.queue.queue():
        kind, state, _ = run.job() or ("", "", 0)
        if state == "queued":
            waiting += 1
        elif state == "running":
            last = next((m for m in reversed(run.metrics()) if "max_steps" in m), {})
            running.append({"run": run.id, "owner": run.status().get("owner", ""), "kind": kind,
                            "step": last.get("step", 0), "total": last.get("max_steps")})
    return Survey(gpus, problem, running, waiting)


class SharedSurvey:
    """The latest survey, taken again once it is older than `max_age`; while one page takes it, the others that
    ask wait for it rather than survey too."""

    def __init__(self, studio: Studio, max_age: float = SHARED_S):
        self._studio, self._max_age = studio, max_age
        self._lock = threading.Lock()
        self._taken, self._latest = float("-inf"), None

    def __call__(self) -> Survey:
        with self._lock:
            if time.monotonic() - self._taken >= self._max_age:
                self._latest, self._taken = survey(self._studio), time.monotonic()
            return self._latest


def gpu_items(found: Survey, t: Translator) -> list[tuple[str, str]]:
    """(text, longer text for the tooltip) for each GPU, or for their absence."""
    if found.gpu_problem:
        return [("⚠️ " + t("The GPUs cannot be seen (NVML failed)"), t.message(found.gpu_problem))]
    if not found.gpus:
        return [(t("No NVIDIA GPU here: training runs on the CPU"), "")]
    return [(t("GPU {index}: {used:.1f} of {total:.0f} GB, {util}% busy", index=g["index"], used=g["used_gb"],
               total=g["total_gb"], util=g["util"]) if g.get("util") is not None else
             t("GPU {index}: {used:.1f} of {total:.0f} GB", index=g["index"], used=g["used_gb"], total=g["total_gb"]),
             g["name"]) for g in found.gpus]


def job_items(found: Survey, t: Translator) -> list[tuple[str, str]]:
    if not found.running:
        return [(t("Nothing is training"), "")]
    return [("▶ " + (t("{run} ({owner}): step {step} of {total}", run=job["run"], owner=job["owner"],
                       step=job["step"], total=job["total"] or "?") if job["kind"] == "train" else
                     t("{run} ({owner}): making its report card", run=job["run"], owner=job["owner"])), "")
            for job in found.running]


def render(found: Survey, user: str, t: Translator) -> str:
    items = [*gpu_items(found, t), *job_items(found, t),
             (t("{count} waiting in the queue", count=found.waiting), ""), (t("User: {user}", user=user), "")]
    # Names people chose (runs, logins) are text, never markup. Not a live region: it changes every few seconds.
    spans = "".join(f'<span title="{html.escape(title)}">{html.escape(text)}</span>' if title else
                    f"<span>{html.escape(text)}</span>" for text, title in items)
    return f'<div role="region" aria-label="{html.escape(t("Status"))}" class="status-items">{spans}</div>'


def build(studio: Studio, labels: Labels, page: gr.Blocks) -> gr.HTML:
    shared = SharedSurvey(studio)
    bar = gr.HTML(elem_id="status-bar")
    timer = gr.Timer(REFRESH_S)

    def refresh(lang, request: gr.Request):
        return render(shared(), studio.user(request), Translator(lang))

    # Outside Gradio's queue (queue=False): a refresh never waits behind a long event, nor holds one up.
    gr.on([page.load, timer.tick, labels.language.change], refresh, labels.language, bar, queue=False,
          show_progress="hidden")
    return bar
