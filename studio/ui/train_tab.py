"""The Train tab: pick data, model and preset, start a run, and watch it live."""
from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from ..config import ConfigError, TrainConfig, config_from_preset, load_presets, save_user_preset, suggest_for_size
from ..models import EMBEDDED_LABEL, EMBEDDED_NAME, ModelNotFound, list_local_models, resolve_model
from ..runs import Run, find_run, list_runs
from ..training.advisor import advise
from ..training.memory import estimate_for
from .context import Studio

# The settings a person may change in "Advanced", in the order shown: (field, label)
ADVANCED = [
    ("quantization", "Model precision (4bit saves the most memory)"), ("lora_r", "Adapter size (rank r)"),
    ("lora_alpha", "Adapter strength (alpha)"), ("lora_dropout", "Dropout"),
    ("target_modules", "Layers to adapt (comma-separated, or all-linear)"), ("learning_rate", "Learning rate"),
    ("epochs", "Passes over the data (epochs)"), ("max_steps", "Stop after this many steps (-1: no limit)"),
    ("batch_size", "Examples per step (batch size)"), ("grad_accum", "Steps added up per update (gradient accumulation)"),
    ("max_length", "Longest example in tokens (max length)"), ("packing", "Pack short examples together"),
    ("gradient_checkpointing", "Save memory by recomputing (gradient checkpointing)"),
    ("optimizer", "Optimizer"), ("val_fraction", "Share held out for validation"),
    ("early_stopping_patience", "Stop early after this many worse evaluations (0: never)"), ("seed", "Random seed"),
]
STATE_ICONS = {"queued": "…", "running": "▶", "completed": "✔", "failed": "✖", "stopped": "■", "interrupted": "⚠"}


def model_choices(studio: Studio) -> list[str]:
    return [EMBEDDED_LABEL] + [m for m in list_local_models(studio.workspace) if m != EMBEDDED_NAME]


def dataset_choices(studio: Studio) -> list[str]:
    from ..data import list_datasets

    return [d["name"] for d in list_datasets(studio.workspace)]


def run_choices(studio: Studio) -> list[tuple[str, str]]:
    return [(f"{STATE_ICONS.get(r.state, '')} {r.id}", r.id) for r in list_runs(studio.workspace)]


def _component_for(field: str, value):
    label = dict(ADVANCED)[field]
    if field == "quantization":
        return gr.Radio(["4bit", "8bit", "none"], value=value, label=label)
    if field == "optimizer":
        return gr.Dropdown(["adamw_torch", "paged_adamw_8bit", "adamw_8bit"], value=value, label=label)
    if isinstance(value, bool):
        return gr.Checkbox(value=value, label=label)
    if isinstance(value, list):
        return gr.Textbox(value=", ".join(value), label=label)
    if isinstance(value, (int, float)):
        return gr.Number(value=value, label=label)
    return gr.Textbox(value=str(value), label=label)


def settings_from(preset_name: str, studio: Studio) -> list:
    preset = load_presets(studio.workspace.root / "presets")[preset_name]
    config = TrainConfig(**{**preset.settings, "dataset": "-"})
    values = []
    for field, _ in ADVANCED:
        value = getattr(config, field)
        values.append(", ".join(value) if isinstance(value, list) else value)
    return values


def build_config(dataset, model, preset, values) -> TrainConfig:
    settings = dict(zip([f for f, _ in ADVANCED], values))
    model = model or EMBEDDED_LABEL
    return TrainConfig.from_dict({**settings, "dataset": dataset or "", "preset": preset,
                                  "model": "embedded" if model == EMBEDDED_LABEL else model})


def fit_text(studio: Studio, model_choice, values) -> str:
    """The 'will it fit?' line for the chosen model and settings."""
    try:
        config = build_config("-", model_choice, "custom", values)
        path = resolve_model(config.model, studio.workspace, progress=lambda _m: None)
        return "**Will it fit?** " + estimate_for(path, config).summary()
    except (ConfigError, ModelNotFound, OSError, ValueError) as e:
        return f"**Will it fit?** Cannot tell yet: {e}"


def progress_html(run: Run) -> str:
    status = run.status()
    metrics = [m for m in run.metrics() if "step" in m]
    last = metrics[-1] if metrics else {}
    total, step = last.get("max_steps") or 0, last.get("step", 0)
    share = step / total if total else 0.0
    eta = last.get("eta")
    eta_text = f" · about {eta / 60:.1f} min left" if eta and status.get("state") == "running" else ""
    state = status.get("state", "unknown")
    return (f"<div><b>{STATE_ICONS.get(state, '')} {run.id}</b> — {state}{eta_text}<br>"
            f"<progress max='1' value='{share:.3f}' style='width:100%'></progress> step {step} of {total or '?'}"
            f"<br><i>{status.get('message', '')}</i></div>")


