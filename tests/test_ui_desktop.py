"""The studio as one desktop-style window: the status bar's figures and what one survey of them costs; and, in one
browser page, every view's main action in sight at a laptop's and a desktop's size with no horizontal scroll, every
control reachable by keyboard in reading order, and axe-core's verdict in English (light theme) and 繁體中文
(dark)."""
import threading
import time

from studio.config import TrainConfig
from studio.jobs import JobQueue
from studio.runs import create_run
from studio.ui import status_bar
from studio.ui.context import Studio
from studio.ui.i18n import Translator
from studio.workspace import append_jsonl

H200 = {"index": 0, "name": "NVIDIA H200", "used_gb": 23.44, "total_gb": 139.8, "free_gb": 116.36, "util": 97}


def busy_queue(workspace) -> JobQueue:
    """A queue that starts nothing, holding one run training for ana (step 3 of 40), a report card being made for
    bo, and two runs waiting."""
    queue = JobQueue(workspace, devices=[])
    training = create_run(workspace, TrainConfig(dataset="d"), owner="ana", name="pirates")
    training.set_status(state="running")
    append_jsonl(training.path / "metrics.jsonl", {"step": 3, "max_steps": 40, "loss": 2.5})
    judged = create_run(workspace, TrainConfig(dataset="d"), owner="bo", name="judged", state="completed")
    judged.set_status(evaluation={"state": "running", "queued_at": time.time()})
    for owner in ("ana", "cy"):
        create_run(workspace, TrainConfig(dataset="d"), owner=owner)
    return queue


def test_the_status_bar_says_each_gpu_each_job_the_queue_and_the_user(workspace, monkeypatch):
    queue = busy_queue(workspace)
    try:
        studio = Studio(workspace, queue)
        training, judged = (r.id for r in queue.queue()[:2])
        monkeypatch.setattr(status_bar, "survey_gpus", lambda: ([H200, {**H200, "index": 1, "util": None}], None))
        text = status_bar.render(status_bar.survey(studio), "ana", Translator("en"))
        for part in ("GPU 0: 23.4 of 140 GB, 97% busy", "GPU 1: 23.4 of 140 GB<", 'title="NVIDIA H200"',
                     f"{training} (ana): step 3 of 40", f"{judged} (bo): making its report card",
                     "2 waiting in the queue", "User: ana"):
            assert part in text, part
        chinese = status_bar.render(status_bar.survey(studio), "ana", Translator("zh-Hant"))
        assert "GPU 0：已用 23.4 / 140 GB，忙碌 97%" in chinese and "佇列中有 2 個在等" in chinese

        monkeypatch.setattr(status_bar, "survey_gpus", lambda: ([], None))
        assert "No NVIDIA GPU here: training runs on the CPU" in status_bar.render(status_bar.survey(studio), "ana",
                                                                                   Translator("en"))
    finally:
        queue.close()


def test_a_name_in_the_status_bar_is_text_not_markup(workspace, monkeypatch):
    queue = JobQueue(workspace, devices=[])
    try:
        create_run(workspace, TrainConfig(dataset="d"), owner="<b>ana</b>").set_status(state="running")
        text = status_bar.render(status_bar.survey(Studio(workspace, queue)), "<i>bo</i>", Translator("en"))
        assert "<b>" not in text and "<i>" not in text and "&lt;b&gt;ana&lt;/b&gt;" in text
    finally:
        queue.close()


class IdleH200:
    """NVML on an idle H200, as it answered (measured): the driver reserves 616 MiB, which the first memory query
    counts as used and nvidia-smi does not."""

    nvmlMemory_v2 = 0x02000028

    def __init__(self, v2: bool = True):
        self.v2 = v2

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H200"

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        from types import SimpleNamespace

        if version and not self.v2:
            raise RuntimeError("NVML_ERROR_FUNCTION_NOT_FOUND")  # a driver older than the v2 query
        return SimpleNamespace(total=150754820096, free=150109880320, used=0 if version else 644939776)

    def nvmlDeviceGetUtilizationRates(self, handle):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")  # as a MIG slice answers


