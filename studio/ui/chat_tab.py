"""The Chat tab: talk to a trained adapter, or put it side by side with the base model (or another adapter)."""
from __future__ import annotations

import shutil
import threading
import uuid
import zipfile
from pathlib import Path

import gradio as gr

from ..export.gguf import offered_ggufs
from ..inference.adapters import AdapterError, read_adapter
from ..models import EMBEDDED_LABEL, EMBEDDED_NAME, ModelNotFound, looks_like_hub_id, resolve_model
from ..runs import find_run, list_runs
from ..workspace import read_json, safe_name, write_json
from .context import Studio
from .i18n import N_, Labels, Translator, english, translator
from .train_tab import model_choices

BASE = N_("Base model (no adapter)")  # the choice's value, and its label in English
UPLOADED = "uploaded:"
GGUF = "gguf:"  # an exported GGUF file, by its path under the workspace's exports
UPLOAD_RECORD = "uploaded.json"  # beside an uploaded adapter's files: who uploaded it


def adapter_choices(studio: Studio, t: Translator = english) -> list[tuple[str, str]]:
    """The base model, every run with an adapter, adapters people uploaded, and exported GGUF files."""
    runs = [(t("Run {id}", id=r.id), r.id) for r in list_runs(studio.workspace) if r.has_adapter()]
    uploads = [(t("Uploaded {name}", name=p.name), UPLOADED + p.name) for p in sorted(uploads_dir(studio).iterdir())
               if (p / "adapter_config.json").exists()]
    ggufs = [(t("Run {id} as GGUF {quant}, in llama.cpp", id=run_id, quant=quant),
              GGUF + path.relative_to(studio.workspace.exports).as_posix())
             for run_id, quant, path in offered_ggufs(studio.workspace)]
    return [(t(BASE), BASE)] + runs + uploads + ggufs


def uploads_dir(studio: Studio) -> Path:
    folder = studio.workspace.models / "uploaded-adapters"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def adapter_folder(studio: Studio, choice: str | None) -> str | None:
    if not choice or choice == BASE or choice.startswith(GGUF):
        return None
    if choice.startswith(UPLOADED):
        return str(studio.workspace.inside(uploads_dir(studio) / safe_name(choice[len(UPLOADED):])))
    return str(find_run(studio.workspace, choice).adapter_dir)


def gguf_file(studio: Studio, choice: str | None) -> str | None:
    """The exported GGUF file a choice names; None for the other choices."""
    if not choice or not choice.startswith(GGUF):
        return None
    return str(studio.workspace.inside(studio.workspace.exports / choice[len(GGUF):]))


def row(studio: Studio, choice: str | None, text: str, history: list[dict], system: str):
    """What one side answers with: the pool's model with an adapter (or none), or llama.cpp with a GGUF file."""
    from ..inference import Row, conversation

    return Row(adapter_folder(studio, choice), conversation(text, history, system), gguf_file(studio, choice))


def base_model_of(studio: Studio, choice: str | None) -> str | None:
    """The model a run was trained on (or an uploaded adapter says it was), as the model picker shows it."""
    if not choice or choice == BASE:
        return None
    if choice.startswith(GGUF):  # exports/<run-id>/gguf-<type>/<file>: the run's base
        choice = choice[len(GGUF):].split("/", 1)[0]
    if choice.startswith(UPLOADED):
        try:
            return _loadable_here(read_adapter(adapter_folder(studio, choice)).base_model)
        except (AdapterError, ValueError, OSError):
            return None
    spec = find_run(studio.workspace, choice).config.model
    return EMBEDDED_LABEL if spec == "embedded" else spec


def _loadable_here(base: str) -> str | None:
    """The base an uploaded adapter names, as this machine can load it: the embedded model by its name, a folder
    that exists here, or a hub id; None for a folder on the machine it was trained on (the picker keeps its
    choice rather than offer a path that cannot work)."""
    if not base:
        return None
    if Path(base).name == EMBEDDED_NAME:
        return EMBEDDED_LABEL
    if Path(base).expanduser().is_dir() or looks_like_hub_id(base):
        return base
    return None


