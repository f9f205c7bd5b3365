"""The workspace folder: where datasets, models, runs and exports live, and how files in it are written."""
from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "workspace"

# Everything but the letters and digits of any language (\w: str.isalnum, and '_'), '.' and '-': path separators,
# spaces, punctuation, control and direction characters.
_UNSAFE = re.compile(r"[^\w.-]+")
# A Linux folder name holds 255 bytes; a dataset being replaced has a sibling named twice over
# (.<name>.old-.<name>.<random>.partial), and a Chinese character takes 3 bytes.
NAME_BYTES = 80


class UnsafePath(ValueError):
    """A name or path that would leave its workspace folder."""


def safe_name(name: str, fallback: str = "item") -> str:
    """A folder name that keeps the letters and digits of any language ('客服語氣' stays '客服語氣': Linux keeps
    names as UTF-8 bytes), '_', '.' and '-'; any other run of characters becomes one '-'. It never starts or
    ends with '.' or '-' (so it is never '..' or hidden) and is at most NAME_BYTES bytes; fallback when
    nothing is left."""
    # NFC: an 'é' typed as e + accent (as macOS names files) is kept as the one letter, not cut to 'e-'.
    cleaned = _UNSAFE.sub("-", unicodedata.normalize("NFC", name.strip()))
    return cleaned.encode()[:NAME_BYTES].decode(errors="ignore").strip(".-") or fallback


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike | None = None) -> "Workspace":
        ws = cls(Path(root or os.environ.get("STUDIO_WORKSPACE") or DEFAULT_ROOT).resolve())
        for sub in (ws.datasets, ws.models, ws.runs, ws.exports):
            sub.mkdir(parents=True, exist_ok=True)
        return ws

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    def inside(self, path: str | os.PathLike) -> Path:
        """The resolved path, or UnsafePath when it points outside the workspace."""
        resolved = Path(path).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise UnsafePath(f"{path} is outside the workspace {self.root}")
        return resolved


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that a reader (or a crash) never sees it half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):  # ValueError: cut short, not JSON, or not UTF-8
        return default


def append_jsonl(path: Path, record: dict) -> None:
    """One line per record; a single write of a short line is atomic enough for a tailing reader."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


class Rows(list):
    """The records of a .jsonl file, and how many of its lines were damaged (skipped): a list for every reader,
    the count for whoever tells people that part of the record is missing."""

    def __init__(self, rows=(), damaged: int = 0):
        super().__init__(rows)
        self.damaged = damaged


def read_jsonl(path: Path) -> Rows:
    """Every complete line of a file that only grows (metrics.jsonl, gpu.jsonl: a line a second per GPU,
    100,000 lines after 4 hours on 8 GPUs, read again on every 2-second refresh of every page watching the
    run). The rows read before are kept and only the lines added since are parsed; a line still being
    written waits for the next read. A file replaced (a resumed run rewrites metrics.jsonl), cut short, or
    changed in the last bytes parsed is read from its start. A damaged line (not JSON, not UTF-8, not a
    record) is skipped and counted."""
    try:
        with open(path, "rb") as f:
            inode = os.fstat(f.fileno()).st_ino
            with _READ_LOCK:
                kept = _READ.get(path)
            offset, tail, rows = (kept[1], kept[2], kept[3]) if kept and kept[0] == inode else (0, b"", Rows())
            f.seek(offset - len(tail))
            if f.read(len(tail)) != tail:  # not what was parsed before: rewritten
                offset, tail, rows = 0, b"", Rows()
                f.seek(0)
            added = f.read()
    except FileNotFoundError:
        return Rows()
    complete = added.rfind(b"\n") + 1
    parsed = [_json_or_none(line) for line in added[:complete].splitlines() if line.strip()]
    rows = Rows(rows + [row for row in parsed if row is not None], rows.damaged + parsed.count(None))
    with _READ_LOCK:
        _READ[path] = (inode, offset + complete, (tail + added[:complete])[-64:], rows)
        _READ.move_to_end(path)
        while len(_READ) > _READ_KEPT:
            _READ.popitem(last=False)
    return Rows(rows, rows.damaged)


# path: (inode, bytes parsed, the last of those bytes, rows), most recently read last
_READ: OrderedDict[Path, tuple[int, int, bytes, Rows]] = OrderedDict()
_READ_KEPT = 8  # a 4-hour 8-GPU gpu.jsonl is 95 MB of rows (tracemalloc); metrics files are small
_READ_LOCK = threading.Lock()


def _json_or_none(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8: a damaged line costs that line only
        return None
    return record if isinstance(record, dict) else None  # every reader looks keys up in a record
