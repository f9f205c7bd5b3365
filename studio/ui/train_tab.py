"""The Train tab: pick data, model and preset, start a run, and watch it live."""
from __future__ import annotations

import html
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from ..config import (CHECKPOINTING, METHODS, OPTIMIZERS, QUANTIZATIONS, ConfigError, TrainConfig, check_data_fits,
                      config_from_preset, load_presets, save_user_preset, suggest_for_size)
from ..evaluation import read_card
from ..gpu import list_gpus
from ..messages import Message, text_of
from ..models import EMBEDDED_LABEL, EMBEDDED_NAME, ModelNotFound, list_local_models, resolve_model
from ..runs import Run, find_run, list_runs, start_adapter
from ..training import small_data
from ..training.advisor import advise
from ..training.memory import estimate_for, sequences_per_batch
from . import report_view
from .context import Studio
from .i18n import N_, Labels, Translator, english, translator

# The settings a person may change in "Advanced", in the order shown: (field, label)
ADVANCED = [
    ("method", N_("Method")),
    ("beta", N_("Stay close to where it started (beta; higher: closer)")),
    ("quantization", N_("Model precision (4bit saves the most memory)")), ("lora_r", N_("Adapter size (rank r)")),
    ("lora_alpha", N_("Adapter strength (alpha)")), ("lora_dropout", N_("Dropout")),
    ("target_modules", N_("Layers to adapt (comma-separated, or all-linear)")), ("learning_rate", N_("Learning rate")),
    ("epochs", N_("Passes over the data (epochs)")), ("max_steps", N_("Stop after this many steps (-1: no limit)")),
    ("batch_size", N_("Examples per step (batch size)")),
    ("grad_accum", N_("Steps added up per update (gradient accumulation)")),
    ("max_length", N_("Longest example in tokens (max length)")), ("packing", N_("Pack short examples together")),
    ("gradient_checkpointing", N_("Save memory by recomputing (gradient checkpointing)")),
    ("optimizer", N_("Optimizer")), ("val_fraction", N_("Share held out for validation")),
    ("early_stopping_patience", N_("Stop early after this many worse evaluations (0: never)")),
    ("report_card", N_("Make a report card when it ends (base vs adapter on held-out prompts)")),
    ("seed", N_("Random seed")),
]
FIELDS = [field for field, _ in ADVANCED]
START_FROM = N_("Start from a finished run's adapter (usually your supervised run; empty: a new adapter)")
LABELLED = {**dict(ADVANCED), "start_from": START_FROM}  # every setting the page shows, by its run.yaml name
MAX_MEMORY_POINTS = 600  # per device, in the memory chart
# A run's state, shown as an icon and as a word in the visitor's language.
STATE_ICONS = {N_("queued"): "…", N_("running"): "▶", N_("completed"): "✔", N_("failed"): "✖",
               N_("stopped"): "■", N_("interrupted"): "⚠", N_("damaged"): "⚠"}


def model_choices(studio: Studio) -> list[str]:
    return [EMBEDDED_LABEL] + [m for m in list_local_models(studio.workspace) if m != EMBEDDED_NAME]


def dataset_choices(studio: Studio) -> list[str]:
    from ..data import list_datasets

    return [d["name"] for d in list_datasets(studio.workspace)]


def run_choices(studio: Studio) -> list[tuple[str, str]]:
    return [(f"{STATE_ICONS.get(r.state, '')} {r.id}", r.id) for r in list_runs(studio.workspace)]


def start_choices(studio: Studio) -> list[str]:
    """The runs a preference run can go on from: those that completed with an adapter."""
    return [r.id for r in list_runs(studio.workspace) if r.state == "completed" and r.has_adapter()]


CHECKPOINTING_WORDS = {"auto": N_("auto: only when memory is short"), "on": N_("on: least memory"),
                       "off": N_("off: fastest")}
METHOD_WORDS = {"sft": N_("supervised: imitate the answers"),
                "dpo": N_("preference (DPO): prefer the chosen answer of each pair")}


