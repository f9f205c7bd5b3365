"""Take the README's screenshots: every tab of the app at 1366x768, into docs/screenshots/.

    .venv/bin/python scripts/screenshots.py [--out DIR]

The app runs as the browser tests run it (tests/app_server.py): on a free local port, over a temporary workspace
that holds the embedded model, in Debian's chromium. The workspace first gets a pirate-voiced adapter, trained as
the journey test trains it (Chatbot preset, the small-data rule; a few minutes on two CPU cores), so that the
Train tab shows its report card, the Chat tab its answer beside the base model's, and the Export tab its merge.
Nothing is written into the repository but the screenshots (and, once, the embedded model converted into
.cache/test-workspace, which the tests share). For the language picker's Chinese names and the page's emoji to be
drawn, the machine needs a Chinese and an emoji font (Debian: `apt install fonts-wqy-zenhei fonts-noto-color-emoji`).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PIRATE = REPO / "tests" / "data" / "pirate_chat.jsonl"
MODEL_CACHE = REPO / ".cache" / "test-workspace"  # where tests/conftest.py keeps the converted embedded model
VIEWPORT = {"width": 1366, "height": 768}
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # as tests/conftest.py launches it
QUESTION = "What color is snow?"  # not in the training data
DATASET = "my-pirate-chats"  # what the Dataset tab saves
LONG = 600_000  # ms: a merge or two generations on a CPU


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots",
                        help="folder for dataset.png, train.png, chat.png and export.png (default: docs/screenshots)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    from app_server import serving, with_embedded_model
    from studio.models import resolve_model
    from studio.workspace import Workspace

    model_dir = Path(resolve_model("embedded", Workspace.at(MODEL_CACHE)))
    with tempfile.TemporaryDirectory(prefix="studio-screenshots-") as tmp:
        workspace = with_embedded_model(Workspace.at(Path(tmp) / "workspace"), model_dir)
        run = train_pirate_adapter(workspace)
        upload = Path(tmp) / "my_pirate_chats.jsonl"  # the pirate chats, and two rows that cannot be used
        lines = PIRATE.read_text(encoding="utf-8").splitlines()
        upload.write_text("\n".join([*lines[:5], '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assis',
                                     *lines[5:9], '{"messages": [{"role": "user", "content": "Anyone there?"}]}',
                                     *lines[9:]]) + "\n", encoding="utf-8")
        with serving(workspace) as studio, browser_page() as page:
            page.goto(studio.url)
            shoot = lambda name: screenshot(page, args.out / name)  # noqa: E731
            dataset_tab(page, upload, shoot)
            train_tab(page, run.id, shoot)
            chat_tab(page, run.id, shoot)
            export_tab(page, run.id, shoot)
    print(f"Screenshots in {args.out}")
    return 0


def train_pirate_adapter(workspace):
    """A completed run, trained as Start trains one for a 32-row dataset and the Chatbot preset."""
    from studio.config import config_from_preset, load_presets
    from studio.data import inspect_file, save_dataset
    from studio.runs import create_run
    from studio.training import small_data

    save_dataset(workspace, "pirate", PIRATE, inspect_file(PIRATE))
    config, _ = small_data.apply(config_from_preset(load_presets()["chatbot"], model="embedded", dataset="pirate"),
                                 rows=32)
    run = create_run(workspace, config, name="pirate")
    print("Training the pirate adapter and making its report card (a few minutes on a CPU)...", flush=True)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "studio", "--workspace", str(workspace.root), "train", str(run.path)],
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0 or run.state != "completed":
        sys.exit(f"error: the pirate run did not complete ({run.state}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    print(f"Trained in {time.monotonic() - started:.0f} s", flush=True)
    return run


class browser_page:
    """A page in Debian's headless chromium (never a downloaded browser), 1366x768."""

    def __enter__(self):
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        page = self._browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(60_000)
        return page

    def __exit__(self, *exc):
        self._browser.close()
        self._playwright.stop()


def screenshot(page, path: Path) -> None:
    page.wait_for_timeout(1000)  # let charts and tables finish drawing
    page.screenshot(path=str(path))
    print(f"  {path.name}", flush=True)


def scroll_to(page, selector: str) -> None:
    """Scroll the view (which scrolls on its own inside the window) so that the element is at its top."""
    page.locator(selector).evaluate("e => e.scrollIntoView({block: 'start'})")


def pick(page, selector: str, value: str) -> None:
    page.locator(f"{selector} input").fill(value)
    page.locator(f"{selector} input").press("Enter")


def dataset_tab(page, upload: Path, shoot) -> None:
    page.get_by_role("tab", name="1 · Dataset").click()
    page.locator("#dataset-file input[type=file]").set_input_files(str(upload))
    page.locator("#dataset-summary").get_by_text("rows").first.wait_for()
    page.locator("#dataset-preview [role=gridcell]").first.wait_for()
    page.locator("#dataset-name textarea").fill(DATASET)
    page.locator("#dataset-save").click()
    page.locator("#dataset-saved").get_by_text("Saved").wait_for()
    scroll_to(page, "#dataset-summary")  # the rows it can use, the ones it cannot and why, the first examples
    shoot("dataset.png")


def train_tab(page, run_id: str, shoot) -> None:
    page.get_by_role("tab", name="2 · Train").click()
    page.locator("#train-dataset input").click()  # the dataset just saved: the plan for it shows before Start
    page.get_by_role("option", name=DATASET).click()
    page.locator("#train-schedule").get_by_text("examples").first.wait_for()
    pick(page, "#run-pick", run_id)
    page.locator("#run-progress").get_by_text("completed").first.wait_for()
    page.wait_for_function("document.querySelector('#loss-plot canvas, #loss-plot svg') !== null")
    page.locator("#report-examples [role=gridcell]").first.wait_for()  # the run's report card, under its charts
    shoot("train.png")  # the plan for the dataset beside the run and its charts


def chat_tab(page, run_id: str, shoot) -> None:
    page.get_by_role("tab", name="3 · Chat").click()
    pick(page, "#chat-right", f"Run {run_id}")
    page.locator("#chat-message textarea").fill(QUESTION)
    page.locator("#chat-send").click()
    page.wait_for_selector("#chat-right-stats:has-text('tokens/s')", timeout=LONG)
    page.wait_for_selector("#chat-left-stats:has-text('tokens/s')", timeout=LONG)
    shoot("chat.png")


def export_tab(page, run_id: str, shoot) -> None:
    page.get_by_role("tab", name="4 · Export").click()
    pick(page, "#export-run", run_id)
    page.locator("#export-merge").click()
    page.wait_for_selector("#export-result:has-text('matches base + adapter')", timeout=LONG)
    shoot("export.png")


if __name__ == "__main__":
    sys.exit(main())
