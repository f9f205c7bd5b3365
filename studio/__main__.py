"""The command line: python -m studio {data,train,runs,eval,chat,merge,export} ... (each area adds its commands)."""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> the module whose register(subparsers) adds it and sets args.func(args) -> exit code
COMMANDS = {"data": "studio.data.cli", "train": "studio.training.cli", "runs": "studio.runs_cli",
            "eval": "studio.evaluation.cli", "chat": "studio.inference.cli", "merge": "studio.export.cli",
            "export": "studio.export.cli"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command's module is imported, so a training child starts fast."""
    parser = argparse.ArgumentParser(prog="python -m studio", description="LoRA Studio from the command line.")
    parser.add_argument("--workspace", help="the workspace folder (default: ./workspace)")
    commands = parser.add_subparsers(dest="command", required=True)
    # a module adds all its commands at once: each is registered once, however many commands it has
    for module in dict.fromkeys(m for command, m in COMMANDS.items() if only in (None, command)):
        importlib.import_module(module).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), None)
    args = build_parser(command).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