def store_upload(studio: Studio, path: str | None, t: Translator = english,
                 owner: str = "local") -> tuple[str, str | None]:
    """Unpack an uploaded adapter zip into a folder of its own and check it; (message, the new choice)."""
    if not path:
        return "", None
    source = Path(path)
    if not zipfile.is_zipfile(source):
        return t("❌ Upload a .zip of a peft adapter folder (it holds adapter_config.json)."), None
    limit = studio.max_upload_mb * 2**20
    if source.stat().st_size > limit:
        return too_big(source.name, source.stat().st_size, studio.max_upload_mb, t), None
    # Every upload gets its own folder: two people uploading adapter.zip must not overwrite each other's.
    target = uploads_dir(studio) / f"{safe_name(source.stem, 'adapter')}-{uuid.uuid4().hex[:8]}"
    try:
        with zipfile.ZipFile(source) as archive:
            files = [i for i in archive.infolist() if not i.is_dir()]
            config = next((i.filename for i in files if i.filename.endswith("adapter_config.json")), None)
            if config is None:
                return t("❌ That zip holds no adapter_config.json, so it is not a peft adapter."), None
            prefix = config[: -len("adapter_config.json")]
            own = [i for i in files if i.filename.startswith(prefix) and "/" not in i.filename[len(prefix):]]
            unpacked = sum(i.file_size for i in own)
            if unpacked > limit:  # a small zip may unpack to a lot
                return too_big(source.name, unpacked, studio.max_upload_mb, t), None
            target.mkdir(parents=True)
            for info in own:  # only the adapter's own files
                (target / Path(info.filename).name).write_bytes(archive.read(info))
        read_adapter(target)
        write_json(target / UPLOAD_RECORD, {"owner": owner})
    except AdapterError as e:
        shutil.rmtree(target, ignore_errors=True)
        return f"❌ {t.message(e)}", None
    except (zipfile.BadZipFile, OSError) as e:
        shutil.rmtree(target, ignore_errors=True)
        return t("❌ The zip could not be unpacked ({reason}). Zip the adapter folder again and upload it, or ask the "
                 "administrator if the disk is full.", reason=str(e)), None
    return t("Adapter '{name}' is ready to chat with.", name=target.name), UPLOADED + target.name


def remove_upload(studio: Studio, choice: str | None, user: str, admin: bool,
                  t: Translator = english) -> tuple[str, bool]:
    """Delete an uploaded adapter's folder, for the person who uploaded it or an administrator;
    (message, whether it was removed)."""
    if not choice or not choice.startswith(UPLOADED):
        return t("Pick an uploaded adapter on the right first (a training run is deleted in the Train tab)."), False
    folder = Path(adapter_folder(studio, choice))
    owner = (read_json(folder / UPLOAD_RECORD, {}) or {}).get("owner")  # none: uploaded before owners were kept
    if not admin and owner is None:
        return t("❌ Only an administrator may remove {name}: it was uploaded before uploads recorded who made "
                 "them.", name=folder.name), False
    if not admin and owner != user:
        return t("❌ Only {owner}, who uploaded {name}, or an administrator may remove it.", owner=owner,
                 name=folder.name), False
    try:
        shutil.rmtree(folder)
    except OSError as e:
        return t("❌ {name} could not be removed ({reason}). Ask the administrator to delete the folder {folder}.",
                 name=folder.name, reason=e.strerror or str(e), folder=str(folder)), False
    return t("Removed the uploaded adapter '{name}'.", name=folder.name), True


def too_big(name: str, size: int, limit_mb: float, t: Translator) -> str:
    return t("❌ {file} is {size:.1f} MB; adapter uploads here are limited to {limit:g} MB. Ask the administrator "
             "to raise the limit.", file=name, size=size / 2**20, limit=limit_mb)


def stats_line(answer, t: Translator = english) -> str:
    if answer.gguf:
        swap = t(" · llama.cpp, {file}", file=Path(answer.gguf).name)
    elif answer.adapter is None:
        swap = ""
    elif answer.adapter_cached:
        swap = t(" · adapter already loaded")
    else:
        swap = t(" · adapter loaded in {ms:.0f} ms", ms=answer.adapter_load_s * 1000)
    warning = f"\n\n⚠ {t.message(answer.warning)}" if answer.warning else ""
    return t("first token after {seconds:.2f} s · {speed:.1f} tokens/s · {tokens} tokens",
             seconds=answer.first_token_s, speed=answer.tokens_per_s, tokens=answer.tokens) + swap + warning


class StopButtons:
    """One stop switch per browser session, so Stop ends only that person's answer."""

    def __init__(self):
        self._events: dict[str, threading.Event] = {}

    def fresh(self, session: str) -> threading.Event:
        self._events[session] = threading.Event()
        return self._events[session]

    def stop(self, session: str) -> None:
        if session in self._events:
            self._events[session].set()


