"""The job queue: training runs wait their turn, and each runs in a child process of its own.

A worker thread per slot (one per GPU, or one for the CPU) takes the oldest queued run and starts
`python -m studio train RUN_DIR`, so a crash, an out-of-memory error or a hard stop never takes the app
down, and the GPU's memory is freed when the job ends. The queue itself lives in the run folders
(state 'queued' plus the time it was queued), so it survives a restart of the app.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from .config import TrainConfig
from .gpu import MemorySampler, list_gpus
from .runs import Run, create_run, find_run, list_runs
from .workspace import Workspace


class NotAllowed(PermissionError):
    """Someone tried to stop or delete a run that is not theirs."""


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def train_command(workspace: Workspace, run: Run) -> list[str]:
    """The child's command line: one process on one GPU (or the CPU)."""
    return [sys.executable, "-m", "studio", "--workspace", str(workspace.root), "train", str(run.path)]


class JobQueue:
    def __init__(self, workspace: Workspace, slots: list[str] | None = None, stop_timeout: float = 60.0,
                 poll: float = 0.5):
        self.workspace = workspace
        self.stop_timeout = stop_timeout
        self.poll = poll
        # A slot is a value for CUDA_VISIBLE_DEVICES, or "" for the CPU.
        self.slots = slots if slots is not None else ([str(g["index"]) for g in list_gpus()] or [""])
        self._wake = threading.Condition()
        self._claimed: set[str] = set()  # run ids taken by a worker
        self._children: dict[str, subprocess.Popen] = {}
        self._closing = False
        self._recover()
        self._threads = [threading.Thread(target=self._work, args=(slot,), name=f"job-worker-{slot or 'cpu'}",
                                          daemon=True) for slot in self.slots]
        for thread in self._threads:
            thread.start()

    # ---- what the UI and CLI call ----
    def submit(self, config: TrainConfig, owner: str = "local", name: str = "") -> Run:
        run = create_run(self.workspace, config, owner=owner, name=name)
        self._notify()
        return run

    def resume(self, run_id: str, user: str = "local", admin: bool = False) -> Run:
        run = find_run(self.workspace, run_id)
        self._check_owner(run, user, admin)
        if run.state not in ("interrupted", "stopped", "failed"):
            raise ValueError(f"Run {run_id} is {run.state}; only an interrupted, stopped or failed run can be resumed.")
        run.stop_path.unlink(missing_ok=True)
        run.set_status(state="queued", queued_at=time.time(), message="Waiting to resume from its last checkpoint.")
        self._notify()
        return run

    def stop(self, run_id: str, user: str = "local", admin: bool = False) -> None:
        """A queued run leaves the queue; a running one saves its adapter and stops, or is killed after a timeout."""
        run = find_run(self.workspace, run_id)
        self._check_owner(run, user, admin)
        with self._wake:
            if run.state == "queued" and run.id not in self._claimed:
                run.set_status(state="stopped", message="Removed from the queue before it started.")
                return
        run.request_stop()
        threading.Thread(target=self._kill_after_timeout, args=(run,), daemon=True).start()

    def delete(self, run_id: str, user: str = "local", admin: bool = False) -> None:
        import shutil

        run = find_run(self.workspace, run_id)
        self._check_owner(run, user, admin)
        if run.state in ("queued", "running"):
            raise ValueError(f"Run {run_id} is {run.state}; stop it before deleting it.")
        shutil.rmtree(run.path)

    def queue(self) -> list[Run]:
        """Running runs first, then the queued ones in the order they will start."""
        runs = [r for r in list_runs(self.workspace) if r.state in ("running", "queued")]
        return sorted(runs, key=lambda r: (r.state != "running", r.status().get("queued_at", 0)))

    def wait(self, run_id: str, timeout: float = 600) -> str:
        """Block until the run has ended (for the CLI and tests); returns its final state."""
        run = find_run(self.workspace, run_id)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if run.state not in ("queued", "running"):
                return run.state
            time.sleep(self.poll)
        raise TimeoutError(f"Run {run_id} still {run.state} after {timeout:.0f} s")

    def close(self, kill: bool = True) -> None:
        """Stop the workers; with kill, end running children too (they show as interrupted next start)."""
        self._closing = True
        self._notify()
        if kill:
            for child in list(self._children.values()):
                child.kill()
        for thread in self._threads:
            thread.join(timeout=10)

    # ---- inside ----
    @staticmethod
    def _check_owner(run: Run, user: str, admin: bool) -> None:
        owner = run.status().get("owner", "local")
        if not admin and owner != user:
            raise NotAllowed(f"Run {run.id} belongs to {owner}; only they or an administrator can change it.")

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _recover(self) -> None:
        """After a restart: a run whose process is gone was interrupted; queued runs simply wait again."""
        for run in list_runs(self.workspace):
            status = run.status()
            if status.get("state") == "running" and not pid_alive(status.get("pid")):
                run.set_status(state="interrupted", pid=None,
                               message="The app stopped while this run was training. Resume continues from its "
                                       "last checkpoint.")

    def _next_run(self) -> Run | None:
        queued = [r for r in list_runs(self.workspace) if r.state == "queued" and r.id not in self._claimed]
        return min(queued, key=lambda r: r.status().get("queued_at", 0), default=None)

    def _work(self, slot: str) -> None:
        while not self._closing:
            with self._wake:
                run = self._next_run()
                if run is None:
                    self._wake.wait(timeout=2.0)  # the timeout also picks up runs queued by another process
                    continue
                self._claimed.add(run.id)
            try:
                self._run_child(run, slot)
            finally:
                with self._wake:
                    self._claimed.discard(run.id)

    def _run_child(self, run: Run, slot: str) -> None:
        # The log is read by people: no progress bars redrawn line after line, no library deprecation notices.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}
        if slot:
            env["CUDA_VISIBLE_DEVICES"] = slot
        with open(run.log_path, "ab") as log:
            child = subprocess.Popen(train_command(self.workspace, run), stdout=log, stderr=subprocess.STDOUT,
                                     env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._children[run.id] = child
        run.set_status(state="running", pid=child.pid, started=time.time())
        sampler = MemorySampler(run.path / "gpu.jsonl", child.pid, [int(slot)] if slot else None).start()
        try:
            code = child.wait()
        finally:
            sampler.stop()
            self._children.pop(run.id, None)
        if self._closing and code != 0:
            return  # the app is shutting down: the next start shows this run as interrupted
        if run.state == "running":  # the child died without saying how it ended
            if run.stop_requested:
                state, message = "stopped", ("Stopped by force after it did not stop in time; resume continues "
                                             "from its last checkpoint.")
            elif code == -signal.SIGKILL:
                state, message = "interrupted", ("The training process was killed (out of system memory, or by "
                                                 "hand). Resume continues from its last checkpoint.")
            else:
                state, message = "failed", f"The training process ended unexpectedly (exit code {code}). See the log."
            run.set_status(state=state, message=message, pid=None, ended=time.time())
        run.stop_path.unlink(missing_ok=True)

    def _kill_after_timeout(self, run: Run) -> None:
        deadline = time.time() + self.stop_timeout
        while time.time() < deadline:
            if run.id not in self._children:
                return
            time.sleep(self.poll)
        child = self._children.get(run.id)
        if child is not None:
            child.kill()
