"""The model card (README.md) of an export, a merged model or a GGUF file: what it is, how it was trained, how it
was checked, how to run it."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..evaluation import read_card
from ..models import EMBEDDED, EMBEDDED_LABEL, EMBEDDED_NAME
from ..runs import Run
from ..workspace import Workspace, write_atomic
from .dataset import dataset_report
from .gguf_check import GgufCheck
from .verify import MergeCheck

CURVES = "curves.png"
CARD_EXAMPLES = 3  # answers quoted from the report card
SOURCES = {"held_out": "held-out examples the run never trained on", "training": "training examples (none were held out)",
           "other": "examples of other data"}

_SETTINGS = (  # (TrainConfig field, how the card names it)
    ("preset", "Preset"),
    ("method", "Method (sft: supervised; dpo: preference pairs)"),
    ("quantization", "Base weights during training"),
    ("lora_r", "LoRA rank (r)"),
    ("lora_alpha", "LoRA alpha"),
    ("lora_dropout", "LoRA dropout"),
    ("target_modules", "Adapted layers"),
    ("learning_rate", "Learning rate"),
    ("epochs", "Epochs"),
    ("max_steps", "Max steps (-1: set by epochs)"),
    ("batch_size", "Batch size"),
    ("grad_accum", "Gradient accumulation"),
    ("max_length", "Max length (tokens)"),
    ("lr_scheduler", "Learning-rate schedule"),
    ("warmup_ratio", "Warm-up ratio"),
    ("optimizer", "Optimizer"),
    ("seed", "Seed"),
)

_USAGE = '''```python
from transformers import AutoModelForCausalLM, AutoTokenizer

path = "path/to/this/folder"  # the unzipped folder that holds this README
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype="auto", device_map="auto")  # on the GPU if there is one

messages = [{"role": "user", "content": "Hello! What can you do?"}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                       return_tensors="pt", return_dict=True).to(model.device)
output = model.generate(**inputs, max_new_tokens=100)
print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```'''


def write_card(folder: Path, run: Run, workspace: Workspace, check: MergeCheck, base_dtype: str) -> Path:
    """Write README.md into the merged model folder (copying the run's curves beside it) and return its path.
    base_dtype: the dtype the base model is stored in."""
    return _write(folder, run, lambda files: render_card(run, workspace, check, base_dtype, files))


def write_gguf_card(folder: Path, run: Run, workspace: Workspace, check: GgufCheck, gguf_name: str,
                    system: str | None) -> Path:
    """Write README.md beside a GGUF file and its Modelfile (with the run's curves) and return its path.
    system: the system prompt the Modelfile sets, if any."""
    return _write(folder, run, lambda files: render_gguf_card(run, workspace, check, gguf_name, system, files))


def _write(folder: Path, run: Run, render) -> Path:
    """README.md, rendered by render(files) with the names of every file the folder will hold."""
    folder = Path(folder)
    if run.curves_path.exists():
        shutil.copyfile(run.curves_path, folder / CURVES)
    path = folder / "README.md"
    write_atomic(path, render(sorted({p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
                                     | {path.name})))
    return path


def render_card(run: Run, workspace: Workspace, check: MergeCheck, base_dtype: str, files: list[str]) -> str:
    config = run.config
    base = _base_label(config.model)
    title = run.status().get("name") or run.id
    lines = []
    if _is_hub_id(config.model):
        lines += ["---", f"base_model: {config.model}", "library_name: transformers",
                  "tags: [lora, merged, lora-studio]", "---", ""]
    lines += [
        f"# {title}: {base} fine-tuned with LoRA",
        "",
        f"This is **{base}** with a LoRA adapter (run `{run.id}`, trained in LoRA Studio) merged into its "
        "weights. It is a standalone model: it loads like any transformers model and needs no peft.",
        "",
    ]
    if config.quantization in ("4bit", "8bit"):
        lines += [f"The adapter was trained on the {config.quantization[0]}-bit quantised base (QLoRA) and merged "
                  "into the base's unquantised weights: the usual way to export such an adapter, since merging into "
                  f"{config.quantization[0]}-bit weights would round most of it away.", ""]
    if check.dtype == base_dtype:
        lines += [f"The weights are in {check.dtype}, as the base model's are.", ""]
    else:
        lines += [f"The weights are in {check.dtype}, 16 bits each; the base model is stored in {base_dtype}.", ""]
    lines += _how_it_was_trained(run, workspace, files)
    lines += [
        "", "## Merge check", "",
        f"The merged model and base + adapter read the same {_texts(check)} ({check.positions} token positions, "
        f"in {check.dtype}):", "",
        "| measure | value |", "| --- | --- |",
        f"| Largest logit difference, merged vs base + adapter | {check.merge_diff:.3g} |",
        f"| Largest logit change the adapter makes (base vs base + adapter) | {check.adapter_effect:.3g} |",
        f"| Same next token, merged vs base + adapter | {check.token_agreement:.1%} |",
        "", f"**{check.verdict}**", "",
        "## How to use it", "",
        "With Python and the `transformers` library (`pip install transformers accelerate torch`):", "",
        _USAGE, "",
        "## Files", "",
    ]
    lines += [f"- `{name}`" for name in files]
    return "\n".join(lines) + "\n"


def _how_it_was_trained(run: Run, workspace: Workspace, files: list[str]) -> list[str]:
    """The data, the settings, the losses and the report card: the same in every export's card."""
    config = run.config
    lines = ["## Training data", "", f"- Dataset: `{config.dataset}`" + _dataset_size(workspace, config.dataset),
             "", "## Settings", "", "| setting | value |", "| --- | --- |"]
    for name, label in _SETTINGS:
        value = getattr(config, name)
        lines.append(f"| {label} | {', '.join(value) if isinstance(value, list) else value} |")
    if config.method == "dpo":
        lines.append(f"| DPO beta | {config.beta} |")
        if config.start_from:
            lines.append(f"| Went on from the adapter of | {config.start_from} |")
    lines += ["", "## Results", ""] + _losses(run.metrics())
    if CURVES in files:
        lines += ["", f"![Training curves: loss, learning rate and memory]({CURVES})"]
    return lines + ["", "## Did it work? The report card", ""] + _report_card(read_card(run))


def render_gguf_card(run: Run, workspace: Workspace, check: GgufCheck, gguf_name: str, system: str | None,
                     files: list[str]) -> str:
    config = run.config
    base = _base_label(config.model)
    title = run.status().get("name") or run.id
    lines = []
    if _is_hub_id(config.model):
        lines += ["---", f"base_model: {config.model}", "tags: [lora, gguf, llama.cpp, lora-studio]", "---", ""]
    quantised = check.quant not in ("f16", "bf16")
    lines += [
        f"# {title}: {base} fine-tuned with LoRA, as GGUF ({check.quant})", "",
        f"This is **{base}** with a LoRA adapter (run `{run.id}`, trained in LoRA Studio) merged into its weights, "
        "converted to GGUF by llama.cpp's own converter" + (f" and quantised to {check.quant} by llama.cpp's "
                                                            "quantizer" if quantised else f", in {check.quant}")
        + ". It runs in llama.cpp, Ollama and LM Studio.", ""]
    if check.quant == "q4_k_m":
        lines += ["llama.cpp picks a type per tensor: a tensor whose rows do not split into the 256-value blocks of "
                  "the k-quants (as in models 576 wide) gets a close type that fits, such as q5_0, so the file can be "
                  "larger than q4_k_m's name suggests.", ""]
    lines += [
        "## Checked by llama.cpp", "",
        f"Before this file was offered, llama.cpp loaded it and read {check.positions} token positions of validation "
        "text beside the merged model it was made from:", "",
        "| measure | value |", "| --- | --- |",
        f"| Same next token as the merged model | {check.agreement:.1%} (at least {check.floor:.0%} is asked of "
        f"{check.quant}) |",
        f"| llama.cpp splits text into the model tokenizer's tokens | {_yes(check.same_tokens)} |",
        f"| The chat template stored in the file lays a conversation out as the model's own | "
        f"{_yes(check.chat_template, none='the model has no chat template')} |",
        "| The Modelfile's TEMPLATE does too, as Ollama tokenizes it | " + (
            "yes" if check.modelfile_template else "no TEMPLATE could say it, so the Modelfile has none: Ollama "
            "takes the chat template stored in the file") + " |",
        "", f"**{check.verdict}**", "",
        "A held-out prompt, answered by both (greedy decoding):", "",
        "| prompt | merged model | this file, in llama.cpp |", "| --- | --- | --- |",
        "| " + " | ".join(_cell(t) for t in (check.prompt, check.merged_answer, check.answer)) + " |", "",
        "## How to run it", "", "### Ollama", "",
              "In this folder (the `Modelfile` names the file, the chat template and the tokens that end an answer"
              + (", and sets the system prompt the training data used" if system else "") + "):", "",
              "```bash", "ollama create my-model -f Modelfile", "ollama run my-model", "```", "",
              "### LM Studio", "",
              f"`lms import {gguf_name}` (or copy the file into a folder under LM Studio's models folder, "
              "`~/.lmstudio/models/<publisher>/<name>/`), then pick it in the Chat tab. LM Studio reads the chat "
              "template stored in the file" + (", but not the Modelfile: set the same system prompt in its chat "
                                               "settings" if system else "") + ".", "",
              "### llama.cpp", "",
              "```bash", f"llama-cli -m {gguf_name} -cnv    # a chat in the terminal, with the stored template",
              f"llama-server -m {gguf_name} --jinja    # an OpenAI-compatible server on port 8080", "```", "",
              "With Python, `pip install llama-cpp-python`:", "",
              "```python", "from llama_cpp import Llama", "",
              f'llm = Llama("{gguf_name}", n_ctx=4096)',
              'reply = llm.create_chat_completion([{"role": "user", "content": "Hello! What can you do?"}])',
              'print(reply["choices"][0]["message"]["content"])', "```", ""]
    lines += _how_it_was_trained(run, workspace, files)
    lines += ["", "## Files", ""] + [f"- `{name}`" for name in files]
    return "\n".join(lines) + "\n"


def _yes(value: bool | None, none: str = "") -> str:
    return none if value is None else "yes" if value else "**no**"


def _texts(check: MergeCheck) -> str:
    examples = f" and the first {check.dataset_examples} examples of the dataset" if check.dataset_examples else ""
    return f"{check.prompts} fixed prompts{examples}"


def _base_label(spec: str) -> str:
    if spec in (EMBEDDED, EMBEDDED_NAME, EMBEDDED_LABEL):
        return EMBEDDED_NAME
    return Path(spec).name if Path(spec).expanduser().exists() else spec


def _is_hub_id(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith(("/", ".", "~")) and not Path(spec).exists()


def _dataset_size(workspace: Workspace, dataset: str) -> str:
    """The row counts from the saved dataset's report, when the dataset is saved in the workspace."""
    report = dataset_report(workspace, dataset)
    rows, valid, invalid = (report.get(k) for k in ("rows", "valid", "invalid"))
    if not isinstance(valid, int):
        return ""
    text = f": {valid:,} examples"
    if isinstance(rows, int) and isinstance(invalid, int) and invalid:
        text += f" ({rows:,} rows, {invalid:,} skipped as unusable)"
    return text


def _report_card(card: dict | None) -> list[str]:
    """The run's report card (report.json): its verdict, figures and a few answers side by side."""
    if not card:
        return ["No report card was made for this run (the Train tab's Evaluate makes one)."]
    if card.get("kind") == "pairs":
        return _pair_card(card)
    o = card["overall"]
    lines = [f"**{card['verdict_text']}** {card['next_step']}", "",
             f"On {o['examples']} {SOURCES[card['source']]}, base model and this model answered the same prompts:", "",
             "| measure | base | this model |", "| --- | --- | --- |",
             f"| Closeness to the expected answers (chrF, 0-100) | {o['base_chrf']:.1f} | {o['adapter_chrf']:.1f} |",
             f"| Mean log-likelihood per token of the expected answers | {-o['base_nll']:.3f} | {-o['adapter_nll']:.3f} |",
             "", f"The expected answers are {o['likelihood_gain']:.2f}x as likely per token as with the base model.",
             "", "| prompt | expected | base | this model |", "| --- | --- | --- | --- |"]
    for example in card["examples"][:CARD_EXAMPLES]:
        prompt = example["prompt"] if isinstance(example["prompt"], str) else example["prompt"][-1]["content"]
        lines.append("| " + " | ".join(_cell(t) for t in (prompt, example["expected"], example["base"],
                                                           example["adapter"])) + " |")
    return lines


def _pair_card(card: dict) -> list[str]:
    """A report card of preference pairs: how often each model prefers the chosen answer, and answers side by side."""
    o = card["overall"]
    lines = [f"**{card['verdict_text']}** {card['next_step']}", "",
             f"On {o['examples']} {SOURCES[card['source']].replace('examples', 'preference pairs')}, base model and "
             "this model scored the chosen and the rejected answer:", "",
             "| measure | base | this model |", "| --- | --- | --- |",
             f"| Prefers the chosen answer | {o['base_prefers_chosen']:.0%} | {o['adapter_prefers_chosen']:.0%} |",
             f"| Margin: log-likelihood per token, chosen minus rejected | {o['base_margin']:.3f} | "
             f"{o['adapter_margin']:.3f} |",
             "", "| prompt | chosen | rejected | base | this model |", "| --- | --- | --- | --- | --- |"]
    for example in card["examples"][:CARD_EXAMPLES]:
        lines.append("| " + " | ".join(_cell(t) for t in (example["prompt"][-1]["content"], example["chosen"],
                                                           example["rejected"], example["base"],
                                                           example["adapter"])) + " |")
    return lines


def _cell(text: str) -> str:
    """Text for one cell of a Markdown table: on one line, its bars escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _losses(metrics: list[dict]) -> list[str]:
    train = [m for m in metrics if isinstance(m.get("loss"), (int, float))]
    evals = [m for m in metrics if isinstance(m.get("eval_loss"), (int, float))]
    lines = []
    if train:
        lines.append(f"- Final training loss: {train[-1]['loss']:.4g} (step {train[-1].get('step', '?')})")
    if evals:
        lines.append(f"- Final validation loss: {evals[-1]['eval_loss']:.4g} (step {evals[-1].get('step', '?')})")
    return lines or ["- No losses were logged for this run."]
