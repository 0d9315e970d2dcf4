"""Model-family knowledge, in one place: which module is the attention output projection and
which the FFN down projection, per HF ``model_type``.

Everything else in gainbench asks this module by *role* (``attn_out``, ``ffn_down``) and never
by module name, so adding a family is one entry here.
"""

from __future__ import annotations

import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from gainbench.errors import GainbenchError

# role -> module-name suffix inside one decoder block, per HF ``model_type`` (checked against the
# transformers 5.24 modeling code and tested on tiny models in tests/models/test_architectures.py).
# Falcon's FalconLinear subclasses nn.Linear; GPT-2's Conv1D stores [in, out].
ROLE_SUFFIXES: dict[str, dict[str, str]] = {
    "llama": {"attn_out": "self_attn.o_proj", "ffn_down": "mlp.down_proj"},
    "mistral": {"attn_out": "self_attn.o_proj", "ffn_down": "mlp.down_proj"},
    "qwen2": {"attn_out": "self_attn.o_proj", "ffn_down": "mlp.down_proj"},
    "qwen3": {"attn_out": "self_attn.o_proj", "ffn_down": "mlp.down_proj"},
    "phi3": {"attn_out": "self_attn.o_proj", "ffn_down": "mlp.down_proj"},
    "gemma": {"attn_out": "self_attn.o_proj", "ffn_down": "mlp.down_proj"},
    "gemma2": {"attn_out": "self_attn.o_proj", "ffn_down": "mlp.down_proj"},
    "gpt2": {"attn_out": "attn.c_proj", "ffn_down": "mlp.c_proj"},
    "gpt_neox": {"attn_out": "attention.dense", "ffn_down": "mlp.dense_4h_to_h"},
    "opt": {"attn_out": "self_attn.out_proj", "ffn_down": "fc2"},
    "falcon": {"attn_out": "self_attention.dense", "ffn_down": "mlp.dense_4h_to_h"},
}

LINEAR_TYPES = (nn.Linear, Conv1D)


def linear_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LINEAR_TYPES)}


def resolve_targets(model: nn.Module, targets: list[str]) -> dict[str, nn.Module]:
    """Map target names to the model's linear modules.

    A target is a role (``attn_out``, ``ffn_down``) looked up for the model's family,
    ``block_linear`` (every linear module inside the numbered decoder blocks, i.e. all but the
    LM head), or an explicit module-name suffix such as ``self_attn.o_proj``. Every target must
    match at least one linear module.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    linears = linear_modules(model)
    found: dict[str, nn.Module] = {}
    for target in targets:
        if target == "block_linear":
            found.update({n: m for n, m in linears.items() if any(p.isdigit() for p in n.split("."))})
            continue
        if target in ("attn_out", "ffn_down"):
            if model_type not in ROLE_SUFFIXES:
                raise GainbenchError(_unknown_architecture_message(model_type, linears))
            suffix = ROLE_SUFFIXES[model_type][target]
        else:
            suffix = target
        matches = {n: m for n, m in linears.items() if n == suffix or n.endswith("." + suffix)}
        if not matches:
            raise GainbenchError(
                f"target '{target}' (module suffix '{suffix}') matches no linear module of this "
                f"{model_type} model; set method.options.targets to roles (attn_out, ffn_down) or "
                f"suffixes of one block's linear modules: {_one_block(linears)}"
            )
        found.update(matches)
    return dict(sorted(found.items(), key=lambda kv: _natural_key(kv[0])))


def _one_block(linears: dict[str, nn.Module]) -> list[str]:
    """Module names of the first decoder block, with the block prefix stripped."""
    for name in linears:
        parts = name.split(".")
        digits = [i for i, p in enumerate(parts) if p.isdigit()]
        if digits:
            prefix = ".".join(parts[: digits[0] + 1]) + "."
            return [n[len(prefix):] for n in linears if n.startswith(prefix)]
    return list(linears)


def _unknown_architecture_message(model_type, linears) -> str:
    return (
        f"gainbench does not know which modules of model_type '{model_type}' are the attention "
        f"output and FFN down projections; name the method targets explicitly with "
        f"method.options.targets=[<suffix>,...] (or add the family to ROLE_SUFFIXES in "
        f"gainbench/models/architectures.py), choosing suffixes from one block's linear modules: "
        f"{_one_block(linears)}"
    )


def _natural_key(name: str):
    return [int(p) if p.isdigit() else p for p in name.split(".")]
