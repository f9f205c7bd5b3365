"""python -m studio data {inspect,save,list}: the dataset layer from the command line."""
from __future__ import annotations

import argparse
import json
import sys

from ..models import EMBEDDED, ModelNotFound, load_tokenizer, resolve_model
from ..workspace import Workspace
from .errors import DatasetError, MappingError
from .report import DatasetReport, count_tokens, inspect_file
from .shapes import FIELDS, FORMATS, IGNORE
from .store import list_datasets, save_dataset

NO_MODEL = "none"


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect, save and list datasets")
    commands = data.add_subparsers(dest="data_command", required=True)

    inspect = commands.add_parser("inspect", help="check a data file and count its tokens")
    _add_file_options(inspect)
    inspect.add_argument("--json", action="store_true", help="print the report as one JSON object")
    inspect.set_defaults(func=inspect_command)

    save = commands.add_parser("save", help="check a data file and save it into the workspace")
    _add_file_options(save)
    save.add_argument("--name", required=True, help="the dataset's name in the workspace")
    save.add_argument("--overwrite", action="store_true", help="replace a saved dataset of the same name")
    save.set_defaults(func=save_command)

    listing = commands.add_parser("list", help="list the saved datasets")
    listing.set_defaults(func=list_command)


def _add_file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="CSV, TSV, JSON, JSONL, Parquet or text file")
    parser.add_argument("--model", default=EMBEDDED,
                        help=f"whose tokenizer and chat template to use (default: the embedded model; "
                             f"'{NO_MODEL}' skips token counts)")
    parser.add_argument("--map", action="append", default=[], metavar="COLUMN=FIELD",
                        help=f"say which field a column holds; fields: {', '.join(FIELDS)}, or {IGNORE}")
    parser.add_argument("--format", choices=FORMATS, help="force the format instead of detecting it")
    parser.add_argument("--max-length", type=int, default=1024, help="the training length limit in tokens")


def inspect_command(args) -> int:
    try:
        report = _inspect(args)
    except (DatasetError, ModelNotFound) as e:
        return _fail(e)
    print(json.dumps(report.to_json(), ensure_ascii=False) if args.json else summary(report))
    return 0


def save_command(args) -> int:
    try:
        report = _inspect(args)
        # At the command line the workspace's files are the operator's own: an administrator's replace.
        folder = save_dataset(_workspace(args), args.name, args.file, report, overwrite=args.overwrite, admin=True)
    except (DatasetError, ModelNotFound) as e:
        return _fail(e)
    print(summary(report))
    print(f"Saved {report.valid} records as '{folder.name}' in {folder}")
    return 0


def list_command(args) -> int:
    for item in list_datasets(_workspace(args)):
        print(f"{item['name']}: {item['format']}, {item['valid']} records (from {item['file']})")
    return 0


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """--map COLUMN=FIELD arguments as {column: field}; the last '=' splits, so a column name may hold one."""
    mapping = {}
    for pair in pairs:
        column, sep, field = pair.rpartition("=")
        if not sep or not column.strip() or not field.strip():
            raise DatasetError(f"--map {pair}: write it as COLUMN=FIELD, e.g. --map question=instruction.")
        mapping[column.strip()] = field.strip()
    return mapping


def summary(report: DatasetReport) -> str:
    """A few lines for a person: what was found, what was skipped and why, how long the examples are."""
    mapped = ", ".join(f"{column} -> {field}" for column, field in report.mapping.items())
    encoding = f", {report.encoding}" if report.encoding else ""
    lines = [f"File: {report.file} ({report.kind}{encoding})",
             f"Format: {report.format} ({mapped})",
             f"Rows: {report.rows} read, {report.valid} valid, {report.invalid} skipped"]
    lines += [f"  row {p.row}: {p.reason}" for p in report.problems[:50]]
    if report.invalid > 50:
        lines.append(f"  ... and {report.invalid - 50} more (use --json for all)")
    tokens = report.tokens
    if tokens and tokens["count"]:
        lines.append(f"Tokens ({report.template}): min {tokens['min']}, median {tokens['median']}, "
                     f"p95 {tokens['p95']}, max {tokens['max']}; {tokens['over_limit']} over the limit of "
                     f"{report.max_length}")
        if tokens["answers_cut_off"]:
            lines.append(f"  {tokens['answers_cut_off']} records have their whole answer past the limit and teach "
                         "nothing: raise --max-length or shorten them")
    return "\n".join(lines)


def _inspect(args) -> DatasetReport:
    # The file first: a file that cannot be used is reported before a model is loaded.
    try:
        report = inspect_file(args.file, mapping=parse_mapping(args.map) or None, max_length=args.max_length,
                              fmt=args.format)
    except MappingError as e:
        raise MappingError(f"{e} Say which column holds which field with --map COLUMN=FIELD, e.g. --map "
                           f"question=instruction --map answer=output. Fields: {', '.join(FIELDS)}, or {IGNORE}.") \
            from None
    if args.model.strip().lower() != NO_MODEL:
        path = resolve_model(args.model, _workspace(args), progress=lambda m: print(m, file=sys.stderr))
        try:
            tokenizer = load_tokenizer(path)
        except (OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ModelNotFound(f"Could not load the tokenizer of {args.model} ({first}).") from None
        count_tokens(report, tokenizer)
    return report


def _workspace(args) -> Workspace:
    return Workspace.at(getattr(args, "workspace", None))


def _fail(error: Exception) -> int:
    print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
    return 2