def _component_for(field: str, value):
    label = dict(ADVANCED)[field]
    if field == "quantization":
        return gr.Radio(list(QUANTIZATIONS), value=value, label=label)
    if field == "gradient_checkpointing":
        return gr.Radio([(CHECKPOINTING_WORDS[choice], choice) for choice in CHECKPOINTING], value=value, label=label)
    if field == "method":
        return gr.Radio([(METHOD_WORDS[choice], choice) for choice in METHODS], value=value, label=label,
                        elem_id="train-method")
    if field == "optimizer":
        return gr.Dropdown(list(OPTIMIZERS), value=value, label=label)
    if isinstance(value, bool):
        return gr.Checkbox(value=value, label=label)
    if isinstance(value, list):
        return gr.Textbox(value=", ".join(value), label=label)
    if isinstance(value, (int, float)):
        return gr.Number(value=value, label=label)
    return gr.Textbox(value=str(value), label=label)


def settings_from(preset) -> list:
    config = config_from_preset(preset, dataset="-")
    values = []
    for field, _ in ADVANCED:
        value = getattr(config, field)
        values.append(", ".join(value) if isinstance(value, list) else value)
    return values


def preset_choices(presets: dict, t: Translator = english) -> list[tuple[str, str]]:
    return [(t(p.title), p.name) for p in presets.values()]


def preset_description(presets: dict, name: str, t: Translator = english) -> str:
    return t(presets[name].description.strip()) if name in presets else ""


def build_config(dataset, model, preset, values, gpus=(), fsdp=False, start_from=None) -> TrainConfig:
    settings = dict(zip(FIELDS, values))
    model = model or EMBEDDED_LABEL
    return TrainConfig.from_dict({**settings, "dataset": dataset or "", "preset": preset, "gpus": list(gpus or []),
                                  "fsdp": bool(fsdp), "model": "embedded" if model == EMBEDDED_LABEL else model,
                                  "start_from": start_from or ""})


def with_labels(message, t: Translator):
    """A settings error that names each setting as Advanced settings labels it, not by its run.yaml name."""
    if not isinstance(message, Message):
        return message
    values = {k: with_labels(v, t) for k, v in message.values.items()}
    if values.get("field") in LABELLED:
        values["field"] = t(LABELLED[values["field"]])
    return message.with_values(**values)


def gpu_choices(studio: Studio) -> list[tuple[str, int]]:
    """The GPUs this studio may train on, as the picker shows them."""
    allowed = set(studio.queue.devices)
    return [(f"GPU {g['index']} · {g['name']} · {g['total_gb']:.0f} GB", g["index"]) for g in list_gpus()
            if str(g["index"]) in allowed]


def dataset_facts(studio: Studio, name) -> dict | None:
    """{"rows", "pairs", "mean_tokens", "max_tokens"} of a saved dataset (its report has them) or a data file (rows
    and pairs only); None until the name can be read."""
    from ..data import is_pairs, list_datasets, load_records

    saved = {d["name"]: d for d in list_datasets(studio.workspace) if d.get("valid") is not None}
    try:
        if name in saved:
            rows, pairs = saved[name]["valid"], saved[name]["format"] == "pairs"
        else:
            records = load_records(name, studio.workspace)[0]
            rows, pairs = len(records), is_pairs(records)
    except Exception:  # noqa: BLE001 - a half-typed name: nothing to say yet
        return None
    tokens = (saved.get(name) or {}).get("tokens") or {}
    return {"rows": rows, "pairs": pairs, "mean_tokens": tokens.get("mean"), "max_tokens": tokens.get("max")}


def dataset_suggestion(studio: Studio, name, max_length) -> dict | None:
    """Settings suited to a dataset's size and row lengths (config.suggest_for_size) with its row count and mean
    tokens; None until the name can be read."""
    facts = dataset_facts(studio, name)
    if facts is None:
        return None
    return {**suggest_for_size(facts["rows"], facts["mean_tokens"], max_length), **facts}


def hand_set(presets: dict, preset_name, values) -> set[str]:
    """The settings the small-data rule may choose that the person changed from the preset's."""
    preset = presets.get(preset_name)
    return small_data.hand_set_fields(dict(zip(FIELDS, values)), preset.settings if preset else {})


