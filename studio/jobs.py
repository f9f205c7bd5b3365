"""The job queue: training runs wait their turn, and each runs in a child process of its own.

A dispatcher thread starts the oldest queued run as soon as the GPUs it asks for are free, as
`python -m studio train RUN_DIR` (under `accelerate launch` over several GPUs; forked warm by launcher.py on the
CPU) with a thread watching it, so a crash, an out-of-memory error or a hard stop never takes the app down, and
the GPUs' memory is freed when the job ends. The queue itself lives in the run folders (state 'queued' plus the
time it was queued), so it survives a restart of the app.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from .config import TrainConfig
from .gpu import MemorySampler, survey_gpus
from .launcher import ROOT, LauncherClosed, WarmChild, shared_launcher
from .messages import Message, fields, text_of
from .runs import ACTIVE, LOCAL_USER, Run, create_run, find_run, list_runs, state_word
from .workspace import Workspace


class NotAllowed(PermissionError):
    """Someone tried to stop or delete a run that is not theirs."""


class JobNotStarted(RuntimeError):
    """No child process could be started for a job (or whether one was is unknown)."""


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


def free_port() -> int:
    """A TCP port nobody listens on, for the processes of one multi-GPU run to meet at."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_command(workspace: Workspace, run: Run, gpu_count: int = 1) -> list[str]:
    """The child's command line: `python -m studio train RUN_DIR`; over several GPUs the same command under
    `accelerate launch`, one process per GPU (data-parallel, or FSDP when run.yaml asks for it)."""
    studio = ["-m", "studio", "--workspace", str(workspace.root), "train", str(run.path)]
    if gpu_count <= 1:
        return [sys.executable, *studio]
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpu_count),
            "--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            *studio]


def eval_command(workspace: Workspace, run: Run, data: str | None) -> list[str]:
    """`python -m studio eval RUN_DIR [--data DATA]`: a report card, made in a child like training."""
    return [sys.executable, "-m", "studio", "--workspace", str(workspace.root), "eval", str(run.path),
            *(["--data", data] if data else [])]


