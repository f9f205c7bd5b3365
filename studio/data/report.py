"""Inspect a data file end to end: read, detect the shape, normalise, tokenize, and report on it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..messages import Message
from .errors import DatasetError, Problem
from .readers import read_table
from .records import normalise_numbered
from .shapes import detect_format
from .stats import histogram, token_stats
from .templating import describe_template, render_sides, tokenize_many

PROBLEMS_SHOWN = 1000  # report.json stays readable for a file where every row is broken
HISTOGRAM_BINS = 20
TOKENIZE_BATCH = 512  # texts per tokenizer call: fast, and memory stays small


@dataclass
class DatasetReport:
    file: str
    kind: str
    encoding: str | None
    format: str
    mapping: dict[str, str]
    columns: list[str]
    problems: list[Problem]
    max_length: int
    records: list[dict] = field(repr=False)  # the valid, normalised records (kept out of the JSON)
    row_numbers: list[int] = field(repr=False)  # the row each record came from
    # tokens per record, before any cut (a preference pair: its longer side, prompt and answer)
    lengths: list[int] = field(default_factory=list, repr=False)
    template: str | None = None
    # per record, the index of its first trained token (None: it has none), so that what a cut at any max
    # length does can be worked out without tokenizing again
    first_trained: list[int | None] = field(default_factory=list, repr=False)

    @property
    def valid(self) -> int:
        return len(self.records)

    @property
    def invalid(self) -> int:
        return len(self.problems)

    @property
    def rows(self) -> int:
        return self.valid + self.invalid

    @property
    def answers_cut_off(self) -> int:
        """Records whose trained tokens all lie past max_length, so that they teach nothing."""
        return sum(1 for first in self.first_trained if first is None or first >= self.max_length)

    def with_max_length(self, max_length: int) -> DatasetReport:
        """The same report counted against another max length (token lengths do not depend on it)."""
        return replace(self, max_length=max_length)

    @property
    def tokens(self) -> dict | None:
        if self.template is None:
            return None
        return {**token_stats(self.lengths, self.max_length), "answers_cut_off": self.answers_cut_off}

    def to_json(self) -> dict:
        return {
            "file": self.file, "kind": self.kind, "encoding": self.encoding, "format": self.format,
            "rows": self.rows, "valid": self.valid, "invalid": self.invalid,
            "problems": [p.to_json() for p in self.problems[:PROBLEMS_SHOWN]],
            "problems_not_shown": max(0, self.invalid - PROBLEMS_SHOWN),
            "mapping": self.mapping, "columns": self.columns, "max_length": self.max_length,
            "tokens": self.tokens,
            "histogram": histogram(self.lengths, HISTOGRAM_BINS) if self.template is not None else None,
            "template": self.template,
        }


def inspect_file(path: str | Path, tokenizer=None, mapping: dict[str, str] | None = None, max_length: int = 1024,
                 fmt: str | None = None) -> DatasetReport:
    """Read and check a data file. mapping overrides the guessed {column: field}; fmt forces the format.
    With a tokenizer every valid record is rendered and counted, and one the template refuses is skipped."""
    path = Path(path)
    if not isinstance(max_length, int) or max_length < 1:
        raise DatasetError(Message("The maximum length must be a whole number of tokens above 0 (got {value}).",
                                   value=max_length))
    table = read_table(path)
    try:
        fmt, mapping = detect_format(table.columns, table.rows, mapping, fmt)
    except DatasetError as e:
        error = type(e)(Message("{file}: {error}", file=path.name, error=e.args[0]))
        error.columns = table.columns  # so that the mapping can be fixed without reading the file again
        raise error from None
    numbered, problems = normalise_numbered(table, fmt, mapping)
    report = DatasetReport(path.name, table.kind, table.encoding, fmt, mapping, table.columns, problems,
                           max_length, [r for _, r in numbered], [n for n, _ in numbered])
    if tokenizer is not None:
        count_tokens(report, tokenizer)
    return report


def count_tokens(report: DatasetReport, tokenizer) -> None:
    """Render and tokenize the report's records with a model's tokenizer: token statistics, the template
    used, and a problem for each record the template refuses, which then leaves the records."""
    report.lengths, report.first_trained = [], []
    rendered, records, rows = [], [], []
    for number, record in zip(report.row_numbers, report.records):
        try:
            rendered.append(render_sides(tokenizer, record))
        except DatasetError as e:
            report.problems.append(Problem(number, e.args[0]))
            continue
        records.append(record)
        rows.append(number)
    for start in range(0, len(rendered), TOKENIZE_BATCH):
        chunk = rendered[start:start + TOKENIZE_BATCH]
        tokenized = iter(tokenize_many(tokenizer, [side for sides in chunk for side in sides]))
        for sides in chunk:
            parts = [next(tokenized) for _ in sides]
            report.lengths.append(max(len(ids) for ids, _, _ in parts))
            report.first_trained.append(min((mask.index(1) for _, mask, _ in parts if 1 in mask), default=None))
    report.problems.sort(key=lambda p: p.row)
    report.records, report.row_numbers = records, rows
    report.template = describe_template(tokenizer, report.format) + (
        " (answers located by search: the template does not render conversations prefix by prefix)"
        if any(side.searched for sides in rendered for side in sides) else "")