def schedule_text(studio: Studio, presets: dict, dataset, model_choice, preset_name, values,
                  t: Translator = english) -> str:
    """How many passes and updates the run will make, in words, before Start."""
    facts = dataset_facts(studio, dataset) if dataset else None
    if facts is None:
        return ""
    try:
        config = build_config(dataset, model_choice, preset_name, values)
    except ConfigError:
        return ""  # the fit line says which setting is wrong
    config, schedule = small_data.apply(config, facts["rows"], hand_set(presets, preset_name, values))
    minutes = small_data.expected_minutes(schedule, config, facts["mean_tokens"], studio.workspace)
    return "🗓️ " + t.message(schedule.summary(minutes))


def suggestion_text(tip: dict, max_length, t: Translator = english) -> str:
    text = t("💡 {rows} examples — {why}: rank {rank}, learning rate {lr}, {epochs:g} epochs.", rows=tip["rows"],
             why=t(tip["why"]), rank=tip["lora_r"], lr=tip["learning_rate"], epochs=tip["epochs"]) \
        if "epochs" in tip else t("💡 {rows} examples — {why}: rank {rank}.", rows=tip["rows"], why=t(tip["why"]),
                                  rank=tip["lora_r"])
    if tip.get("packing"):
        text += " " + t("They average {mean:.0f} tokens against a max length of {length}: packing them together "
                        "fills every step, about twice as fast on a large model.", mean=tip["mean_tokens"],
                        length=max_length)
    return text


HOW_THE_ESTIMATE_IS_MADE = N_("(Estimated from the model's shape and your settings, by a formula fitted to 22 training "
                              "runs measured on an H100 — 3B and 7B models, up to 32,768 tokens a batch — which came "
                              "out 0.3–1.7 GB above each of them.)")


def fit_text(studio: Studio, model_choice, values, t: Translator = english, dataset=None) -> str:
    """The 'will it fit?' line for the chosen model and settings: for the picked dataset's longest examples
    when its lengths are known, else for examples of the max length."""
    try:
        config = build_config("-", model_choice, "custom", values)
        path = resolve_model(config.model, studio.workspace, progress=lambda _m: None)
        longest = (dataset_facts(studio, dataset) or {}).get("max_tokens") if dataset else None
        tokens = sequences_per_batch(config) * min(longest, config.max_length) if longest and not config.packing \
            else None
        basis = t("for this dataset's longest examples") if tokens else t("for examples of the max length")
        return (t("**Will it fit?** {estimate} ({basis})", estimate=t.message(estimate_for(path, config, tokens)
                                                                            .summary()), basis=basis) + " "
                + t(HOW_THE_ESTIMATE_IS_MADE))
    except (ConfigError, ModelNotFound, OSError, ValueError) as e:
        return t("**Will it fit?** Cannot tell yet: {error}", error=t.message(with_labels(text_of(e), t)))


def progress_html(run: Run, t: Translator = english) -> str:
    status = run.status()
    metrics = [m for m in run.metrics() if "step" in m]
    last = metrics[-1] if metrics else {}
    total, step = last.get("max_steps") or 0, last.get("step", 0)
    share = step / total if total else 0.0
    eta = last.get("eta")
    running = eta and status.get("state") == "running"
    eta_text = t(" · about {minutes:.1f} min left", minutes=eta / 60) if running else ""
    state = status.get("state", N_("unknown"))
    # The message can quote what people typed (a dataset or model name): it is text, never markup.
    return (f"<div><b>{STATE_ICONS.get(state, '')} {html.escape(run.id)}</b> — {t(state)}{eta_text}<br>"
            f"<progress max='1' value='{share:.3f}' style='width:100%'></progress> "
            + t("step {step} of {total}", step=step, total=total or "?")
            + f"<br><i>{html.escape(t.message(status))}</i></div>")


