"""The dataset layer: read a file, detect its shape, normalise rows into conversations (or preference pairs),
tokenize them with the model's chat template and report on the result; save and load datasets in the workspace."""
from .errors import DatasetError, Problem
from .readers import Table, read_table
from .records import is_pairs, normalise
from .report import DatasetReport, count_tokens, inspect_file
from .shapes import FIELDS, FORMATS, detect_format
from .stats import histogram, split, token_stats, training_count
from .store import list_datasets, load_records, save_dataset
from .templating import pair_conversations, pair_segments, render_segments, tokenize_pair, tokenize_record

__all__ = [
    "DatasetError", "Problem", "Table", "read_table", "normalise", "DatasetReport", "count_tokens",
    "inspect_file", "FIELDS", "FORMATS", "detect_format", "histogram", "split", "token_stats", "training_count",
    "list_datasets", "load_records", "save_dataset", "render_segments", "tokenize_record", "pair_conversations",
    "pair_segments", "tokenize_pair", "is_pairs",
]