def build(studio: Studio, labels: Labels):
    from ..inference import QUANTIZATIONS, ChatError, ChatStream, GenerationSettings

    stops = StopButtons()
    add = labels.add
    add(gr.Markdown("Chat with what you trained. Tick **side by side** to send each message to two models at "
                    "once — the base model on the left, your adapter on the right — and see the difference."))
    with gr.Row():
        model = add(gr.Dropdown(model_choices(studio), value=EMBEDDED_LABEL, allow_custom_value=True,
                                label="Base model", scale=3))
        quantization = add(gr.Radio(list(QUANTIZATIONS), value="auto", scale=2,
                                    label="Precision (auto: what fits)"))
    with gr.Row():
        left_pick = add(gr.Dropdown(adapter_choices(studio), value=BASE, label="Left", elem_id="chat-left"))
        right_pick = add(gr.Dropdown(adapter_choices(studio), value=BASE, label="Right (the adapter to try)",
                                     elem_id="chat-right"))
        side_by_side = add(gr.Checkbox(True, label="Side by side", elem_id="chat-side-by-side"))
    with add(gr.Accordion("Upload an adapter, system prompt and sampling", open=False)):
        with gr.Row():
            upload = add(gr.File(label="Adapter (.zip of a peft adapter folder)", scale=3))
            remove = add(gr.Button("Remove the uploaded adapter picked on the right", scale=1))
        system = add(gr.Textbox(label="System prompt (optional)"))
        with gr.Row():
            temperature = add(gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0: always the likeliest word)"))
            top_p = add(gr.Slider(0.05, 1, value=0.9, step=0.05, label="Top-p"))
            max_new = add(gr.Slider(8, 2048, value=256, step=8, label="Longest answer (tokens)"))
            repetition = add(gr.Slider(1, 2, value=1.1, step=0.05, label="Repetition penalty"))
    with gr.Row(elem_id="chat-boxes"):  # as tall as the view allows (desktop.css)
        left_chat = add(gr.Chatbot(label="Left", height=380, elem_id="chat-left-box"))
        right_chat = add(gr.Chatbot(label="Right", height=380, elem_id="chat-right-box"))
    with gr.Row():
        left_stats = gr.Markdown(elem_id="chat-left-stats")
        right_stats = gr.Markdown(elem_id="chat-right-stats")
    with gr.Row():
        message = add(gr.Textbox(placeholder="Type a message and press Enter", show_label=False, scale=5,
                                 elem_id="chat-message"))
        send = add(gr.Button("Send", variant="primary", scale=1, elem_id="chat-send"))
        stop = add(gr.Button("Stop", scale=1))
        clear = add(gr.Button("Clear", scale=1))

    side_by_side.change(lambda on: gr.update(visible=on), side_by_side, left_chat)

    def on_pick(choice, current_model):
        return gr.update(value=base_model_of(studio, choice) or current_model)

    right_pick.change(on_pick, [right_pick, model], model)

    def on_upload(path, request: gr.Request):
        t = translator(request)
        text, choice = store_upload(studio, path, t, owner=studio.user(request))
        choices = adapter_choices(studio, t)
        return text, gr.update(choices=choices, value=choice) if choice else gr.update(choices=choices)

    upload.upload(on_upload, upload, [right_stats, right_pick])

    def on_remove(choice, left_choice, request: gr.Request):
        t = translator(request)
        text, removed = remove_upload(studio, choice, studio.user(request), studio.is_admin(request), t)
        if not removed:
            return text, gr.update(), gr.update()
        choices = adapter_choices(studio, t)
        return (text, gr.update(choices=choices, value=BASE),
                gr.update(choices=choices, value=BASE if left_choice == choice else left_choice))

    remove.click(on_remove, [right_pick, left_pick], [right_stats, right_pick, left_pick])

    def on_send(text, left_history, right_history, model_choice, quant, left_choice, right_choice, both,
                system_prompt, temp, topp, max_tokens, rep, request: gr.Request):
        left_history, right_history = list(left_history or []), list(right_history or [])
        t = translator(request)
        try:
            path = resolve_model(model_choice, studio.workspace, progress=lambda _m: None)
            settings = GenerationSettings(float(temp), float(topp), int(max_tokens), float(rep))
            event = stops.fresh(request.session_hash if request else "local")
            sides = ([row(studio, left_choice, text, left_history, system_prompt)] if both else []) + \
                [row(studio, right_choice, text, right_history, system_prompt)]
            stream = ChatStream(studio.pool, path, sides, settings, quant, event)
        except (ChatError, ModelNotFound, ValueError, FileNotFoundError) as e:
            yield left_history, right_history, "", f"❌ {t.message(e)}", text
            return
        histories = ([left_history] if both else []) + [right_history]
        for history in histories:
            history += [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        try:
            for deltas in stream:
                for history, delta in zip(histories, deltas):
                    history[-1]["content"] += delta
                yield left_history, right_history, "", "", ""
        except Exception as e:  # noqa: BLE001 - a failed generation is shown, never a traceback
            for history in histories:  # the failed turn goes: it must not be sent again as history
                del history[-2:]
            yield left_history, right_history, "", f"❌ {t.message(e)}", text  # and the message is not lost
            return
        lines = [stats_line(a, t) for a in stream.answers]
        yield left_history, right_history, lines[0] if both else "", lines[-1], ""

    outputs = [left_chat, right_chat, left_stats, right_stats, message]
    inputs = [message, left_chat, right_chat, model, quantization, left_pick, right_pick, side_by_side, system,
              temperature, top_p, max_new, repetition]
    # As many answers at once as the pool generates at once (Gradio's default is one for everybody); more
    # requests wait in Gradio's queue, which tells each person their place.
    gr.on([send.click, message.submit], on_send, inputs, outputs, concurrency_limit=studio.pool.max_concurrent)

    def on_stop(request: gr.Request):
        stops.stop(request.session_hash if request else "local")

    stop.click(on_stop, None, None)
    clear.click(lambda: ([], [], "", ""), None, [left_chat, right_chat, left_stats, right_stats])

    def on_focus(request: gr.Request):
        choices = adapter_choices(studio, translator(request))
        return gr.update(choices=model_choices(studio)), gr.update(choices=choices), gr.update(choices=choices)

    return on_focus, [model, left_pick, right_pick]