def charts(run: Run, t: Translator = english) -> tuple[pd.DataFrame, ...]:
    """Loss, learning rate and memory; for preference pairs also the reward margin and how often chosen wins."""
    metrics = [m for m in run.metrics() if "step" in m and "event" not in m]

    def series(key: str, column: str) -> list[dict]:
        return [{"step": m["step"], column: m[k], "series": t(name)} for m in metrics
                for k, name in ((key, N_("train")), (f"eval_{key}", N_("validation"))) if k in m]

    loss_rows = series("loss", "loss")
    lr_rows = [{"step": m["step"], "learning_rate": m["learning_rate"]} for m in metrics if "learning_rate" in m]
    samples = [s for s in run.gpu_samples() if "used_gb" in s]
    devices = len({s.get("device") for s in samples}) or 1
    # One sample a second per device grows without end; a chart needs no more than a few hundred points each.
    samples = samples[::max(1, len(samples) // (MAX_MEMORY_POINTS * devices))]
    t0 = samples[0]["time"] if samples else 0
    mem_rows = [{"seconds": round(s["time"] - t0, 1), "GB": s["used_gb"], "device": s.get("device", "")}
                for s in samples]
    return (_frame(loss_rows, step=int, loss=float, series=str), _frame(lr_rows, step=int, learning_rate=float),
            _frame(mem_rows, seconds=float, GB=float, device=str),
            _frame(series("reward_margin", "margin"), step=int, margin=float, series=str),
            _frame(series("reward_accuracy", "share"), step=int, share=float, series=str))


def _frame(rows: list[dict], **types) -> pd.DataFrame:
    """A table with fixed column types: an empty one must still plot as numbers, not as categories."""
    return pd.DataFrame(rows, columns=list(types)).astype(types)


def existing_runs(studio: Studio, run_ids: list[str]) -> list[Run]:
    """The runs of these ids that still exist (one may have been deleted since it was picked)."""
    runs = []
    for run_id in run_ids or []:
        try:
            runs.append(find_run(studio.workspace, run_id))
        except FileNotFoundError:
            continue
    return runs


def compare_losses(studio: Studio, run_ids: list[str]) -> pd.DataFrame:
    rows = [{"step": m["step"], "loss": m["loss"], "run": run.id} for run in existing_runs(studio, run_ids)
            for m in run.metrics() if "loss" in m]
    return _frame(rows, step=int, loss=float, run=str)


def queue_table(studio: Studio, t: Translator = english) -> pd.DataFrame:
    rows = [{"#": i + 1, "run": r.id, "who": r.status().get("owner", ""), "state": t(r.state),
             "queued at": time.strftime("%H:%M:%S", time.localtime(r.status().get("queued_at", 0)))}
            for i, r in enumerate(studio.queue.queue())]
    return pd.DataFrame(rows, columns=["#", N_("run"), N_("who"), N_("state"), N_("queued at")]).rename(columns=t)


def build(studio: Studio, labels: Labels):
    presets = load_presets(studio.workspace.root / "presets")
    add = labels.add
    # The settings beside the run they start, each scrolling on its own; stacked on a narrow window.
    with gr.Row(elem_id="train-panes"):
        with gr.Column(elem_id="train-settings"):
            with gr.Row():
                # No dataset until one is picked: Gradio would show the first one without telling the plan and fit
                # lines.
                dataset = add(gr.Dropdown(dataset_choices(studio), value=None, allow_custom_value=True,
                                          label="Dataset (save one in the Dataset tab first)", elem_id="train-dataset"))
                model = add(gr.Dropdown(model_choices(studio), value=EMBEDDED_LABEL, allow_custom_value=True,
                                        label="Base model: the embedded one, a folder on this machine, or a hub id "
                                              "(org/name)"))
                preset = add(gr.Dropdown(preset_choices(presets), value="chatbot", label="Preset",
                                         elem_id="train-preset"))
            preset_text = gr.Markdown(preset_description(presets, "chatbot"))
            # For the preference method only: the usual order is a supervised run first, then DPO from its adapter.
            start_from = add(gr.Dropdown(start_choices(studio), value=None, visible=False, elem_id="train-start-from",
                                         label=START_FROM))
            with gr.Row():
                suggestion = gr.Markdown()
                apply_suggestion = add(gr.Button("Apply suggestion", size="sm", visible=False))
            schedule = gr.Markdown(elem_id="train-schedule")
            with add(gr.Accordion("Advanced settings", open=False)):
                advanced = []
                defaults = settings_from(presets["chatbot"])
                for (field, _), value in zip(ADVANCED, defaults):
                    advanced.append(add(_component_for(field, value),
                                        choices=field in ("gradient_checkpointing", "method")))
                with gr.Row():
                    my_preset_name = add(gr.Textbox(label="Save these settings as my preset, named", scale=3))
                    save_preset = add(gr.Button("Save preset", scale=1))
            fit = gr.Markdown(fit_text(studio, EMBEDDED_LABEL, defaults), elem_id="fit-estimate")
            gpu_problem = gr.Markdown("⚠️ " + studio.queue.gpu_problem if studio.queue.gpu_problem else "",
                                      elem_id="gpu-problem")
            gpus = gpu_choices(studio)
            with gr.Row(visible=len(gpus) > 1):  # one GPU (or none) needs no choosing
                gpu_pick = add(gr.CheckboxGroup(gpus, label="GPUs for this run (none ticked: any one free GPU)",
                                                scale=3, elem_id="train-gpus"))
                fsdp = add(gr.Checkbox(label="Shard the model across them (FSDP), for a model too large for one GPU",
                                       scale=2))
            with gr.Row(elem_classes="action-bar"):  # in sight while the settings scroll (desktop.css)
                run_name = add(gr.Textbox(label="Name this run (optional)", scale=3))
                start = add(gr.Button("Start training", variant="primary", scale=1, elem_id="start-training"))
            notice = gr.Markdown(elem_id="train-notice")
        with gr.Column(elem_id="train-watch"):
            add(gr.Markdown("### Runs"))
            with gr.Row():
                run_pick = add(gr.Dropdown(run_choices(studio), label="Watch run", scale=3, elem_id="run-pick"))
                stop = add(gr.Button("Stop", scale=1))
                resume = add(gr.Button("Resume", scale=1))
                delete = add(gr.Button("Delete", scale=1, variant="stop", elem_id="run-delete"))
            progress = gr.HTML(elem_id="run-progress")
            with gr.Row(elem_id="train-charts"):
                loss_plot = add(gr.LinePlot(x="step", y="loss", color="series", title="Loss", x_title="step",
                                            y_title="loss",
                                            color_title="series", height=250, elem_id="loss-plot"))
                lr_plot = add(gr.LinePlot(x="step", y="learning_rate", title="Learning rate", x_title="step",
                                          y_title="learning rate", height=250))
                mem_plot = add(gr.LinePlot(x="seconds", y="GB", color="device",
                                           title="Memory (each GPU, or process on CPU)",
                                           x_title="seconds", color_title="device", height=250))
            with gr.Row(visible=False) as pair_charts:  # a run on preference pairs: what DPO does to them
                margin_plot = add(gr.LinePlot(x="step", y="margin", color="series", height=250, elem_id="margin-plot",
                                              title="Reward margin: how far the chosen answer leads the rejected one",
                                              x_title="step", y_title="margin", color_title="series"))
                wins_plot = add(gr.LinePlot(x="step", y="share", color="series", height=250, elem_id="wins-plot",
                                            title="How often the chosen answer wins", x_title="step",
                                            y_title="share of pairs", color_title="series", y_lim=[0, 1]))
            advice = gr.Markdown(elem_id="run-advice")
            add(gr.Markdown("### Did it work? The report card"))
            card_text = gr.Markdown(elem_id="report-card")
            card_table = gr.Dataframe(interactive=False, wrap=True, elem_id="report-examples")
            with gr.Row():
                eval_data = add(gr.Dropdown(dataset_choices(studio), value=None, allow_custom_value=True, scale=3,
                                            label="Evaluate on (empty: the examples it held out)", elem_id="eval-data"))
                evaluate = add(gr.Button("Evaluate", scale=1, elem_id="evaluate"))
            log = add(gr.Textbox(label="Log (last lines)", lines=8, max_lines=8, autoscroll=True))
            with add(gr.Accordion("Compare runs and the queue", open=False)):
                compare_pick = add(gr.Dropdown(run_choices(studio), multiselect=True, label="Runs to compare",
                                               elem_id="compare-pick"))
                compare_plot = add(gr.LinePlot(x="step", y="loss", color="run", title="Training loss", x_title="step",
                                               y_title="loss", color_title="run", height=250))
                compare_table = add(gr.Dataframe(label="Their report cards, and the settings in which they differ",
                                                 interactive=False, wrap=True, elem_id="compare-cards"))
                queue_view = add(gr.Dataframe(queue_table(studio), label="Queue (running first, then in order)",
                                              interactive=False))
    timer = gr.Timer(2.0)

    # ---- behaviour ----
    def on_preset(name, request: gr.Request):
        return [preset_description(presets, name, translator(request))] + settings_from(presets[name]) \
            if name in presets else [gr.update()] * (1 + len(advanced))

    preset.change(on_preset, preset, [preset_text] + advanced)
    method = advanced[FIELDS.index("method")]
    method.change(lambda chosen: gr.update(visible=chosen == "dpo"), method, start_from, show_progress="hidden")

    def on_start_from(run_id):
        """An adapter fits the base model it was trained on: pick that one."""
        if not run_id:
            return gr.update()
        try:
            spec = find_run(studio.workspace, run_id).config.model
        except (FileNotFoundError, ConfigError, OSError):  # deleted meanwhile: Start says what is wrong
            return gr.update()
        return EMBEDDED_LABEL if spec == "embedded" else spec

    start_from.change(on_start_from, start_from, model, show_progress="hidden")

    def on_language(lang, name, data, model_choice, *values):
        """The parts of this tab whose words are not fixed, in the page's new language."""
        t = Translator(lang)
        return (gr.update(choices=preset_choices(presets, t)), preset_description(presets, name, t),
                fit_text(studio, model_choice, values, t, data),
                schedule_text(studio, presets, data, model_choice, name, values, t),
                "⚠️ " + t.message(studio.queue.gpu_problem) if studio.queue.gpu_problem else "")

    labels.language.change(on_language, [labels.language, preset, dataset, model] + advanced,
                           [preset, preset_text, fit, schedule, gpu_problem], show_progress="hidden")

    max_length = advanced[FIELDS.index("max_length")]

    def on_dataset(name, length, request: gr.Request):
        tip = dataset_suggestion(studio, name, length)
        if tip is None:
            return gr.update(value=""), gr.update(visible=False)
        return suggestion_text(tip, length, translator(request)), gr.update(visible=True)

    gr.on([dataset.change, max_length.change], on_dataset, [dataset, max_length], [suggestion, apply_suggestion],
          trigger_mode="always_last", show_progress="hidden")

    def on_apply(name, *values):
        tip = dataset_suggestion(studio, name, values[FIELDS.index("max_length")]) or {}
        return [tip.get(f, v) for f, v in zip(FIELDS, values)]

    apply_suggestion.click(on_apply, [dataset] + advanced, advanced)

    def on_fit(request: gr.Request, data, name, model_choice, *values):
        t = translator(request)
        return (fit_text(studio, model_choice, values, t, data),
                schedule_text(studio, presets, data, model_choice, name, values, t))

    # A preset changes every setting at once: estimate once, for the last change (a hub lookup can take seconds).
    gr.on([c.change for c in [dataset, model] + advanced], on_fit, [dataset, preset, model] + advanced,
          [fit, schedule], trigger_mode="always_last", show_progress="hidden")

    def on_save_preset(request: gr.Request, name, *values):
        t = translator(request)
        if not name.strip():
            return t("Type a name for your preset first."), gr.update()
        try:
            settings = dict(zip(FIELDS, values))
            save_user_preset(studio.workspace.root / "presets", name, name, N_("My own settings."), settings)
        except ConfigError as e:
            return f"❌ {t.message(with_labels(text_of(e), t))}", gr.update()
        presets.update(load_presets(studio.workspace.root / "presets"))
        return t("Saved preset '{name}'.", name=name), gr.update(choices=preset_choices(presets, t))

    save_preset.click(on_save_preset, [my_preset_name] + advanced, [notice, preset])

    def on_start(form: dict, request: gr.Request):
        """form: every input component's value, by component (Gradio passes a set of inputs as a dict)."""
        t = translator(request)
        if not form[dataset]:
            return t("❌ Choose a dataset first (save one in the Dataset tab)."), gr.update()
        if form[dataset] not in dataset_choices(studio) and not Path(form[dataset]).expanduser().exists():
            return t("❌ There is no dataset called '{name}'. Choose one from the list, or save it in the Dataset "
                     "tab first.", name=form[dataset]), gr.update()
        try:
            values = [form[c] for c in advanced]
            config = build_config(form[dataset], form[model], form[preset], values, form[gpu_pick], form[fsdp],
                                  form[start_from] if form[method] == "dpo" else None)
            facts = dataset_facts(studio, form[dataset])
            if facts:  # the passes and learning rate a small dataset needs, unless set by hand (training/small_data)
                check_data_fits(config, facts["pairs"])
                config, _ = small_data.apply(config, facts["rows"], hand_set(presets, form[preset], values))
            start_adapter(studio.workspace, config)
            # Now, not hours later when its turn comes: a model that cannot be had (mistyped, no internet).
            resolve_model(config.model, studio.workspace, progress=lambda _m: None)
            run = studio.queue.submit(config, owner=studio.user(request), name=form[run_name])
        except ValueError as e:  # a setting out of range, a model that cannot be had, a GPU not for this studio
            return f"❌ {t.message(with_labels(text_of(e), t))}", gr.update()
        except OSError as e:  # preparing the model: a full disk, a folder it may not write
            return t("❌ The model could not be prepared ({error}). Check the free disk space, or ask the "
                     "administrator.", error=str(e)), gr.update()
        waiting = len(studio.queue.queue()) - 1
        message = t("Run **{run}** starts now.", run=run.id) if waiting <= 0 else \
            t("Run **{run}** is number {place} in the queue.", run=run.id, place=waiting + 1)
        return message, gr.update(choices=run_choices(studio), value=run.id)

    start.click(on_start, {dataset, model, preset, run_name, gpu_pick, fsdp, start_from, *advanced},
                [notice, run_pick])

    def current_run(run_id):
        """The run to show: the chosen one, else the newest active one, so a reload shows the live run."""
        if run_id:
            try:
                return find_run(studio.workspace, run_id)
            except FileNotFoundError:
                pass  # deleted meanwhile (perhaps by someone else): show the newest instead
        runs = list_runs(studio.workspace)
        active = [r for r in runs if r.state in ("running", "queued")]
        return (active or runs or [None])[0]

    def refresh(run_id, compare_ids, card_data, request: gr.Request):
        t = translator(request)
        run = current_run(run_id)
        compare = (compare_losses(studio, compare_ids), report_view.compare_cards(existing_runs(studio, compare_ids), t))
        if run is None:
            empty = charts_empty()
            return (t("No runs yet."), *empty, gr.update(visible=False), "", "", queue_table(studio, t), *compare,
                    "", report_view.card_examples(None, t))
        loss, lr, mem, margin, wins = charts(run, t)
        tips = [f"💡 {t(tip)}" for tip in advise(run)] + damaged_lines(run, t)
        card = read_card(run, card_data or None)
        return (progress_html(run, t), loss, lr, mem, margin, wins, gr.update(visible=not margin.empty),
                "\n".join(tips), run.log_tail(), queue_table(studio, t),
                *compare, report_view.card_summary(card, run.evaluation, t), report_view.card_examples(card, t))

    outputs = [progress, loss_plot, lr_plot, mem_plot, margin_plot, wins_plot, pair_charts, advice, log, queue_view,
               compare_plot, compare_table,
               card_text, card_table]
    # Refreshing only reads the run's files: every visitor's page may do it at once, not one after another.
    gr.on([timer.tick, run_pick.change, compare_pick.change, eval_data.change], refresh,
          [run_pick, compare_pick, eval_data], outputs, show_progress="hidden", concurrency_limit=None)

    def on_evaluate(run_id, data, request: gr.Request):
        t = translator(request)
        run = current_run(run_id)
        if run is None:
            return t("No run chosen.")
        if data and dataset_facts(studio, data) is None:
            return t("❌ There is no dataset called '{name}'. Choose one from the list, or save it in the Dataset "
                     "tab first.", name=data)
        try:
            studio.queue.evaluate(run.id, data or None, studio.user(request))
        except (ValueError, FileNotFoundError) as e:
            return f"❌ {t.message(e)}"
        return t("The report card of {run} is queued; it shows here when it is ready.", run=run.id)

    evaluate.click(on_evaluate, [run_pick, eval_data], notice)

    def act(action, done: str):
        """A Stop or Resume handler: the queue checks that the person may touch the run. `done` may quote the
        run's status message afterwards as {status}."""
        def handler(run_id, request: gr.Request):
            t = translator(request)
            run = current_run(run_id)
            if run is None:
                return t("No run chosen.")
            try:
                action(run.id, studio.user(request), studio.is_admin(request))
            except (PermissionError, ValueError, FileNotFoundError) as e:
                return f"❌ {t.message(e)}"
            return t(done, run=run.id, status=t.message(run.status()))
        return handler

    stop.click(act(studio.queue.stop, N_("Stopping {run}: the adapter trained so far is being saved.")), run_pick,
               notice)
    resume.click(act(studio.queue.resume, N_("{run} is queued again. {status}")), run_pick, notice)

    delete_asked = gr.State(None)  # the run a first click on Delete asked about: a second click deletes it

    def on_delete(run_id, compare_ids, asked, request: gr.Request):
        """Only the run picked by name (never the newest one the page falls back to showing), and only on a
        second click: a deleted run cannot be brought back."""
        t = translator(request)
        if not run_id:
            return t("Pick the run to delete under 'Watch run' first."), gr.update(), gr.update(), None
        if asked != run_id:
            return (t("Click Delete again to delete {run} and everything it saved (adapter, checkpoints, charts). "
                      "This cannot be undone.", run=run_id), gr.update(), gr.update(), run_id)
        try:
            studio.queue.delete(run_id, studio.user(request), studio.is_admin(request))
        except (PermissionError, ValueError, FileNotFoundError) as e:
            return f"❌ {t.message(e)}", gr.update(), gr.update(), None
        choices = run_choices(studio)
        return (t("Deleted {run} and everything it saved.", run=run_id), gr.update(choices=choices, value=None),
                gr.update(choices=choices, value=[i for i in compare_ids or [] if i != run_id]), None)

    delete.click(on_delete, [run_pick, compare_pick, delete_asked],
                 [notice, run_pick, compare_pick, delete_asked])
    for other in (run_pick.change, start.click, stop.click, resume.click):  # anything else in between: ask again
        other(lambda: None, None, delete_asked)

    def on_focus():
        """Refresh the pickers whenever the tab is opened: other tabs and other people add to them."""
        datasets = gr.update(choices=dataset_choices(studio))
        return (datasets, gr.update(choices=model_choices(studio)), gr.update(choices=run_choices(studio)),
                gr.update(choices=run_choices(studio)), datasets, gr.update(choices=start_choices(studio)))

    return on_focus, [dataset, model, run_pick, compare_pick, eval_data, start_from]


def damaged_lines(run: Run, t: Translator = english) -> list[str]:
    """Say so when a run file had lines that could not be read (a full disk, a hand edit): they were skipped."""
    return [t("⚠️ {count} damaged lines in {file} were skipped.", count=rows.damaged, file=name)
            for name, rows in (("metrics.jsonl", run.metrics()), ("gpu.jsonl", run.gpu_samples())) if rows.damaged]


def charts_empty():
    return (_frame([], step=int, loss=float, series=str), _frame([], step=int, learning_rate=float),
            _frame([], seconds=float, GB=float, device=str), _frame([], step=int, margin=float, series=str),
            _frame([], step=int, share=float, series=str))
