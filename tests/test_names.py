"""Names typed in any language become folder names: safe_name, and the runs, presets and exports named with
it (datasets: test_data_store.py)."""
import zipfile

import pytest

from studio.config import ConfigError, TrainConfig, load_presets, save_user_preset
from studio.export import export_adapter
from studio.runs import create_run, find_run
from studio.workspace import NAME_BYTES, safe_name

NAMES = [("客服語氣", "客服語氣"), ("客服语气", "客服语气"), ("客服 tone v2!", "客服-tone-v2")]


@pytest.mark.parametrize("name,folder", NAMES + [
    ("../../etc/passwd", "etc-passwd"), (".hidden", "hidden"), ("a\x00b\nc", "a-b-c"), ("a\u202eb", "a-b"),
    ("Cafe\u0301 menu", "Café-menu"),  # the accent as macOS writes it, after its letter
])
def test_safe_name_keeps_letters_of_any_language_and_nothing_that_leaves_the_folder(name, folder):
    assert safe_name(name) == folder
    assert safe_name(folder) == folder  # made once, the same again: a lookup by name finds it


@pytest.mark.parametrize("name", ["..", "/", "", "！？", " \t"])
def test_a_name_with_no_letter_or_digit_gets_the_fallback(name):
    assert safe_name(name, "fallback") == "fallback"


def test_a_long_name_is_cut_between_characters():
    cut = safe_name("語" * 100)
    assert cut == "語" * (NAME_BYTES // 3) and len(cut.encode()) <= NAME_BYTES


@pytest.mark.parametrize("name,folder", NAMES)
def test_a_run_named_in_chinese_is_found_and_exported_under_its_name(workspace, name, folder):
    run = create_run(workspace, TrainConfig(model="embedded", dataset="d"), name=name)
    assert run.id.endswith(f"-{folder}") and run.status()["name"] == name
    assert find_run(workspace, run.id).path == run.path
    with pytest.raises(FileNotFoundError, match="No run called"):
        find_run(workspace, f"../runs/{run.id}")

    run.set_status(state="completed")
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
    path = export_adapter(run, workspace)
    assert path == workspace.exports / run.id / f"{run.id}-adapter.zip"
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == [f"{run.id}-adapter/adapter_config.json"]


@pytest.mark.parametrize("name,stem", NAMES)
def test_a_preset_named_in_chinese_keeps_its_name(tmp_path, name, stem):
    assert save_user_preset(tmp_path, name, name, "mine", {"lora_r": 4}) == tmp_path / f"{stem}.yaml"
    preset = load_presets(tmp_path)[stem]
    assert preset.title == name and preset.settings["lora_r"] == 4


def test_a_preset_name_with_no_letter_or_digit_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^'!!!' cannot be used as a preset name\. Use letters or digits of any "
                                          r"language"):
        save_user_preset(tmp_path, "!!!", "!!!", "", {})
    assert list(tmp_path.iterdir()) == []
