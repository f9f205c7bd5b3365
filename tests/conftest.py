"""Shared test fixtures. Tests never reach the network and make their own small data."""
import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Hypothesis keeps what it learns (the examples that failed, to try them first next time) in the temporary folder,
# not in .hypothesis/ of the working directory, which would be the repository.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "lora-studio-hypothesis"))
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from studio.workspace import Workspace  # noqa: E402

from app_server import serving, with_embedded_model  # noqa: E402

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
    """The app on a free local port, over a fresh workspace that already holds the embedded model."""
    with serving(with_embedded_model(workspace, embedded_model_dir)) as studio:
        yield studio


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules that run several generations at once on the two shared cores: one thread each keeps them
    quick (measured here: a forward pass took 15 s on two threads spin-waiting for each other, 2.4 s on one)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
