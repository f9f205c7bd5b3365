"""The command line: python -m studio {data,train,chat,merge} ... (each area adds its own commands)."""
from __future__ import annotations

import argparse
import importlib
import sys

# Each of these packages has a cli.py with register(subparsers); a command sets args.func(args) -> exit code.
AREAS = ("data", "training", "inference", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studio", description="LoRA Studio from the command line.")
    parser.add_argument("--workspace", help="the workspace folder (default: ./workspace)")
    commands = parser.add_subparsers(dest="command", required=True)
    for area in AREAS:
        importlib.import_module(f"studio.{area}.cli").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
