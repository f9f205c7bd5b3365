"""The app served for browser and HTTP tests."""
import contextlib
import threading
import time
from pathlib import Path

from studio.workspace import Workspace


@contextlib.contextmanager
def serving(workspace: Workspace, **launch_options):
    """The Gradio app over a workspace on a free local port; yields the Studio with its .url set."""
    from studio.jobs import JobQueue, free_port
    from studio.ui.app import appearance, build_app
    from studio.ui.context import Studio

    port = free_port()
    studio = Studio(workspace, JobQueue(workspace, devices=[""], poll=0.2), logins=bool(launch_options.get("auth")))
    app = build_app(studio)
    options = {**appearance(), "server_name": "127.0.0.1", "allowed_paths": [str(workspace.exports)],
               **launch_options, "server_port": port}
    app.launch(prevent_thread_lock=True, quiet=True, **options)
    studio.url = f"http://127.0.0.1:{port}/"
    try:
        yield studio
    finally:
        app.close()
        studio.queue.close()


def with_embedded_model(workspace: Workspace, model_dir: Path) -> Workspace:
    """A workspace that already holds the embedded model (linked, not converted again)."""
    from studio.models import EMBEDDED_NAME

    (workspace.models / EMBEDDED_NAME).symlink_to(model_dir)
    return workspace


class GenerationsAtOnce:
    """Watches a ModelPool: how many generations ran at the same time, at most (peak) and on average over the
    time any ran (mean). A generation runs inside pool.session, after it got its slot, until it ends."""

    def __init__(self, pool):
        self.peak, self._running, self._busy_s, self._area, self._since = 0, 0, 0.0, 0.0, time.perf_counter()
        self._lock = threading.Lock()
        session = pool.session

        @contextlib.contextmanager
        def watched(*args, **kwargs):
            with session(*args, **kwargs) as opened:
                self._change(+1)
                try:
                    yield opened
                finally:
                    self._change(-1)

        pool.session = watched

    def _change(self, step: int) -> None:
        with self._lock:
            now = time.perf_counter()
            if self._running:
                self._busy_s += now - self._since
                self._area += (now - self._since) * self._running
            self._running += step
            self._since, self.peak = now, max(self.peak, self._running)

    @property
    def mean(self) -> float:
        return self._area / self._busy_s if self._busy_s else 0.0
