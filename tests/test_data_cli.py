"""python -m studio data ...: the JSON report, the human summary and the exit status on bad input."""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio.data import cli

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def run(embedded_model_dir, tmp_path):
    """Run a data command in-process, with the workspace that already holds the converted embedded model."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace")
    cli.register(parser.add_subparsers(dest="command", required=True))
    model_workspace = str(embedded_model_dir.parent.parent)

    def run_command(*argv, workspace=model_workspace):
        args = parser.parse_args(["--workspace", workspace, "data", *map(str, argv)])
        return args.func(args)

    return run_command


def test_inspect_json_prints_one_report_object(run, capsys):
    assert run("inspect", DATA / "alpaca.json", "--json", "--max-length", "64") == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert out.count("\n") == 1
    assert {"file", "format", "rows", "valid", "invalid", "problems", "mapping", "columns", "tokens", "histogram",
            "template"} <= set(report)
    assert (report["file"], report["format"], report["rows"], report["valid"], report["invalid"]) == (
        "alpaca.json", "alpaca", 3, 3, 0)
    assert report["mapping"] == {"instruction": "instruction", "input": "input", "output": "output"}
    assert set(report["tokens"]) >= {"min", "median", "p95", "max", "over_limit"}
    assert 0 < report["tokens"]["min"] <= report["tokens"]["max"] and report["tokens"]["over_limit"] == 0
    assert sum(report["histogram"]["counts"]) == 3
    assert report["template"] == "the chat template of SmolLM2-135M-Instruct"


def test_inspect_with_map_format_and_no_model(run, capsys, tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("q,a,notes\nWhy?,Because.,x\n", encoding="utf-8")
    argv = ["inspect", path, "--json", "--model", "none", "--map", "q=prompt", "--map", "a=completion"]
    assert run(*argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["format"], report["mapping"], report["tokens"], report["template"]) == (
        "completion", {"q": "prompt", "a": "completion"}, None, None)
    assert run("inspect", path, "--json", "--model", "none", "--map", "notes=text", "--format", "text") == 0
    assert json.loads(capsys.readouterr().out)["mapping"] == {"notes": "text"}


def test_human_summary_lists_each_problem(run, capsys):
    assert run("inspect", DATA / "bad_alpaca.csv") == 0
    out = capsys.readouterr().out
    assert "Format: alpaca (instruction -> instruction, input -> input, output -> output)" in out
    assert "Rows: 5 read, 1 valid, 4 skipped" in out
    assert "  row 3: 'output' is empty" in out and "  row 6: missing field 'output'" in out
    assert "Tokens (the chat template of SmolLM2-135M-Instruct): min " in out


@pytest.mark.parametrize("argv, named", [
    (["inspect", DATA / "missing.csv", "--model", "none"], "missing.csv: no such file"),
    (["inspect", DATA / "pirate.png", "--model", "none"], "pirate.png"),
    (["inspect", DATA / "alpaca.json", "--model", "none", "--map", "instruction"], "--map instruction: write it"),
    (["inspect", DATA / "alpaca.json", "--model", "no/such-model"], "Could not get 'no/such-model'"),
    (["inspect", DATA / "alpaca.json", "--model", "none", "--map", "output=ignore"],
     "Could not tell which columns hold the examples (columns: instruction, input, output). Say which column holds "
     "which field with --map COLUMN=FIELD"),
])
def test_unusable_input_exits_2_with_one_line(run, capsys, tmp_path, argv, named):
    if argv[1].name == "pirate.png":
        argv = [argv[0], tmp_path / "pirate.png", *argv[2:]]
        argv[1].write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert run(*argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ") and named in captured.err


def test_save_then_list(run, capsys, tmp_path):
    workspace = str(tmp_path / "ws")
    assert run("save", DATA / "messages.jsonl", "--name", "pirates", "--model", "none", workspace=workspace) == 0
    assert "Saved 2 records as 'pirates'" in capsys.readouterr().out
    assert run("save", DATA / "messages.jsonl", "--name", "pirates", "--model", "none", workspace=workspace) == 2
    assert "already exists" in capsys.readouterr().err
    assert run("list", workspace=workspace) == 0
    assert capsys.readouterr().out == "pirates: messages, 2 records (from messages.jsonl)\n"


def test_python_dash_m_studio(tmp_path):
    from studio.__main__ import COMMANDS

    # --help imports every command's module: one that fails to import fails here, never skips the test
    done = subprocess.run([sys.executable, "-m", "studio", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "{" + ",".join(COMMANDS) + "}" in done.stdout
    # --model none: loading a tokenizer in a fresh process is slow, and the in-process tests cover it
    base = [sys.executable, "-m", "studio", "--workspace", str(tmp_path / "ws"), "data", "inspect", "--model", "none"]
    done = subprocess.run([*base, str(DATA / "sharegpt.json"), "--json"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["format"] == "sharegpt"
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    done = subprocess.run([*base, str(empty)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"error: {empty.name} is empty. Pick a file that holds your examples.\n"