def charts(run: Run) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    metrics = [m for m in run.metrics() if "step" in m and "event" not in m]
    loss_rows = [{"step": m["step"], "loss": m[k], "series": name} for m in metrics
                 for k, name in (("loss", "train"), ("eval_loss", "validation")) if k in m]
    lr_rows = [{"step": m["step"], "learning_rate": m["learning_rate"]} for m in metrics if "learning_rate" in m]
    samples = [s for s in run.gpu_samples() if "used_gb" in s]
    t0 = samples[0]["time"] if samples else 0
    mem_rows = [{"seconds": round(s["time"] - t0, 1), "GB": s["used_gb"], "device": s.get("device", "")}
                for s in samples]
    return (_frame(loss_rows, step=int, loss=float, series=str), _frame(lr_rows, step=int, learning_rate=float),
            _frame(mem_rows, seconds=float, GB=float, device=str))


def _frame(rows: list[dict], **types) -> pd.DataFrame:
    """A table with fixed column types: an empty one must still plot as numbers, not as categories."""
    return pd.DataFrame(rows, columns=list(types)).astype(types)


def compare_losses(studio: Studio, run_ids: list[str]) -> pd.DataFrame:
    rows = []
    for run_id in run_ids or []:
        for m in find_run(studio.workspace, run_id).metrics():
            if "loss" in m:
                rows.append({"step": m["step"], "loss": m["loss"], "run": run_id})
    return _frame(rows, step=int, loss=float, run=str)


def queue_table(studio: Studio) -> pd.DataFrame:
    rows = [{"#": i + 1, "run": r.id, "who": r.status().get("owner", ""), "state": r.state,
             "queued": time.strftime("%H:%M:%S", time.localtime(r.status().get("queued_at", 0)))}
            for i, r in enumerate(studio.queue.queue())]
    return pd.DataFrame(rows, columns=["#", "run", "who", "state", "queued"])


