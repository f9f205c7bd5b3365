"""The job queue's bookkeeping, without training: restart recovery, ownership, the queue's order."""
import os
import subprocess
import sys
import time

import pytest

from studio.config import TrainConfig
from studio.jobs import JobQueue, NotAllowed, pid_alive, train_command
from studio.runs import create_run


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_restart_marks_dead_runs_interrupted_and_keeps_the_queue(workspace):
    crashed = create_run(workspace, TrainConfig(dataset="d"), owner="ana")
    crashed.set_status(state="running", pid=dead_pid())
    waiting = create_run(workspace, TrainConfig(dataset="d"), owner="bo")
    queue = JobQueue(workspace, devices=[])  # no workers: nothing starts
    try:
        assert crashed.state == "interrupted" and "Resume" in crashed.status()["message"]
        assert waiting.state == "queued" and [r.id for r in queue.queue()] == [waiting.id]
    finally:
        queue.close()


def saved_checkpoint(run, step: int = 10) -> None:
    """A checkpoint as the trainer leaves it complete: trainer_state.json is written last."""
    (run.checkpoints_dir / f"checkpoint-{step}").mkdir(parents=True)
    (run.checkpoints_dir / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")


def test_resume_says_whether_it_continues_or_starts_again(workspace, monkeypatch):
    from studio import jobs

    early, later = (create_run(workspace, TrainConfig(dataset="d"), owner="ana") for _ in range(2))
    for run in (early, later):
        run.set_status(state="running", pid=dead_pid())
    saved_checkpoint(later)
    queue = JobQueue(workspace, devices=[])  # the app restarts after both were killed
    try:
        assert "no checkpoint, so Resume starts it again from the beginning" in early.status()["message"]
        assert "Resume continues from its last checkpoint" in later.status()["message"]
        queue.resume(early.id, user="ana")
        queue.resume(later.id, user="ana")
        assert early.status()["message"] == "Waiting to start again from the beginning: it saved no checkpoint."
        assert later.status()["message"] == "Waiting to resume from its last checkpoint."
    finally:
        queue.close()

    killed = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    monkeypatch.setattr(jobs, "train_command", lambda *_args, **_kw: killed)
    queue = JobQueue(workspace, devices=[""], poll=0.05)  # each is killed before saving anything more
    try:
        assert queue.wait(early.id, timeout=30) == queue.wait(later.id, timeout=30) == "interrupted"
        assert "killed" in early.status()["message"] and "starts it again from the beginning" in \
            early.status()["message"]
        assert "Resume continues from its last checkpoint" in later.status()["message"]
    finally:
        queue.close()


def test_a_damaged_status_shows_as_damaged_and_an_administrator_can_resume_it(workspace):
    run = create_run(workspace, TrainConfig(dataset="d"), owner="ana")
    run.set_status(state="running", pid=dead_pid())
    saved_checkpoint(run)
    (run.path / "status.json").write_bytes(b'{"state": "running", "owner": "an\xff')  # cut short, not UTF-8
    queue = JobQueue(workspace, devices=[])  # the app restarts
    try:
        assert run.state == "damaged" and queue.queue() == []
        assert "status.json) is damaged" in run.status()["message"]
        assert "Resume continues from its last checkpoint" in run.status()["message"]
        with pytest.raises(NotAllowed, match="Nobody knows who owns"):
            queue.resume(run.id, user="ana")
        queue.resume(run.id, user="cy", admin=True)
        assert [r.id for r in queue.queue()] == [run.id] and run.latest_checkpoint().name == "checkpoint-10"
        assert run.status()["message"] == "Waiting to resume from its last checkpoint."
    finally:
        queue.close()


def test_only_the_owner_or_an_admin_may_stop_or_delete(workspace):
    run = create_run(workspace, TrainConfig(dataset="d"), owner="ana")
    queue = JobQueue(workspace, devices=[])
    try:
        with pytest.raises(NotAllowed, match="belongs to ana"):
            queue.stop(run.id, user="bo")
        with pytest.raises(ValueError, match="stop it before deleting"):
            queue.delete(run.id, user="ana")
        queue.stop(run.id, user="admin", admin=True)
        assert run.state == "stopped" and "Removed from the queue" in run.status()["message"]
        with pytest.raises(ValueError, match="is stopped; there is nothing to stop"):
            queue.stop(run.id, user="ana")
        assert not run.stop_requested
        queue.delete(run.id, user="ana")
        assert not run.path.exists()
    finally:
        queue.close()


def test_the_child_command_is_the_plain_cli(workspace):
    run = create_run(workspace, TrainConfig(dataset="d"))
    assert train_command(workspace, run)[1:] == ["-m", "studio", "--workspace", str(workspace.root), "train",
                                                 str(run.path)]


def test_pid_alive():
    assert pid_alive(os.getpid()) and not pid_alive(dead_pid()) and not pid_alive(None)


def test_growing_run_files_are_parsed_once_and_replaced_ones_again(tmp_path, monkeypatch):
    from studio import workspace as files

    path = tmp_path / "gpu.jsonl"
    for i in (0, 1):
        files.append_jsonl(path, {"i": i})
    parsed = []
    real = files._json_or_none
    monkeypatch.setattr(files, "_json_or_none", lambda line: parsed.append(line) or real(line))
    assert [row["i"] for row in files.read_jsonl(path)] == [0, 1]
    with open(path, "a") as f:
        f.write('{"i": 2}\n{"i": 3')  # the last line still being written
    assert [row["i"] for row in files.read_jsonl(path)] == [0, 1, 2]
    with open(path, "a") as f:
        f.write('}\nnot json\n')
    assert [row["i"] for row in files.read_jsonl(path)] == [0, 1, 2, 3]
    assert len(parsed) == 5  # every line parsed once, the damaged one skipped
    files.write_atomic(path, '{"i": 9}\n')  # replaced, as a resumed run rewrites metrics.jsonl
    assert files.read_jsonl(path) == [{"i": 9}]
    files.append_jsonl(path, {"i": 10})
    path.write_text('{"i": 7}\n')  # cut short
    assert files.read_jsonl(path) == [{"i": 7}]
    assert files.read_jsonl(tmp_path / "missing.jsonl") == []


def test_damaged_run_file_lines_are_skipped_and_counted(tmp_path):
    from studio.runs import Run

    run = Run(tmp_path)
    (tmp_path / "gpu.jsonl").write_bytes(b'{"used_gb": 1}\n\xff\xfe not UTF-8\n[1, 2]\n\n')
    samples = run.gpu_samples()  # read whole
    assert samples == [{"used_gb": 1}] and samples.damaged == 2  # a blank line is no damage
    with open(tmp_path / "gpu.jsonl", "ab") as f:
        f.write(b'{"used_gb": 2}\n{"used_gb": \xe9}\n')
    samples = run.gpu_samples()  # only the new lines
    assert samples == [{"used_gb": 1}, {"used_gb": 2}] and samples.damaged == 3
    assert run.metrics() == [] and run.metrics().damaged == 0


def finished_with_adapter(workspace, owner="ana"):
    run = create_run(workspace, TrainConfig(dataset="d"), owner=owner)
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    run.set_status(state="completed")
    return run


def test_a_report_card_waits_in_the_queue_like_a_run(workspace):
    done = finished_with_adapter(workspace)
    training = create_run(workspace, TrainConfig(dataset="d"), owner="bo")  # queued before the evaluation
    queue = JobQueue(workspace, devices=[])  # no workers: nothing starts
    try:
        queue.evaluate(done.id, "other-data", user="bo")  # anyone may ask: it changes no run
        assert done.evaluation["state"] == "queued" and done.evaluation["data"] == "other-data"
        assert done.state == "completed" and done.job()[:2] == ("eval", "queued")
        assert [r.id for r in queue.queue()] == [training.id, done.id]
        with pytest.raises(ValueError, match="evaluate it once"):
            queue.evaluate(done.id)  # already queued
        with pytest.raises(ValueError, match="being evaluated"):
            queue.delete(done.id, "ana")
        with pytest.raises(ValueError, match="evaluate it once"):
            queue.evaluate(training.id)  # still training
        no_adapter = create_run(workspace, TrainConfig(dataset="d"))
        no_adapter.set_status(state="stopped")
        with pytest.raises(ValueError, match="no adapter"):
            queue.evaluate(no_adapter.id)
    finally:
        queue.close()


def test_an_evaluation_cut_short_by_a_restart_is_queued_again(workspace):
    run = finished_with_adapter(workspace)
    run.set_status(evaluation={"state": "running", "data": None, "queued_at": 1.0})
    queue = JobQueue(workspace, devices=[])
    try:
        assert run.evaluation["state"] == "queued" and run.state == "completed"
    finally:
        queue.close()


def test_the_evaluation_child_is_the_plain_cli(workspace):
    from studio.jobs import eval_command

    run = create_run(workspace, TrainConfig(dataset="d"))
    assert eval_command(workspace, run, None)[1:] == ["-m", "studio", "--workspace", str(workspace.root), "eval",
                                                      str(run.path)]
    assert eval_command(workspace, run, "more")[-2:] == ["--data", "more"]


def test_the_memory_sampler_ends_quietly_when_its_run_is_deleted(tmp_path, monkeypatch):
    """A finished run can be deleted in the second before its sampler stops: the sampler ends, it does not crash."""
    import shutil
    import threading
    import time

    from studio.gpu import MemorySampler

    crashed = []
    monkeypatch.setattr(threading, "excepthook", crashed.append)
    folder = tmp_path / "run"
    folder.mkdir()
    sampler = MemorySampler(folder / "gpu.jsonl", os.getpid(), every=0.02).start()
    while not (folder / "gpu.jsonl").exists():
        time.sleep(0.01)
    shutil.rmtree(folder)
    time.sleep(0.3)
    sampler.stop()
    assert not crashed and not folder.exists()


def test_a_cpu_child_sees_no_gpu_and_a_gpu_child_only_its_own():
    from studio.jobs import child_env

    cpu, gpus = child_env([""]), child_env(["0", "2"])
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["TORCHDYNAMO_DISABLE"] == "1"  # `--gpus none` means the CPU
    assert gpus["CUDA_VISIBLE_DEVICES"] == "0,2" and gpus["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_a_job_that_cannot_be_started_fails_and_says_why_instead_of_being_tried_again(workspace, monkeypatch):
    from studio import jobs

    monkeypatch.setattr(jobs, "train_command", lambda *_args, **_kw: ["/no/such/python", "-m", "studio"])
    run = create_run(workspace, TrainConfig(dataset="d"), owner="ana")
    queue = JobQueue(workspace, devices=[""], poll=0.05)
    try:
        assert queue.wait(run.id, timeout=30) == "failed"
        assert "This job could not be started: [Errno 2] No such file or directory" in run.status()["message"]
    finally:
        queue.close()


def test_a_run_starting_while_the_app_closes_waits_for_the_next_start(workspace, monkeypatch, tmp_path):
    from studio import jobs
    from studio.launcher import Launcher

    (tmp_path / "slow_library.py").write_text("import time\ntime.sleep(3)\n")
    importing = Launcher(preload=("slow_library",), env={**os.environ, "PYTHONPATH": str(tmp_path)})
    monkeypatch.setattr(jobs, "shared_launcher", lambda env: importing)
    run = create_run(workspace, TrainConfig(dataset="d"), owner="ana")
    queue = JobQueue(workspace, devices=[""], poll=0.05)
    try:
        time.sleep(1)  # the run is asked of the helper, still importing, when the app ends
        importing.close()
        time.sleep(0.5)
        assert run.state == "queued" and not run.log_path.exists()  # not failed, not started: it waits
    finally:
        queue.close()