class JobQueue:
    """First come, first served over the devices: a run takes the GPUs its run.yaml names (any one free GPU
    when it names none, the CPU on a machine without GPUs) and later runs wait until the first can start."""

    def __init__(self, workspace: Workspace, devices: list[str] | None = None, stop_timeout: float = 60.0,
                 poll: float = 0.5):
        self.workspace = workspace
        self.stop_timeout = stop_timeout
        self.poll = poll
        # A device is a GPU index as nvidia-smi numbers it, or "" for the CPU; [] starts nothing (tests).
        self.gpu_problem: Message | None = None  # why this machine's GPUs cannot be seen, for the page and log
        if devices is None:
            gpus, self.gpu_problem = survey_gpus()
            devices = [str(g["index"]) for g in gpus] or [""]
        self.devices = devices
        self._wake = threading.Condition()
        self._busy: dict[str, str] = {}  # device -> the id of the run using it
        self._children: dict[str, subprocess.Popen | WarmChild] = {}
        self._closing = False
        if "" in devices:  # CPU children start warm: the helper imports the trainer while nobody waits for it
            shared_launcher(child_env([""]))
        self._recover()
        self._threads = [threading.Thread(target=self._dispatch, name="job-dispatcher", daemon=True)]
        if self.devices:
            self._threads[0].start()

    # ---- what the UI and CLI call ----
    def submit(self, config: TrainConfig, owner: str = LOCAL_USER, name: str = "") -> Run:
        self._check_gpus(config)
        run = create_run(self.workspace, config, owner=owner, name=name)
        self._notify()
        return run

    def resume(self, run_id: str, user: str = LOCAL_USER, admin: bool = False) -> Run:
        run = find_run(self.workspace, run_id)
        self._check_owner(run, user, admin)
        if run.state not in ("interrupted", "stopped", "failed", "damaged"):
            raise ValueError(Message("Run {run} is {state}; only an interrupted, stopped, failed or damaged run can "
                                     "be resumed.", run=run_id, state=state_word(run.state)))
        run.stop_path.unlink(missing_ok=True)
        waiting = Message("Waiting to resume from its last checkpoint.") if run.latest_checkpoint() else \
            Message("Waiting to start again from the beginning: it saved no checkpoint.")
        run.set_status(state="queued", queued_at=time.time(), message=waiting)
        self._notify()
        return run

    def evaluate(self, run_id: str, data: str | None = None, user: str = LOCAL_USER) -> Run:
        """Queue a report card for a finished or stopped run, on its own held-out examples or on `data`. It needs
        a device like training does, so it waits its turn in the same queue. Anyone may ask: it changes no run."""
        run = find_run(self.workspace, run_id)
        if run.job():
            raise ValueError(Message("Run {run} is {state}; evaluate it once it has finished or stopped.", run=run_id,
                                     state=state_word(run.job()[1])))
        if not run.has_adapter():
            raise ValueError(Message("Run {run} saved no adapter, so there is nothing to evaluate.", run=run_id))
        with self._wake:
            run.set_status(evaluation={"state": "queued", "data": data or None, "by": user, "queued_at": time.time()})
            self._wake.notify_all()
        return run

    def stop(self, run_id: str, user: str = LOCAL_USER, admin: bool = False) -> None:
        """A queued run leaves the queue; a running one saves its adapter and stops, or is killed after a timeout."""
        run = find_run(self.workspace, run_id)
        self._check_owner(run, user, admin)
        if run.state not in ("queued", "running"):
            raise ValueError(Message("Run {run} is {state}; there is nothing to stop.", run=run.id,
                                     state=state_word(run.state)))
        with self._wake:
            if run.state == "queued" and run.id not in self._busy.values():
                run.set_status(state="stopped", message=Message("Removed from the queue before it started."))
                return
        run.request_stop()
        threading.Thread(target=self._kill_after_timeout, args=(run,), daemon=True).start()

    def delete(self, run_id: str, user: str = LOCAL_USER, admin: bool = False) -> None:
        import shutil

        run = find_run(self.workspace, run_id)
        self._check_owner(run, user, admin)
        if run.state in ACTIVE:
            raise ValueError(Message("Run {run} is {state}; stop it before deleting it.", run=run_id,
                                     state=state_word(run.state)))
        if run.job():  # its report card is being made
            raise ValueError(Message("Run {run} is being evaluated; delete it once its report card is ready.",
                                     run=run_id))
        shutil.rmtree(run.path)

    def queue(self) -> list[Run]:
        """Runs with a job (training, or a report card being made): running ones first, then the queued ones in the
        order they will start."""
        jobs = [(run, run.job()) for run in list_runs(self.workspace)]
        active = [(run, job) for run, job in jobs if job]
        return [run for run, _ in sorted(active, key=lambda rj: (rj[1][1] != "running", rj[1][2]))]

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
        """Stop dispatching; with kill, end running children too (they show as interrupted next start)."""
        self._closing = True
        self._notify()
        if kill:
            for child in list(self._children.values()):
                _kill(child)
        for thread in list(self._threads):
            if thread.is_alive():
                thread.join(timeout=10)

    # ---- inside ----
    @staticmethod
    def _check_owner(run: Run, user: str, admin: bool) -> None:
        if admin:
            return
        owner = run.status().get("owner")
        if owner is None:  # lost with a damaged status.json
            raise NotAllowed(Message("Nobody knows who owns run {run} (its status file was damaged); only an "
                                     "administrator can change it.", run=run.id))
        if owner != user:
            raise NotAllowed(Message("Run {run} belongs to {owner}; only they or an administrator can change it.",
                                     run=run.id, owner=owner))

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _recover(self) -> None:
        """After a restart: a run whose process is gone was interrupted; queued runs simply wait again."""
        for run in list_runs(self.workspace):
            status = run.status()
            if (status.get("evaluation") or {}).get("state") == "running":  # cut short by the restart: again
                run.set_status(evaluation={**status["evaluation"], "state": "queued"})
            if status.get("state") == "running" and not pid_alive(status.get("pid")):
                run.set_status(state="interrupted", pid=None,
                               message=Message("The app stopped while this run was training. {resume}",
                                               resume=run.resume_note()))

    def _dispatch(self) -> None:
        while not self._closing:
            with self._wake:
                busy = set(self._busy.values())
                waiting = []
                for run in list_runs(self.workspace):
                    job = run.job()
                    if job and job[1] == "queued" and run.id not in busy:
                        waiting.append((job[2], run, job[0]))
                for _, run, kind in sorted(waiting, key=lambda w: w[0]):
                    try:
                        devices = self._devices_for(run) if kind == "train" else self._devices_for_eval()
                    except ValueError as e:
                        run.set_status(state="failed", message=text_of(e), ended=time.time())
                        continue
                    if devices is None:
                        break  # first come, first served: the jobs behind wait for this one
                    self._start(run, devices, kind)
                # The timeout also picks up runs queued by another process.
                self._wake.wait(timeout=2.0)

    def _devices_for(self, run: Run) -> list[str] | None:
        """The devices the run would use now, or None while they are busy; ValueError if it can never run here."""
        free = [d for d in self.devices if d not in self._busy]
        wanted = self._check_gpus(run.config)
        if not wanted:
            return free[:1] or None
        return wanted if all(g in free for g in wanted) else None

    def _devices_for_eval(self) -> list[str] | None:
        """A report card needs one device, any one that is free."""
        return [d for d in self.devices if d not in self._busy][:1] or None

    def _check_gpus(self, config: TrainConfig) -> list[str]:
        """The GPUs a run names, as devices (none on a machine without GPUs: it trains on the CPU, whatever
        run.yaml names); ValueError when this studio may not use one of them."""
        wanted = [str(g) for g in config.gpus]
        if self.devices == [""]:
            if wanted and self.gpu_problem:  # the GPUs are there but unseen: the CPU is not what was asked for
                raise ValueError(Message("GPU {gpus} cannot be used: {problem}", gpus=", ".join(wanted),
                                         problem=self.gpu_problem))
            return []
        missing = [g for g in wanted if g not in self.devices]
        if missing:
            raise ValueError(Message("GPU {missing} is not available to this studio (it may use GPU {allowed}). Choose "
                                     "other GPUs in the Train tab.", missing=", ".join(missing),
                                     allowed=", ".join(self.devices)))
        if config.fsdp and len(wanted) < 2:
            raise ValueError(Message("Sharding a model (FSDP) needs two or more GPUs. Tick them in the Train tab, or "
                                     "turn sharding off."))
        return wanted

    def _start(self, run: Run, devices: list[str], kind: str) -> None:
        for device in devices:
            self._busy[device] = run.id
        work = self._run_child if kind == "train" else self._run_evaluation
        if kind == "eval":  # running from now: the next look at the queue must not start it again
            run.set_status(evaluation={**run.evaluation, "state": "running", "started": time.time()})
        thread = threading.Thread(target=self._supervise, args=(work, run, devices, kind), name=f"job-{run.id}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _supervise(self, work, run: Run, devices: list[str], kind: str) -> None:
        try:
            work(run, devices)
        except JobNotStarted as error:  # said on the run, and not tried again by itself
            if self._closing or isinstance(error.__cause__, LauncherClosed):
                return  # the app is ending: the job waits for its next start
            message = Message("This job could not be started: {error}. Try again with Resume (Evaluate for a report "
                              "card); if it fails again, show this message to the administrator.", error=str(error))
            if kind == "train":
                run.set_status(state="failed", message=message, pid=None, ended=time.time())
            else:
                run.set_status(evaluation={**run.evaluation, "state": "failed", **fields(message),
                                           "ended": time.time()})
        finally:
            with self._wake:
                for device in devices:
                    self._busy.pop(device, None)
                self._threads.remove(threading.current_thread())
                self._wake.notify_all()

    def _spawn(self, run: Run, command: list[str], devices: list[str]) -> subprocess.Popen | WarmChild:
        """A child on the run's devices, writing to its log; on the CPU a studio command starts warm.
        JobNotStarted when there is no child to watch."""
        env = child_env(devices)
        warm = not any(devices) and command[:3] == [sys.executable, "-m", "studio"]
        try:
            if warm and (child := shared_launcher(env).start(command[3:], env, run.log_path)):  # or afresh
                if self._closing:  # the app closed while the helper was still importing
                    _kill(child)
            else:
                with open(run.log_path, "ab") as log:
                    # A session of its own, so a hard stop ends every process of a multi-GPU run too.
                    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True, cwd=ROOT)
        except (OSError, RuntimeError) as error:
            raise JobNotStarted(error) from error
        self._children[run.id] = child
        return child

    def _run_evaluation(self, run: Run, devices: list[str]) -> None:
        asked = run.evaluation
        child = self._spawn(run, eval_command(self.workspace, run, asked.get("data")), devices)
        try:
            code = child.wait()
        finally:
            self._children.pop(run.id, None)
        if self._closing and code != 0:
            return  # the app is shutting down: the next start queues it again
        ended = {"state": "done", **fields(Message("The report card is ready."))} if code == 0 else \
            {"state": "failed", **fields(Message("The report card could not be made (exit code {code}); the log "
                                                 "below says why.", code=code))}
        run.set_status(evaluation={**asked, **ended, "ended": time.time()})

    def _run_child(self, run: Run, devices: list[str]) -> None:
        gpus = [int(d) for d in devices if d]
        child = self._spawn(run, train_command(self.workspace, run, len(gpus)), devices)
        run.set_status(state="running", pid=child.pid, started=time.time(), gpus=gpus)
        sampler = MemorySampler(run.path / "gpu.jsonl", child.pid, gpus or None).start()
        try:
            code = child.wait()
        finally:
            sampler.stop()
            self._children.pop(run.id, None)
        if self._closing and code != 0:
            return  # the app is shutting down: the next start shows this run as interrupted
        if run.state == "running":  # the child died without saying how it ended
            if run.stop_requested:
                state, message = "stopped", Message("Stopped by force after it did not stop in time. {resume}",
                                                    resume=run.resume_note())
            elif code == -signal.SIGKILL:
                state, message = "interrupted", Message("The training process was killed (out of system memory, or "
                                                        "by hand). {resume}", resume=run.resume_note())
            else:
                state, message = "failed", Message("The training process ended unexpectedly (exit code {code}). See "
                                                   "the log.", code=code)
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
            _kill(child)


def child_env(devices: list[str]) -> dict[str, str]:
    """The environment of a child on these devices ("" for the CPU)."""
    # The log is read by people: no progress bars redrawn line after line, no library deprecation notices.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}
    if any(devices):  # number GPUs as nvidia-smi (and the memory sampler) does
        env.update(CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=",".join(devices))
    else:
        # The CPU means the CPU (`--gpus none` on a machine with GPUs): the child, and the launcher it is forked
        # from, never see a GPU. Nothing is compiled: bitsandbytes would otherwise load torch's compiler and
        # build its 4-bit kernels in C++ at the start of every child (measured: 6 s later to the first step).
        env.update(CUDA_VISIBLE_DEVICES="", TORCHDYNAMO_DISABLE="1")
    return env


def _kill(child: subprocess.Popen | WarmChild) -> None:
    """End a training child and every process it started (accelerate's workers)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
