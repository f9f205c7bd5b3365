"""Runs over several GPUs, tested on the CPU: the command the queue builds, how the queue shares out the GPUs,
and a real two-process run (torchrun, which `accelerate launch` uses for GPUs) writing its run folder once."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from studio import jobs
from studio.config import TrainConfig
from studio.jobs import JobQueue, train_command
from studio.runs import create_run, list_runs
from conftest import PIRATE

REPO = Path(__file__).resolve().parent.parent


def test_several_gpus_run_the_same_command_under_accelerate_launch(workspace):
    from accelerate.commands.launch import launch_command_parser

    run = create_run(workspace, TrainConfig(dataset="d", gpus=[0, 1]))
    one, two = train_command(workspace, run), train_command(workspace, run, gpu_count=2)
    assert two[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(two[3:])  # accelerate itself reads it as meant
    assert args.num_processes == 2 and args.multi_gpu and args.num_machines == 1
    assert args.module and [args.training_script, *args.training_script_args] == one[2:]


@pytest.fixture()
def recording_children(monkeypatch, tmp_path):
    """Children that record which GPUs they were given, and live until their stop file appears."""
    def fake_command(workspace, run, gpu_count=1):
        script = ("import os, time, pathlib; print('gpus', os.environ.get('CUDA_VISIBLE_DEVICES'), flush=True); "
                  f"stop = pathlib.Path({str(run.stop_path)!r})\n"
                  "while not stop.exists(): time.sleep(0.05)")
        return [sys.executable, "-c", script]

    monkeypatch.setattr(jobs, "train_command", fake_command)


def test_a_run_takes_the_gpus_it_names_and_later_runs_wait_their_turn(workspace, recording_children):
    both = create_run(workspace, TrainConfig(dataset="d", gpus=[0, 1]), owner="ana")
    queue = JobQueue(workspace, devices=["0", "1"], stop_timeout=2, poll=0.05)
    try:
        wait_until(lambda: "gpus 0,1" in both.log_tail())
        assert both.state == "running" and both.status()["gpus"] == [0, 1]
        anyone = queue.submit(TrainConfig(dataset="d"), owner="bo")
        with pytest.raises(ValueError, match="GPU 5 is not available to this studio"):
            queue.submit(TrainConfig(dataset="d", gpus=[5]), owner="bo")
        with pytest.raises(ValueError, match="needs two or more GPUs"):
            queue.submit(TrainConfig(dataset="d", gpus=[1], fsdp=True), owner="bo")
        with pytest.raises(ValueError, match="sharding works with quantization 4bit or none"):
            TrainConfig(dataset="d", gpus=[0, 1], fsdp=True, quantization="8bit").validate()
        time.sleep(0.3)
        assert anyone.state == "queued"  # both GPUs are taken
        queue.stop(both.id, user="ana")
        wait_until(lambda: "gpus 0" in anyone.log_tail())
        assert anyone.status()["gpus"] == [0]
        queue.stop(anyone.id, user="bo")
        wait_until(lambda: anyone.state != "running")
    finally:
        queue.close()


def test_gpus_nvml_cannot_see_are_said_and_runs_asking_for_them_refused(workspace, recording_children, monkeypatch):
    import pynvml

    from studio import gpu

    def broken():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)

    monkeypatch.setattr(pynvml, "nvmlInit", broken)
    monkeypatch.setattr(gpu, "_machine_has_nvidia_gpus", lambda: False)
    assert gpu.survey_gpus() == ([], None)  # no driver and no GPU: a CPU machine, nothing wrong
    monkeypatch.setattr(gpu, "_machine_has_nvidia_gpus", lambda: True)  # /dev/nvidia0 is there
    gpus, problem = gpu.survey_gpus()
    assert gpus == [] and "cannot see this machine's NVIDIA GPUs: NVML failed (NVMLError_Unknown" in problem
    both = create_run(workspace, TrainConfig(dataset="d", gpus=[0, 1]), owner="ana")  # queued before the start
    queue = JobQueue(workspace, poll=0.05)
    try:
        assert queue.gpu_problem == problem and queue.devices == [""]
        assert queue.wait(both.id) == "failed" and "GPU 0, 1 cannot be used: The studio cannot see" in \
            both.status()["message"]
        with pytest.raises(ValueError, match="GPU 1 cannot be used"):
            queue.submit(TrainConfig(dataset="d", gpus=[1]), owner="bo")
    finally:
        queue.close()


def wait_until(condition, timeout=30):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_two_processes_train_one_run_and_only_the_main_one_writes(workspace, embedded_model_dir, tmp_path):
    config = dict(model=str(embedded_model_dir), dataset=str(PIRATE), batch_size=2, learning_rate=1e-3,
                  val_fraction=0.1, eval_steps=2, max_length=64, lora_r=8, lora_alpha=16,
                  target_modules=["q_proj", "v_proj"], max_steps=2, warmup_ratio=0.0, report_card=False)
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(config))
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "studio",
                           "--workspace", str(workspace.root), "train", str(run_yaml)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    [run] = list_runs(workspace)  # one folder, made by the main process and shared with the other
    assert run.state == "completed" and run.has_adapter()
    steps = [m for m in run.metrics() if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2]  # each step logged once, not once per process
    # 29 training rows, 2 a batch in each of 2 processes: 8 steps an epoch (one process alone would need 15)
    assert steps[0]["epoch"] == pytest.approx(1 / 8, abs=0.01)
    assert done.stdout.count("Adapter saved") == 1


def test_the_train_tab_puts_the_chosen_gpus_and_fsdp_in_run_yaml():
    from studio.ui.train_tab import ADVANCED, build_config

    values = [getattr(TrainConfig(), field) for field, _ in ADVANCED]
    config = build_config("d", None, "chatbot", values, gpus=[0, 1], fsdp=True)
    assert config.gpus == [0, 1] and config.fsdp and config.model == "embedded"
    assert build_config("d", None, "chatbot", values).gpus == []  # none ticked: any one free GPU


def test_auto_checkpointing_reads_the_fullest_of_the_runs_gpus(monkeypatch):
    """Every process of a run reads the same GPUs (NVML, no CUDA context on GPU 0), so all decide alike."""
    from studio.training import memory

    gpus = [{"index": 0, "free_gb": 70.0}, {"index": 1, "free_gb": 30.0}, {"index": 2, "free_gb": 50.0}]
    monkeypatch.setattr("studio.gpu.list_gpus", lambda: gpus)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    assert memory._least_free_on_run_gpus() == 50 * 2**30
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert memory._least_free_on_run_gpus() == 30 * 2**30


def test_a_failure_in_another_gpus_process_is_written_to_the_run(workspace, embedded_model_dir, monkeypatch):
    """The launcher ends the main process when another fails, so the failing one records why."""
    from studio.runs import create_run
    from studio.training.trainer import train_run

    run = create_run(workspace, TrainConfig(model=str(embedded_model_dir), dataset="no-such-dataset"))
    run.set_status(state="running")
    monkeypatch.setenv("RANK", "1")
    assert train_run(run, workspace) == "failed"
    assert run.state == "failed" and "no-such-dataset" in run.status()["message"]
