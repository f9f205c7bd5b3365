"""CPU children forked warm by the launcher: each is `python -m studio ...` with the environment, log and exit code
a fresh child would have, in a session of its own. (The training tests run their CPU children through it too.)"""
import os
import signal
import time

import pytest

from studio.config import TrainConfig
from studio.launcher import Launcher
from studio.runs import create_run


def wait_until(condition, timeout=10):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture()
def launcher():
    started = Launcher(preload=())  # nothing to import: these children only list runs
    yield started
    started.close()


def test_a_warm_child_runs_the_command_with_its_environment_and_log(launcher, workspace, tmp_path):
    run = create_run(workspace, TrainConfig(dataset="d"), owner="ana", name="pirates")
    log = tmp_path / "child.log"
    log.write_text("kept\n")
    env = {**os.environ, "STUDIO_WORKSPACE": str(workspace.root)}  # the workspace comes from the environment
    child = launcher.start(["runs"], env, log, tmp_path)
    assert child.wait() == 0
    assert log.read_text().startswith("kept\n") and run.id in log.read_text()

    wrong = launcher.start(["no-such-command"], env, log, tmp_path)
    assert wrong.wait() == 2 and "invalid choice: 'no-such-command'" in log.read_text()


def test_a_warm_child_leads_its_own_session_is_named_for_its_command_and_its_killing_is_reported(launcher, tmp_path):
    blocked = tmp_path / "rows.jsonl"
    os.mkfifo(blocked)  # reading it waits for a writer that never comes
    child = launcher.start(["data", "inspect", str(blocked)], dict(os.environ), tmp_path / "child.log", tmp_path)
    assert os.getsid(child.pid) == child.pid != os.getsid(0)
    wait_until(lambda: open(f"/proc/{child.pid}/comm").read() == "studio data\n")  # as top names it
    os.killpg(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL


def test_when_the_launcher_is_gone_its_child_is_still_watched(launcher, tmp_path):
    blocked = tmp_path / "rows.jsonl"
    os.mkfifo(blocked)
    child = launcher.start(["data", "inspect", str(blocked)], dict(os.environ), tmp_path / "child.log", tmp_path)
    launcher.close()
    assert not launcher.alive() and child.returncode is None
    os.killpg(child.pid, signal.SIGKILL)
    assert child.wait() == 1  # its exit code went with the launcher; its end did not
    with pytest.raises(RuntimeError, match="launcher of CPU jobs has stopped"):
        launcher.start(["runs"], dict(os.environ), tmp_path / "child.log", tmp_path)
