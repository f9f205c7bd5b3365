"""Shared test fixtures. Tests never reach the network and make their own small data."""
import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from studio.workspace import Workspace  # noqa: E402

# The embedded model is converted once and kept between test sessions (it takes about a minute).
MODEL_CACHE = REPO / ".cache" / "test-workspace"


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    from studio.models import resolve_model

    return Path(resolve_model("embedded", Workspace.at(MODEL_CACHE), progress=lambda _m: None))


@pytest.fixture(scope="session")
def tokenizer(embedded_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir)


@pytest.fixture()
def workspace(tmp_path) -> Workspace:
    return Workspace.at(tmp_path / "workspace")


# ---- the app in a real browser -------------------------------------------------------------------

@pytest.fixture()
def studio_app(workspace, embedded_model_dir):
    """The Gradio app on a free local port, over a fresh workspace that already holds the embedded model."""
    import socket

    from studio.jobs import JobQueue
    from studio.models import EMBEDDED_NAME
    from studio.ui.app import build_app
    from studio.ui.context import Studio

    (workspace.models / EMBEDDED_NAME).symlink_to(embedded_model_dir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    studio = Studio(workspace, JobQueue(workspace, slots=[""], poll=0.2))
    app = build_app(studio)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               allowed_paths=[str(workspace.exports)])
    studio.url = f"http://127.0.0.1:{port}/"
    yield studio
    app.close()
    studio.queue.close()


@pytest.fixture()
def page():
    """A page in Debian's headless chromium (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        yield page
        browser.close()
