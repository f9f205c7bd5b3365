"""CPU children forked warm by the launcher: each is `python -m studio ...` with the environment, log and exit code
a fresh child would have, in a session of its own. (The training tests run their CPU children through it too.)"""
import os
import signal
import threading
import time

import pytest

from studio.config import TrainConfig
from studio.launcher import Launcher, LauncherClosed
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


def blocking_runs(workspace) -> list[str]:
    """`runs` over a workspace whose one run's status file is a FIFO: reading it waits for a writer that never
    comes, so the child lives until it is killed."""
    run = create_run(workspace, TrainConfig(dataset="d"), owner="ana")
    (run.path / "status.json").unlink()
    os.mkfifo(run.path / "status.json")
    return ["--workspace", str(workspace.root), "runs"]


def test_a_warm_child_runs_the_command_with_its_environment_and_log(launcher, workspace, tmp_path):
    run = create_run(workspace, TrainConfig(dataset="d"), owner="ana", name="pirates")
    log = tmp_path / "child.log"
    log.write_text("kept\n")
    env = {**os.environ, "STUDIO_WORKSPACE": str(workspace.root)}  # the workspace comes from the environment
    child = launcher.start(["runs"], env, log)
    assert child.wait() == 0
    assert log.read_text().startswith("kept\n") and run.id in log.read_text()

    wrong = launcher.start(["no-such-command"], env, log)
    assert wrong.wait() == 2 and "invalid choice: 'no-such-command'" in log.read_text()


def test_a_warm_child_leads_its_own_session_is_named_for_its_command_and_its_killing_is_reported(
        launcher, workspace, tmp_path):
    child = launcher.start(blocking_runs(workspace), dict(os.environ), tmp_path / "child.log")
    assert os.getsid(child.pid) == child.pid != os.getsid(0)
    wait_until(lambda: open(f"/proc/{child.pid}/comm").read() == "studio runs\n")  # as top names it
    time.sleep(0.3)
    assert child.returncode is None  # still waiting on its status file
    os.killpg(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL


def test_when_the_launcher_dies_its_child_is_still_watched(launcher, workspace, tmp_path):
    child = launcher.start(blocking_runs(workspace), dict(os.environ), tmp_path / "child.log")
    os.kill(launcher.pid, signal.SIGKILL)  # as the out-of-memory killer would
    wait_until(lambda: not launcher.alive())
    assert child.returncode is None
    os.killpg(child.pid, signal.SIGKILL)
    assert child.wait() == 1  # its exit code went with the launcher; its end did not
    assert launcher.start(["runs"], dict(os.environ), tmp_path / "child.log") is None  # start it afresh


def test_what_was_asked_while_the_launcher_imported_is_not_started_once_the_app_closed(workspace, tmp_path):
    (tmp_path / "slow_library.py").write_text("import time\ntime.sleep(2)\n")
    launcher = Launcher(preload=("slow_library",), env={**os.environ, "PYTHONPATH": str(tmp_path)})
    refused = []

    def ask():
        with pytest.raises(LauncherClosed):  # so the queue leaves it waiting for the next start
            launcher.start(["runs"], dict(os.environ), tmp_path / "child.log")
        refused.append(True)

    thread = threading.Thread(target=ask)
    thread.start()
    time.sleep(0.5)
    launcher.close()
    thread.join(timeout=10)
    assert refused
    assert not (tmp_path / "child.log").exists()  # and it did not start


def test_a_library_that_fails_to_import_leaves_the_launcher_working(workspace, tmp_path):
    launcher = Launcher(preload=("no_such_library_here",))
    try:
        child = launcher.start(["--workspace", str(workspace.root), "runs"], dict(os.environ), tmp_path / "log")
        assert child.wait() == 0
    finally:
        launcher.close()
