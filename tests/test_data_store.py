"""Saving datasets into the workspace, listing them and loading records for training."""
import json
import shutil
from pathlib import Path

import pytest

from studio.data import DatasetError, inspect_file, list_datasets, load_records, save_dataset

DATA = Path(__file__).parent / "data"


def test_save_and_load_round_trip(workspace):
    report = inspect_file(DATA / "alpaca.json")
    folder = save_dataset(workspace, "My French set", DATA / "alpaca.json", report, owner="alice")
    assert folder == workspace.datasets / "My-French-set"
    assert sorted(p.name for p in folder.iterdir()) == ["original.json", "records.jsonl", "report.json"]
    assert (folder / "original.json").read_bytes() == (DATA / "alpaca.json").read_bytes()
    lines = (folder / "records.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == report.records
    saved = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert saved["name"] == "My-French-set" and saved["valid"] == 3 and saved["format"] == "alpaca"
    assert saved["owner"] == "alice"

    records, report_json = load_records("My-French-set", workspace)
    assert records == report.records and report_json == saved
    assert load_records(str(folder), workspace)[0] == report.records
    assert list_datasets(workspace) == [{"name": "My-French-set", "path": str(folder), "owner": "alice",
                                         "file": "alpaca.json", "format": "alpaca", "rows": 3, "valid": 3,
                                         "invalid": 0, "tokens": None}]
    save_dataset(workspace, "unowned", DATA / "alpaca.json", report)  # e.g. from the command line
    assert [d["owner"] for d in list_datasets(workspace)] == ["alice", ""]


def test_existing_name_is_refused_unless_overwrite(workspace):
    first = save_dataset(workspace, "pets", DATA / "alpaca.json", inspect_file(DATA / "alpaca.json"))
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    other = inspect_file(DATA / "nested.json")
    with pytest.raises(DatasetError, match="A dataset called 'pets' already exists. Choose another name"):
        save_dataset(workspace, "pets", DATA / "nested.json", other)
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert save_dataset(workspace, "pets", DATA / "nested.json", other, overwrite=True) == first
    assert load_records("pets", workspace)[0] == other.records
    assert [p.name for p in workspace.datasets.iterdir()] == ["pets"]  # no staging or retired folders left


def test_only_the_owner_or_an_administrator_replaces_an_owned_dataset(workspace):
    report = inspect_file(DATA / "alpaca.json")
    save_dataset(workspace, "pets", DATA / "alpaca.json", report, owner="alice")
    with pytest.raises(DatasetError, match=r"^The dataset 'pets' belongs to alice; only they or an administrator "
                                           r"can change it\.$"):
        save_dataset(workspace, "pets", DATA / "alpaca.json", report, overwrite=True, owner="bob")
    assert list_datasets(workspace)[0]["owner"] == "alice"
    save_dataset(workspace, "pets", DATA / "alpaca.json", report, overwrite=True, owner="alice")
    save_dataset(workspace, "pets", DATA / "alpaca.json", report, overwrite=True, owner="carol", admin=True)
    assert list_datasets(workspace)[0]["owner"] == "carol"
    save_dataset(workspace, "loose", DATA / "alpaca.json", report)  # saved without an owner: anyone may replace it
    save_dataset(workspace, "loose", DATA / "alpaca.json", report, overwrite=True, owner="bob")
    assert [d["owner"] for d in list_datasets(workspace)] == ["bob", "carol"]


@pytest.mark.parametrize("name", ["../../etc", "/etc/passwd", "a/../../b"])
def test_traversal_shaped_names_stay_inside_the_datasets_folder(workspace, name):
    folder = save_dataset(workspace, name, DATA / "lines.txt", inspect_file(DATA / "lines.txt"))
    assert folder.parent == workspace.datasets
    assert not folder.name.startswith(".")
    assert (folder / "original.txt").exists()


@pytest.mark.parametrize("name,folder", [("客服語氣", "客服語氣"), ("客服数据", "客服数据"), ("客服 data v2", "客服-data-v2")])
def test_a_name_in_chinese_is_kept_and_found_again(workspace, name, folder):
    report = inspect_file(DATA / "lines.txt")
    assert save_dataset(workspace, name, DATA / "lines.txt", report) == workspace.datasets / folder
    assert [d["name"] for d in list_datasets(workspace)] == [folder]
    assert load_records(folder, workspace)[0] == report.records
    with pytest.raises(DatasetError, match="No dataset called"):  # a name, not a way out of the datasets folder
        load_records(f"../datasets/{folder}", workspace)


@pytest.mark.parametrize("name", ["!!!", "..", "", "../..", "\x00\n"])
def test_a_name_with_no_letter_or_digit_is_refused(workspace, name):
    # Not saved under a made-up name such as 'dataset' or 'data', where nobody would look for it.
    with pytest.raises(DatasetError, match=r"cannot be used as a dataset name\. Use letters or digits of any "
                                           r"language"):
        save_dataset(workspace, name, DATA / "lines.txt", inspect_file(DATA / "lines.txt"))
    assert list(workspace.datasets.iterdir()) == []


def test_unknown_upload_extension_is_stored_under_its_kind(workspace, tmp_path):
    upload = tmp_path / "upload"
    shutil.copy(DATA / "messages.jsonl", upload)
    folder = save_dataset(workspace, "chat", upload, inspect_file(upload))
    assert (folder / "original.jsonl").read_bytes() == upload.read_bytes()


def test_a_report_without_valid_rows_is_not_saved(workspace, tmp_path):
    path = tmp_path / "unanswered.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "Hi"}]}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"unanswered\.jsonl has no valid rows to save"):
        save_dataset(workspace, "x", path, inspect_file(path))
    assert list(workspace.datasets.iterdir()) == []


def test_load_records_from_a_raw_file_skips_invalid_rows(workspace):
    records, report_json = load_records(str(DATA / "bad_rows.jsonl"), workspace)
    assert len(records) == 2 and report_json["invalid"] == 7 and report_json["format"] == "messages"


def test_load_records_explains_what_it_could_not_find(workspace, tmp_path):
    save_dataset(workspace, "kept", DATA / "lines.txt", inspect_file(DATA / "lines.txt"))
    with pytest.raises(DatasetError, match=r"No dataset called 'missing' .* Saved datasets: kept\."):
        load_records("missing", workspace)
    with pytest.raises(DatasetError, match="is a folder but not a saved dataset"):
        load_records(str(tmp_path), workspace)
    with pytest.raises(DatasetError, match="No dataset chosen"):
        load_records("  ", workspace)


def test_damaged_records_file_is_reported(workspace):
    folder = save_dataset(workspace, "fragile", DATA / "lines.txt", inspect_file(DATA / "lines.txt"))
    with open(folder / "records.jsonl", "a", encoding="utf-8") as f:
        f.write('{"text": "cut off\n')
    with pytest.raises(DatasetError, match=r"fragile/records\.jsonl is damaged at line 4\. Save the dataset again"):
        load_records("fragile", workspace)
