"""What goes wrong with a user's data: a whole file that cannot be used, or one row that is skipped."""
from __future__ import annotations

from dataclasses import asdict, dataclass


class DatasetError(ValueError):
    """A file, a setting or a row that cannot be used; the message names it and says how to fix it."""

    columns: list[str] | None = None  # the file's columns, when it was read but its examples were not found


class MappingError(DatasetError):
    """The columns cannot be matched to the fields of a format. The message names the columns; how to map
    them by hand (the tab's column boxes, the CLI's --map) is for the caller to add."""


@dataclass(frozen=True)
class Problem:
    """One skipped row. Rows are numbered as the user sees them: the line of a JSONL or text file, the
    row of a CSV/TSV file as a spreadsheet shows it (the header is row 1, so the first example is row 2; a
    cell that spans lines is one row), the position (from 1) in a JSON array or a Parquet file."""

    row: int
    reason: str

    def to_json(self) -> dict:
        return asdict(self)