def build(studio: Studio) -> None:
    presets = load_presets(studio.workspace.root / "presets")
    with gr.Row():
        dataset = gr.Dropdown(dataset_choices(studio), label="Dataset (save one in the Dataset tab first)",
                              allow_custom_value=True, elem_id="train-dataset")
        model = gr.Dropdown(model_choices(studio), value=EMBEDDED_LABEL, allow_custom_value=True,
                            label="Base model: the embedded one, a folder on this machine, or a hub id (org/name)")
        preset = gr.Dropdown([(p.title, p.name) for p in presets.values()], value="chatbot", label="Preset")
    preset_text = gr.Markdown(presets["chatbot"].description)
    with gr.Row():
        suggestion = gr.Markdown()
        apply_suggestion = gr.Button("Apply suggestion", size="sm", visible=False)
    with gr.Accordion("Advanced settings", open=False):
        advanced = []
        defaults = settings_from("chatbot", studio)
        for (field, _), value in zip(ADVANCED, defaults):
            advanced.append(_component_for(field, value))
        with gr.Row():
            my_preset_name = gr.Textbox(label="Save these settings as my preset, named", scale=3)
            save_preset = gr.Button("Save preset", scale=1)
    fit = gr.Markdown(fit_text(studio, EMBEDDED_LABEL, defaults), elem_id="fit-estimate")
    with gr.Row():
        run_name = gr.Textbox(label="Name this run (optional)", scale=3)
        start = gr.Button("Start training", variant="primary", scale=1, elem_id="start-training")
    notice = gr.Markdown(elem_id="train-notice")

    gr.Markdown("### Runs")
    with gr.Row():
        run_pick = gr.Dropdown(run_choices(studio), label="Watch run", scale=3, elem_id="run-pick")
        stop = gr.Button("Stop", scale=1)
        resume = gr.Button("Resume", scale=1)
    progress = gr.HTML(elem_id="run-progress")
    with gr.Row():
        loss_plot = gr.LinePlot(x="step", y="loss", color="series", title="Loss", height=250, elem_id="loss-plot")
        lr_plot = gr.LinePlot(x="step", y="learning_rate", title="Learning rate", height=250)
        mem_plot = gr.LinePlot(x="seconds", y="GB", color="device", title="Memory (GPU, or process on CPU)",
                               height=250)
    advice = gr.Markdown(elem_id="run-advice")
    log = gr.Textbox(label="Log (last lines)", lines=8, max_lines=8, autoscroll=True)
    with gr.Accordion("Compare runs and the queue", open=False):
        compare_pick = gr.Dropdown(run_choices(studio), multiselect=True, label="Runs to overlay")
        compare_plot = gr.LinePlot(x="step", y="loss", color="run", title="Training loss", height=250)
        queue_view = gr.Dataframe(queue_table(studio), label="Queue (running first, then in order)",
                                  interactive=False)
    timer = gr.Timer(2.0)

    # ---- behaviour ----
    def on_preset(name):
        return [presets[name].description] + settings_from(name, studio) if name in presets else \
            [gr.update()] * (1 + len(advanced))

    preset.change(on_preset, preset, [preset_text] + advanced)

    def suggestion_for(name) -> dict | None:
        """Rank, learning rate and epochs suited to the chosen dataset's size; None until it can be read."""
        from ..data import load_records

        try:
            records, _ = load_records(name, studio.workspace)
        except Exception:  # noqa: BLE001 - a half-typed name: no suggestion yet
            return None
        return {**suggest_for_size(len(records)), "rows": len(records)}

    def on_dataset(name):
        tip = suggestion_for(name)
        if tip is None:
            return gr.update(value=""), gr.update(visible=False)
        return (f"💡 {tip['rows']} examples — {tip['why']}: rank {tip['lora_r']}, learning rate "
                f"{tip['learning_rate']}, {tip['epochs']:g} epochs."), gr.update(visible=True)

    dataset.change(on_dataset, dataset, [suggestion, apply_suggestion])

    def on_apply(name, *values):
        tip = suggestion_for(name) or {}
        return [tip.get(f, v) for (f, _), v in zip(ADVANCED, values)]

    apply_suggestion.click(on_apply, [dataset] + advanced, advanced)

    def on_fit(model_choice, *values):
        return fit_text(studio, model_choice, values)

    for component in [model] + advanced:
        component.change(on_fit, [model] + advanced, fit)

    def on_save_preset(name, *values):
        if not name.strip():
            return "Type a name for your preset first.", gr.update()
        try:
            settings = dict(zip([f for f, _ in ADVANCED], values))
            save_user_preset(studio.workspace.root / "presets", name, name, "My own settings.", settings)
        except ConfigError as e:
            return f"❌ {e}", gr.update()
        presets.update(load_presets(studio.workspace.root / "presets"))
        return f"Saved preset '{name}'.", gr.update(choices=[(p.title, p.name) for p in presets.values()])

    save_preset.click(on_save_preset, [my_preset_name] + advanced, [notice, preset])

    def on_start(form: dict, request: gr.Request):
        """form: every input component's value, by component (Gradio passes a set of inputs as a dict)."""
        if not form[dataset]:
            return "❌ Choose a dataset first (save one in the Dataset tab).", gr.update()
        try:
            config = build_config(form[dataset], form[model], form[preset], [form[c] for c in advanced])
        except ConfigError as e:
            return f"❌ {e}", gr.update()
        run = studio.queue.submit(config, owner=studio.user(request), name=form[run_name])
        waiting = len(studio.queue.queue()) - 1
        where = "starts now" if waiting <= 0 else f"is number {waiting + 1} in the queue"
        return f"Run **{run.id}** {where}.", gr.update(choices=run_choices(studio), value=run.id)

    start.click(on_start, {dataset, model, preset, run_name, *advanced}, [notice, run_pick])

    def current_run(run_id):
        """The run to show: the chosen one, else the newest active one, so a reload shows the live run."""
        if run_id:
            return find_run(studio.workspace, run_id)
        runs = list_runs(studio.workspace)
        active = [r for r in runs if r.state in ("running", "queued")]
        return (active or runs or [None])[0]

    def refresh(run_id, compare_ids):
        run = current_run(run_id)
        if run is None:
            empty = charts_empty()
            return ("No runs yet.", *empty, "", "", queue_table(studio), compare_losses(studio, compare_ids))
        loss, lr, mem = charts(run)
        tips = advise(run)
        return (progress_html(run), loss, lr, mem, "\n".join(f"💡 {t}" for t in tips), run.log_tail(),
                queue_table(studio), compare_losses(studio, compare_ids))

    outputs = [progress, loss_plot, lr_plot, mem_plot, advice, log, queue_view, compare_plot]
    timer.tick(refresh, [run_pick, compare_pick], outputs, show_progress="hidden")
    run_pick.change(refresh, [run_pick, compare_pick], outputs, show_progress="hidden")
    compare_pick.change(refresh, [run_pick, compare_pick], outputs, show_progress="hidden")

    def act(action, done: str):
        """A Stop or Resume handler: the queue checks that the person may touch the run."""
        def handler(run_id, request: gr.Request):
            run = current_run(run_id)
            if run is None:
                return "No run chosen."
            try:
                action(run.id, studio.user(request), studio.is_admin(request))
            except (PermissionError, ValueError, FileNotFoundError) as e:
                return f"❌ {e}"
            return done.format(run=run.id)
        return handler

    stop.click(act(studio.queue.stop, "Stopping {run}: the adapter trained so far is being saved."), run_pick,
               notice)
    resume.click(act(studio.queue.resume, "{run} is queued to resume from its last checkpoint."), run_pick, notice)

    def on_focus():
        """Refresh the pickers whenever the tab is opened: other tabs and other people add to them."""
        return (gr.update(choices=dataset_choices(studio)), gr.update(choices=model_choices(studio)),
                gr.update(choices=run_choices(studio)), gr.update(choices=run_choices(studio)))

    return on_focus, [dataset, model, run_pick, compare_pick]


def charts_empty():
    return (_frame([], step=int, loss=float, series=str), _frame([], step=int, learning_rate=float),
            _frame([], seconds=float, GB=float, device=str))