def test_gpu_memory_in_use_is_counted_as_nvidia_smi_counts_it():
    from studio.gpu import _read_gpus

    assert _read_gpus(IdleH200()) == [{"index": 0, "name": "NVIDIA H200", "total_gb": 140.4, "free_gb": 139.8,
                                       "used_gb": 0.0, "util": None}]
    assert _read_gpus(IdleH200(v2=False))[0]["used_gb"] == 0.6


def test_many_pages_asking_at_once_share_one_survey(monkeypatch):
    taken = []
    monkeypatch.setattr(status_bar, "survey", lambda studio: taken.append(time.monotonic()) or len(taken))
    shared = status_bar.SharedSurvey(studio=None, max_age=0.5)
    answers = []
    pages = [threading.Thread(target=lambda: answers.append(shared())) for _ in range(8)]
    for page in pages:
        page.start()
    for page in pages:
        page.join()
    assert answers == [1] * 8 and len(taken) == 1
    time.sleep(0.5)
    assert shared() == 2  # older than max_age: surveyed again


# ---- the window in a real browser ----------------------------------------------------------------

MAIN_ACTIONS = {"1 · Dataset": "#dataset-save", "2 · Train": "#start-training", "3 · Chat": "#chat-send",
                "4 · Export": "#export-merge"}
SIZES = ({"width": 1366, "height": 768}, {"width": 1920, "height": 1080})  # a common laptop's, a desktop's


def in_sight(page, selector: str) -> bool:
    """Inside the window and not covered by anything: what a person sees without scrolling."""
    return page.evaluate("""s => { const e = document.querySelector(s), r = e.getBoundingClientRect();
        const inside = r.width > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth;
        return inside && e.contains(document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2)); }""", selector)


SIDEWAYS_SCROLLERS = """() => [document.scrollingElement, ...document.querySelectorAll('*')].filter(e =>
    e.scrollWidth > e.clientWidth + 1 && (e === document.scrollingElement ||
                                          ['auto', 'scroll'].includes(getComputedStyle(e).overflowX)))
    .map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className)"""


def scrolls_sideways(page) -> list[str]:
    """The page itself, or any part of it, that would scroll horizontally once the layout has settled: a table
    measures its columns a frame or two after its view is shown or the window resized (CI caught one mid-way)."""
    from playwright.sync_api import TimeoutError

    try:
        page.wait_for_function(f"({SIDEWAYS_SCROLLERS})().length === 0", timeout=3000)
    except TimeoutError:
        pass  # still scrolling after 3 s: a real fault, named by the caller's assertion
    return page.evaluate(SIDEWAYS_SCROLLERS)


def keyboard_stops(page) -> dict:
    """Press Tab from the top of the page until focus comes round again; then which of the sidebar's and the open
    view's visible controls it never reached, and the stops that went against the page's reading order."""
    page.locator("#app-name").click()  # where the next Tab starts from: the top of the page
    page.evaluate("""() => { window.tabStops = [];  // every element focus lands on, in order
        window.tabStopsListening ??= document.addEventListener('focusin', e => tabStops.push(e.target)) || true; }""")
    for _ in range(20):
        for _ in range(10):
            page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement === document.body || new Set(tabStops).size < tabStops.length"):
            break
    stops = page.evaluate("""() => {
        const repeat = tabStops.findIndex((e, i) => tabStops.indexOf(e) < i);  // focus has come round
        const round = repeat < 0 ? tabStops : tabStops.slice(0, repeat);
        const name = e => e.getAttribute('aria-label') || e.innerText?.trim() || e.id || e.outerHTML.slice(0, 80);
        const shown = document.querySelectorAll('#sidebar, #views > .tab-wrapper, #views > .tabitem[style*="flex"]');
        const controls = [...shown].flatMap(part => [...part.querySelectorAll('button, input, textarea, select')])
            .filter(e => !e.disabled && e.tabIndex >= 0 && e.type !== 'file' && e.checkVisibility());
        const backwards = round.slice(1).filter((e, i) =>
            !(round[i].compareDocumentPosition(e) & Node.DOCUMENT_POSITION_FOLLOWING));
        return {first: round.slice(0, 5).map(name), unreached: controls.filter(e => !round.includes(e)).map(name),
                backwards: backwards.map(name)}; }""")
    # Focus came round to the language list, which opens on focus: closed, it no longer lies over the next click.
    page.evaluate("document.activeElement?.blur()")
    return stops


