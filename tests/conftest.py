"""Shared test fixtures. Tests never reach the network and make their own small data."""
import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from studio.workspace import Workspace  # noqa: E402

# The embedded model is converted once and kept between test sessions (it takes about a minute).
MODEL_CACHE = REPO / ".cache" / "test-workspace"


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    from studio.models import resolve_model

    return Path(resolve_model("embedded", Workspace.at(MODEL_CACHE), progress=lambda _m: None))


@pytest.fixture(scope="session")
def tokenizer(embedded_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir)


@pytest.fixture()
def workspace(tmp_path) -> Workspace:
    return Workspace.at(tmp_path / "workspace")
