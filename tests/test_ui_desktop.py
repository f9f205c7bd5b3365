"""The studio as one desktop-style window: the status bar's figures, and what one survey of them costs."""
import threading
import time

import pytest

from studio.config import TrainConfig
from studio.jobs import JobQueue
from studio.runs import create_run
from studio.ui import status_bar
from studio.ui.context import Studio
from studio.ui.i18n import Translator
from studio.workspace import append_jsonl

H200 = {"index": 0, "name": "NVIDIA H200", "used_gb": 23.44, "total_gb": 139.8, "free_gb": 116.36, "util": 97}


def busy_queue(workspace) -> JobQueue:
    """A queue that starts nothing, holding one run training for ana (step 3 of 40), a report card being made for
    bo, and two runs waiting."""
    queue = JobQueue(workspace, devices=[])
    training = create_run(workspace, TrainConfig(dataset="d"), owner="ana", name="pirates")
    training.set_status(state="running")
    append_jsonl(training.path / "metrics.jsonl", {"step": 3, "max_steps": 40, "loss": 2.5})
    judged = create_run(workspace, TrainConfig(dataset="d"), owner="bo", name="judged", state="completed")
    judged.set_status(evaluation={"state": "running", "queued_at": time.time()})
    for owner in ("ana", "cy"):
        create_run(workspace, TrainConfig(dataset="d"), owner=owner)
    return queue


def test_the_status_bar_says_each_gpu_each_job_the_queue_and_the_user(workspace, monkeypatch):
    queue = busy_queue(workspace)
    try:
        studio = Studio(workspace, queue)
        training, judged = (r.id for r in queue.queue()[:2])
        monkeypatch.setattr(status_bar, "survey_gpus", lambda: ([H200, {**H200, "index": 1, "util": None}], None))
        text = status_bar.render(status_bar.survey(studio), "ana", Translator("en"))
        for part in ("GPU 0: 23.4 of 140 GB, 97% busy", "GPU 1: 23.4 of 140 GB<", 'title="NVIDIA H200"',
                     f"{training} (ana): step 3 of 40", f"{judged} (bo): making its report card",
                     "2 waiting in the queue", "User: ana"):
            assert part in text, part
        chinese = status_bar.render(status_bar.survey(studio), "ana", Translator("zh-Hant"))
        assert "GPU 0：已用 23.4 / 140 GB，忙碌 97%" in chinese and "佇列中有 2 個在等" in chinese

        monkeypatch.setattr(status_bar, "survey_gpus", lambda: ([], None))
        assert "No NVIDIA GPU here: training runs on the CPU" in status_bar.render(status_bar.survey(studio), "ana",
                                                                                   Translator("en"))
    finally:
        queue.close()


def test_a_name_in_the_status_bar_is_text_not_markup(workspace, monkeypatch):
    queue = JobQueue(workspace, devices=[])
    try:
        create_run(workspace, TrainConfig(dataset="d"), owner="<b>ana</b>").set_status(state="running")
        text = status_bar.render(status_bar.survey(Studio(workspace, queue)), "<i>bo</i>", Translator("en"))
        assert "<b>" not in text and "<i>" not in text and "&lt;b&gt;ana&lt;/b&gt;" in text
    finally:
        queue.close()


def test_many_pages_asking_at_once_share_one_survey(monkeypatch):
    taken = []
    monkeypatch.setattr(status_bar, "survey", lambda studio: taken.append(time.monotonic()) or len(taken))
    shared = status_bar.SharedSurvey(studio=None, max_age=0.5)
    answers = []
    pages = [threading.Thread(target=lambda: answers.append(shared())) for _ in range(8)]
    for page in pages:
        page.start()
    for page in pages:
        page.join()
    assert answers == [1] * 8 and len(taken) == 1
    time.sleep(0.5)
    assert shared() == 2  # older than max_age: surveyed again
