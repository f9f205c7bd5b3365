"""The workspace folder: where datasets, models, runs and exports live, and how files in it are written."""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "workspace"

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class UnsafePath(ValueError):
    """A name or path that would leave its workspace folder."""


def safe_name(name: str, fallback: str = "item") -> str:
    """A folder name made only of letters, digits, '.', '_' and '-', never '.' or '..'."""
    cleaned = _SAFE_NAME.sub("-", name.strip()).strip(".-")[:80]
    return cleaned or fallback


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
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def append_jsonl(path: Path, record: dict) -> None:
    """One line per record; a single write of a short line is atomic enough for a tailing reader."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """Every complete line; a line still being written is skipped."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return rows
