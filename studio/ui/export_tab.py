"""The Export tab: merge a finished run into a standalone model, or make a GGUF file of it for llama.cpp, Ollama and
LM Studio; check it, and download it."""
from __future__ import annotations

import gradio as gr

from ..export import ExportError, export_adapter, merge_run
from ..export.checks import human_size
from ..export.gguf import QUANTS, expected_size, export_gguf, require_gguf_support
from ..models import ModelNotFound, resolve_model
from ..runs import ACTIVE, find_run, list_runs
from .context import Studio
from .i18n import Labels, Translator, english, translator


def finished_runs(studio: Studio) -> list[str]:
    """Runs with an adapter to export: every run no longer training that saved one (finished, stopped, or failed
    after a save) — the same rule as the export itself (require_adapter) and the Chat tab."""
    return [r.id for r in list_runs(studio.workspace) if r.has_adapter() and r.state not in ACTIVE]


def merge(studio: Studio, run_id: str, progress=None, t: Translator = english) -> tuple[str, str | None]:
    """(a message for the page, the zip to download or None)."""
    if not run_id:
        return t("❌ Choose a finished run first (train one in the Train tab)."), None
    try:
        result = merge_run(find_run(studio.workspace, run_id), workspace=studio.workspace, progress=progress)
    except (ExportError, ValueError, OSError) as e:
        return f"❌ {t.message(e)}", None
    check = result.check
    if not check.ok:  # the message sends people to the adapter alone, or to the earlier export still in place
        message = t("✖ The merged model does not match base + adapter closely enough — download the adapter alone "
                    "instead.") + f"\n\n{t.message(check.verdict)}"
        if not result.earlier_zip:
            return message, None
        kept = t("The earlier merged model of this run, which passed its check, is kept: you can download it below.")
        return f"{message}\n\n{kept}", str(result.earlier_zip)
    return (t("✔ The merged model matches base + adapter.") + f"\n\n{t.message(check.verdict)}\n\n"
            + t("Saved in `{folder}` ({size:.2f} GB). The zip holds the model, its tokenizer and a model card "
                "(README.md) that says how to load it.", folder=result.merged_dir, size=result.size_bytes / 2**30)), \
        str(result.zip_path) if result.zip_path else None


def adapter_zip(studio: Studio, run_id: str, t: Translator = english) -> tuple[str, str | None]:
    if not run_id:
        return t("❌ Choose a finished run first."), None
    try:
        path = export_adapter(find_run(studio.workspace, run_id), studio.workspace)
    except (ExportError, ValueError, OSError) as e:
        return f"❌ {t.message(e)}", None
    return t("✔ The adapter alone ({size:.1f} MB); load it on top of the base model with peft.",
             size=path.stat().st_size / 2**20), str(path)


def gguf_plan(studio: Studio, run_id: str | None, quant: str, t: Translator = english) -> str:
    """Before starting: what the GGUF type suits, how large the file will be, or why this run cannot be one."""
    advice = t.message(QUANTS[quant][1])
    if not run_id:
        return advice
    try:
        base = resolve_model(find_run(studio.workspace, run_id).config.model, studio.workspace,
                             progress=lambda _m: None)
        require_gguf_support(base)
        size = expected_size(base, quant)
    except (ExportError, ModelNotFound, ValueError, OSError) as e:
        return f"{advice}\n\n❌ {t.message(e)}"
    return f"{advice} " + t("The file will be about {size}.", size=human_size(size))


def gguf(studio: Studio, run_id: str, quant: str, progress=None, t: Translator = english) -> tuple[str, str | None]:
    """(a message for the page, the zip to download or None)."""
    if not run_id:
        return t("❌ Choose a finished run first (train one in the Train tab)."), None
    try:
        result = export_gguf(find_run(studio.workspace, run_id), quant, workspace=studio.workspace,
                             progress=progress)
    except (ExportError, ValueError, OSError) as e:
        return f"❌ {t.message(e)}", None
    check = result.check
    if not check.ok:
        message = t("✖ llama.cpp's check of the GGUF file failed, so it is not offered.") + \
            f"\n\n{t.message(check.verdict)}"
        if not result.earlier_zip:
            return message, None
        kept = t("The earlier GGUF file of this run, which passed its check, is kept: you can download it below.")
        return f"{message}\n\n{kept}", str(result.earlier_zip)
    return (t("✔ llama.cpp loads the GGUF file and answers like the merged model.") + f"\n\n{t.message(check.verdict)}"
            + "\n\n" + t("Asked “{prompt}”, llama.cpp answered: “{answer}”", prompt=check.prompt, answer=check.answer)
            + "\n\n" + t("Saved in `{folder}` ({size}). The zip holds the .gguf file, an Ollama Modelfile and a model "
                         "card (README.md) that says how to run it in Ollama, LM Studio and llama.cpp.",
                         folder=result.folder, size=human_size(result.size_bytes))), \
        str(result.zip_path) if result.zip_path else None


def build(studio: Studio, labels: Labels):
    add = labels.add
    add(gr.Markdown("Merge the adapter into the base model to get one standalone model that runs anywhere "
                    "with plain transformers — or take the small adapter alone. For llama.cpp, Ollama and LM Studio, "
                    "export a GGUF file below."))
    with gr.Row():
        run_pick = add(gr.Dropdown(finished_runs(studio), label="Finished run", scale=3, elem_id="export-run"))
        merge_button = add(gr.Button("Merge and check", variant="primary", scale=1, elem_id="export-merge"))
        adapter_button = add(gr.Button("Adapter only", scale=1, elem_id="export-adapter"))
    with add(gr.Accordion("GGUF for llama.cpp / Ollama / LM Studio", open=True)):
        with gr.Row():
            quant = add(gr.Radio(list(QUANTS), value="q4_k_m", label="Quantization", scale=2, elem_id="export-quant"))
            gguf_button = add(gr.Button("Export GGUF", variant="primary", scale=1, elem_id="export-gguf"))
        plan = gr.Markdown(gguf_plan(studio, None, "q4_k_m"), elem_id="export-gguf-plan")
    result = gr.Markdown(elem_id="export-result")
    download = add(gr.File(label="Download", interactive=False, elem_id="export-download"))

    def on_merge(run_id, request: gr.Request, progress=gr.Progress()):
        t = translator(request)
        return merge(studio, run_id, progress=lambda fraction, message: progress(fraction, desc=t.message(message)),
                     t=t)

    merge_button.click(on_merge, run_pick, [result, download])

    def on_adapter(run_id, request: gr.Request):
        return adapter_zip(studio, run_id, translator(request))

    adapter_button.click(on_adapter, run_pick, [result, download])

    def on_plan(run_id, picked, request: gr.Request):
        return gguf_plan(studio, run_id, picked, translator(request))

    gr.on([run_pick.input, quant.change], on_plan, [run_pick, quant], plan, show_progress="hidden")

    def on_gguf(run_id, picked, request: gr.Request, progress=gr.Progress()):
        t = translator(request)
        return gguf(studio, run_id, picked, t=t,
                    progress=lambda fraction, message: progress(fraction, desc=t.message(message)))

    gguf_button.click(on_gguf, [run_pick, quant], [result, download])

    def on_focus():
        return gr.update(choices=finished_runs(studio))

    return on_focus, [run_pick]