def serious_violations(page) -> list[str]:
    """What axe-core finds critical or serious on the page at rest. While an event runs, Gradio dims the parts it
    will update and lays its progress over them, and a redrawn part can be caught mid-fade: passing states that are
    not what a person reads (each failed the colour contrast of a summary being redrawn, and a second look a moment
    later found nothing). So axe waits until no progress tracker shows and nothing is pending, and what it finds
    is looked at again after a second: only a fault that is still there counts."""
    from axe_playwright_python.base import AXE_SCRIPT

    if not page.evaluate("typeof axe !== 'undefined'"):
        page.evaluate(AXE_SCRIPT)  # once a page: half a megabyte of script
    found = []
    for _ in range(2):
        page.wait_for_function("![...document.querySelectorAll('[data-testid=status-tracker]')]"
                               ".some(e => !e.classList.contains('hide')) && !document.querySelector('.pending')")
        found = []
        for violation in page.evaluate("axe.run({resultTypes: ['violations']})")["violations"]:
            if violation["impact"] in ("critical", "serious"):
                found += [f"{violation['id']} ({violation['impact']}): {node['html'][:300]}"
                          for node in violation["nodes"]]
        if not found:
            break
        page.wait_for_timeout(1000)
    return found


def test_one_window_every_view_in_sight_reachable_by_keyboard_and_accessible(studio_app, page, tmp_path):
    from playwright.sync_api import expect

    from studio.gpu import survey_gpus
    from studio.ui.i18n import translate

    studio = studio_app
    studio.queue.close()  # nothing trains: the runs below only have to show in the status bar
    busy_queue(studio.workspace)
    training = studio.queue.queue()[0]
    upload = tmp_path / "rows.jsonl"  # for the Dataset view's Save bar, which shows once a file is checked
    upload.write_text("".join(f'{{"instruction": "Say {i}.", "output": "{i}."}}\n' for i in range(6)))

    page.set_viewport_size(SIZES[0])
    page.goto(studio.url)
    page.locator("#dataset-file input[type=file]").set_input_files(str(upload))
    page.locator("#dataset-summary").get_by_text("6 rows").wait_for()

    bar = page.locator("#status-bar")
    gpus, _ = survey_gpus()  # what NVML says here; on a machine without an NVIDIA GPU, nothing
    for figure in ([f"GPU {g['index']}: " for g in gpus] or ["No NVIDIA GPU here: training runs on the CPU"]):
        expect(bar).to_contain_text(figure)
    for figure in (f"{training.id} (ana): step 3 of 40", "(bo): making its report card", "2 waiting in the queue",
                   "User: local"):
        expect(bar).to_contain_text(figure)

    for size in SIZES:
        page.set_viewport_size(size)
        for view, action in MAIN_ACTIONS.items():
            page.get_by_role("tab", name=view).click()
            page.locator(action).wait_for()
            assert in_sight(page, action), f"{view}: {action} is out of sight at {size}"
            assert not (scrollers := scrolls_sideways(page)), f"{view} scrolls sideways at {size}: {scrollers}"

    # axe judges only what is on screen, so the window is made tall enough to show each view whole.
    page.set_viewport_size({"width": SIZES[0]["width"], "height": 3000})
    for view in MAIN_ACTIONS:
        page.get_by_role("tab", name=view).click()
        stops = keyboard_stops(page)
        assert stops["first"] == ["Language · 語言 · 语言", *MAIN_ACTIONS], stops
        assert not stops["unreached"] and not stops["backwards"], f"{view}: {stops}"
        assert not (faults := serious_violations(page)), f"{view}: {faults}"

    # The theme follows the system's setting: the second language is checked in the dark theme.
    page.emulate_media(color_scheme="dark")
    expect(page.locator("body")).to_have_class("dark")
    page.locator("#language input").click()
    page.get_by_role("option", name="繁體中文").click()
    for view in MAIN_ACTIONS:
        page.get_by_role("tab", name=translate("zh-Hant", view)).click()
        expect(bar).to_contain_text(translate("zh-Hant", "User: {user}", user="local"))
        assert not (faults := serious_violations(page)), f"{view} in 繁體中文, dark: {faults}"
