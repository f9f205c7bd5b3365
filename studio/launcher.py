"""CPU children that start warm: forked from a process that has already imported the trainer's libraries.

A training or report-card child started afresh spends ~12 s (two cores) importing torch, transformers, peft, trl,
datasets and bitsandbytes before it reads a row, and a short run on the CPU takes not much longer than that. So
the queue hands its CPU children's `python -m studio ...` commands to one helper, `python -m studio.launcher`,
which imported those libraries once and forks a child per command (as PyTorch's DataLoader forks its workers).
Only on the CPU: a process must not fork once CUDA is initialised, and a GPU run takes minutes anyway.

The helper reads a JSON line per command on its stdin and answers on its stdout: {"id", "pid"} when the child
started and {"pid", "code"} when it ended (code as subprocess says it: negative for a signal). A child gets the
environment asked for, but what a library reads from the environment when it is imported (thread counts,
huggingface_hub's settings) is the helper's: the app's environment when its queue started, as for every job.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

# The folder holding the studio package: the helper and its children run there, so `-m studio` finds it.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a training or report-card child imports before its first row: the helper imports them once.
TRAINER_LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "bitsandbytes", "studio.__main__",
                     "studio.training.cli", "studio.training.trainer", "studio.training.preference",
                     "studio.evaluation.cli")


class LauncherClosed(RuntimeError):
    """The launcher was closed (the app is ending) before it started the job: the job did not start."""


class WarmChild:
    """A child the helper forked: what the queue uses of subprocess.Popen (its pid, wait for its exit code).
    It leads a session of its own, so killing its process group ends it."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._ended = threading.Event()

    def wait(self) -> int:
        self._ended.wait()
        return self.returncode

    def _end(self, code: int) -> None:
        self.returncode = code
        self._ended.set()


