"""Shared test fixtures. Tests never reach the network and make their own small data."""
import os
import subprocess
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
PIRATE = Path(__file__).parent / "data" / "pirate_chat.jsonl"  # 32 chats, every answer in a pirate's voice


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    from studio.models import resolve_model

    return Path(resolve_model("embedded", Workspace.at(MODEL_CACHE), progress=lambda _m: None))


def uses_pirate_run(item) -> bool:
    return "pirate_run" in item.fixturenames


def pytest_collection_modifyitems(items):
    """The pirate run's tests last: by then its training, started with the session, is done (pirate_training)."""
    items.sort(key=uses_pirate_run)


@pytest.fixture(scope="session", autouse=True)
def pirate_training(request, tmp_path_factory):
    """The pirate run's training, started with the session when any test needs it, as a person would start it: the
    Chatbot preset and nothing set by hand. Its 40 updates take four minutes of this machine's two cores and held up
    the first test that needed them; now they run beside the other tests, on one thread that the kernel schedules
    only on an idle core (most tests keep one core busy at a time)."""
    if not any(uses_pirate_run(item) for item in request.session.items):
        yield None
        return
    from studio.config import config_from_preset, load_presets
    from studio.data import inspect_file, save_dataset
    from studio.runs import create_run
    from studio.training import small_data

    workspace = with_embedded_model(Workspace.at(tmp_path_factory.mktemp("journey") / "workspace"),
                                    request.getfixturevalue("embedded_model_dir"))
    save_dataset(workspace, "pirate", PIRATE, inspect_file(PIRATE))
    # What Start does for a saved dataset of 32 rows and the Chatbot preset (studio/ui/train_tab.py)
    config, _ = small_data.apply(config_from_preset(load_presets()["chatbot"], model="embedded", dataset="pirate"),
                                 rows=32)
    run = create_run(workspace, config, name="pirate")
    log = workspace.root.parent / "pirate-training.log"
    with open(log, "w") as out:
        child = subprocess.Popen(["chrt", "--idle", "0", sys.executable, "-m", "studio", "--workspace",
                                  str(workspace.root), "train", str(run.path)], cwd=REPO, stdout=out,
                                 stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    yield workspace, run, child, log
    if child.poll() is None:  # the session ended before a test needed it
        child.kill()
        child.wait()


@pytest.fixture(scope="session")
def pirate_run(pirate_training):
    """A completed run whose adapter answers every question in a pirate's voice."""
    workspace, run, child, log = pirate_training
    returncode = child.wait(timeout=1800)
    assert returncode == 0 and run.state == "completed", log.read_text()[-3000:]
    return workspace, run


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
