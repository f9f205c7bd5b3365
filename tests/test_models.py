"""Where a base model comes from: the embedded default, a folder, a .gguf file or a hub id."""
import json

import pytest

from studio.models import EMBEDDED_LABEL, ModelNotFound, resolve_model


def test_the_embedded_model_is_a_converted_safetensors_folder(embedded_model_dir):
    config = json.loads((embedded_model_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (embedded_model_dir / "model.safetensors").stat().st_size > 200e6
    assert "im_start" in (embedded_model_dir / "chat_template.jinja").read_text()


def test_every_way_of_naming_a_model(workspace, embedded_model_dir, tmp_path):
    (workspace.models / "SmolLM2-135M-Instruct").symlink_to(embedded_model_dir)
    for spec in ("embedded", EMBEDDED_LABEL, "SmolLM2-135M-Instruct"):  # reused, not converted again
        assert resolve_model(spec, workspace, progress=pytest.fail).endswith("SmolLM2-135M-Instruct")
    assert resolve_model(str(embedded_model_dir), workspace) == str(embedded_model_dir)


@pytest.mark.parametrize("spec,message", [
    ("missing.gguf", "No GGUF file"),
    ("not a model", "neither a folder on this machine nor a hub id"),
    ("someone/some-model", "Could not get 'someone/some-model' from the Hugging Face hub (offline mode is on"),
])
def test_models_that_cannot_be_had_say_what_to_do(workspace, spec, message):
    with pytest.raises(ModelNotFound, match=message.replace("(", r"\(")):
        resolve_model(spec, workspace)


def test_a_folder_without_config_is_refused(workspace, tmp_path):
    with pytest.raises(ModelNotFound, match="holds no config.json"):
        resolve_model(str(tmp_path), workspace)


def test_bitsandbytes_hub_kernel_warning_stays_out_of_the_log(caplog):
    import logging

    import studio.models  # noqa: F401 - installs the filter

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure", "offline")
        logger.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