class Launcher:
    """The app's side of the helper: start() sends a command and returns its WarmChild; a thread reads the
    helper's answers. Should the helper itself die, its children go on in their own sessions and are watched by
    their pids instead, their exit codes lost (reported as 1)."""

    def __init__(self, preload: tuple[str, ...] = TRAINER_LIBRARIES, env: dict[str, str] | None = None):
        self._helper = subprocess.Popen([sys.executable, "-m", "studio.launcher", *preload], cwd=ROOT, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._lock = threading.Lock()
        self._asked: dict[int, list] = {}  # request id -> [event, WarmChild]
        self._children: dict[int, WarmChild] = {}  # pid -> child still running
        self._next_id = 0
        self.closed = False  # by close(): the app is ending
        threading.Thread(target=self._read_answers, name="launcher-answers", daemon=True).start()

    def start(self, argv: list[str], env: dict[str, str], log_path: str) -> WarmChild | None:
        """`python -m studio ARGV` in a warm child, with this environment, its output appended to the log; None
        when the helper had stopped before it was asked (the job may start afresh). The first call waits while
        the helper imports (what a fresh child would have spent anyway)."""
        with self._lock:
            if self.closed:
                raise LauncherClosed("the app is closing")
            self._next_id += 1
            asked = self._asked[self._next_id] = [threading.Event(), None]
            request = {"id": self._next_id, "argv": argv, "env": env, "log": str(log_path)}
            try:
                self._helper.stdin.write(json.dumps(request).encode() + b"\n")
                self._helper.stdin.flush()
            except (BrokenPipeError, ValueError):
                del self._asked[self._next_id]
                return None
        # No time limit, and no second start elsewhere: a job the helper has taken may be running.
        asked[0].wait()
        if asked[1] is None and self.closed:
            raise LauncherClosed("the app is closing")  # the helper forks nothing once told to stop
        if asked[1] is None:
            raise RuntimeError("the helper that starts CPU jobs stopped while starting it, and it may have started "
                               "all the same: look for it (top shows it as 'studio train') before you resume it")
        return asked[1]

    def close(self) -> None:
        """Stop the helper; children it started go on (the queue kills those it means to)."""
        with self._lock:
            self.closed = True
        with contextlib.suppress(BrokenPipeError):  # a helper that died leaves a request unsent
            self._helper.stdin.close()
        try:
            self._helper.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._helper.kill()

    @property
    def pid(self) -> int:
        """The helper's process id."""
        return self._helper.pid

    def alive(self) -> bool:
        return self._helper.poll() is None

    def _read_answers(self) -> None:
        try:
            for line in self._helper.stdout:
                answer = json.loads(line)
                with self._lock:
                    if "id" in answer:
                        asked = self._asked.pop(answer["id"])
                        asked[1] = self._children[answer["pid"]] = WarmChild(answer["pid"])
                        asked[0].set()
                    elif child := self._children.pop(answer["pid"], None):
                        child._end(answer["code"])
        finally:
            with self._lock:  # the helper is gone: no request is answered now, and no exit code
                for asked in self._asked.values():
                    asked[0].set()
                orphans, self._children = list(self._children.values()), {}
            for child in orphans:
                threading.Thread(target=_watch_orphan, args=(child,), daemon=True).start()


def _watch_orphan(child: WarmChild) -> None:
    from .jobs import pid_alive

    while pid_alive(child.pid):
        time.sleep(0.5)
    child._end(1)


_shared: Launcher | None = None
_shared_lock = threading.Lock()


def shared_launcher(env: dict[str, str]) -> Launcher:
    """The app's one helper, started at the first call (a queue with the CPU among its devices makes it when it
    starts, so the imports are done by the time someone trains). A helper that died is started again; one closed
    as the app ends is not."""
    global _shared
    with _shared_lock:
        if _shared is None or not (_shared.alive() or _shared.closed):
            _shared = Launcher(env=env)
            atexit.register(_shared.close)
        return _shared


# ---- the helper process ----
def _run_child(request: dict, keep_closed: list[int], in_session: int) -> None:
    """In the forked child: become `python -m studio ARGV` in a session of its own, writing to the run's log.
    Closing in_session tells the helper the session is made (from then on killing the group ends the child)."""
    code = 1
    try:
        os.setsid()
        os.close(in_session)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in keep_closed:
            os.close(fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.environ.clear()
        os.environ.update(request["env"])
        from .__main__ import COMMANDS, __file__ as main_file, main

        sys.argv = [main_file, *request["argv"]]
        with contextlib.suppress(OSError), open("/proc/self/comm", "w") as name:  # what top and ps -e show
            name.write("studio " + next((word for word in request["argv"] if word in COMMANDS), "job"))
        code = main(request["argv"])
    except SystemExit as exit:  # argparse's usage errors, sys.exit("message")
        if isinstance(exit.code, int) or exit.code is None:
            code = exit.code or 0
        else:
            print(exit.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()  # what an interpreter's exit runs (logging's flush, libraries' clean-ups)
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
        finally:
            os._exit(code)  # never back into the helper's loop


def serve(preload: list[str]) -> None:
    """Import the libraries, then fork a child per command until the app closes our stdin."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the app's Ctrl-C ends the app; its closing pipe ends us
    answers = os.dup(1)
    os.dup2(2, 1)  # a library's print at import goes to stderr, not into the answers
    for module in preload:
        try:
            importlib.import_module(module)
        except Exception:  # a child importing it fails and says why in its log, as a fresh one would
            import traceback

            traceback.print_exc()

    def answer(message: dict) -> None:
        os.write(answers, json.dumps(message).encode() + b"\n")

    pending = b""
    while True:
        if select.select([0], [], [], 0.2)[0]:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                return  # the app has gone: its children go on in their sessions
            pending += chunk
            while select.select([0], [], [], 0)[0]:  # all that is there: the app may have closed meanwhile
                chunk = os.read(0, 1 << 16)
                if not chunk:
                    return  # closed while we imported: what it asked for is not started now
                pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                wait_for_session, in_session = os.pipe()
                pid = os.fork()
                if pid == 0:
                    _run_child(request, keep_closed=[answers, wait_for_session], in_session=in_session)
                os.close(in_session)
                os.read(wait_for_session, 1)  # the end of the pipe: the child leads its session (or is gone)
                os.close(wait_for_session)
                answer({"id": request["id"], "pid": pid})
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break
            answer({"pid": pid, "code": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    serve(sys.argv[1:])
