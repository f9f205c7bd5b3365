"""The app served for browser and HTTP tests."""
import contextlib
from pathlib import Path

from studio.workspace import Workspace


@contextlib.contextmanager
def serving(workspace: Workspace, **launch_options):
    """The Gradio app over a workspace on a free local port; yields the Studio with its .url set."""
    from studio.jobs import JobQueue, free_port
    from studio.ui.app import build_app
    from studio.ui.context import Studio

    port = free_port()
    studio = Studio(workspace, JobQueue(workspace, devices=[""], poll=0.2), logins=bool(launch_options.get("auth")))
    app = build_app(studio)
    options = {"server_name": "127.0.0.1", "allowed_paths": [str(workspace.exports)], **launch_options,
               "server_port": port}
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
