"""Model-family knowledge, in one place: which module is the attention output projection, which
the FFN down projection, and which the attention input projections, per HF ``model_type``.

Everything else in gainbench asks this module by *role* (``attn_out``, ``ffn_down``, ``attn_qv``)
and never by module name, so adding a family is one entry in each table here.
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

# The attention input projections LoRA adapts (Hu et al. 2021 adapt W_q and W_v), as suffixes; a
# family with one fused q/k/v projection lists that. They equal PEFT's default LoRA modules where
# PEFT has one (tests/models/test_every_family.py checks it), and are the LoRA and (IA)^3 default
# where it has none (Phi-3 in PEFT 0.21).
ATTN_QV_SUFFIXES: dict[str, tuple[str, ...]] = {
    "llama": ("self_attn.q_proj", "self_attn.v_proj"),
    "mistral": ("self_attn.q_proj", "self_attn.v_proj"),
    "qwen2": ("self_attn.q_proj", "self_attn.v_proj"),
    "qwen3": ("self_attn.q_proj", "self_attn.v_proj"),
    "phi3": ("self_attn.qkv_proj",),
    "gemma": ("self_attn.q_proj", "self_attn.v_proj"),
    "gemma2": ("self_attn.q_proj", "self_attn.v_proj"),
    "gpt2": ("attn.c_attn",),
    "gpt_neox": ("attention.query_key_value",),
    "opt": ("self_attn.q_proj", "self_attn.v_proj"),
    "falcon": ("self_attention.query_key_value",),
}

ROLES = ("attn_out", "ffn_down", "attn_qv")

# Every linear matrix of one decoder block by its role, for the per-role analyses (the column-span
# diagnostic): q, k, v, o (attention), gate, up, down (FFN), and the fused projections some families
# keep: qkv (GPT-2 c_attn, GPT-NeoX/Falcon query_key_value, Phi-3 qkv_proj; [in d, out 3d] or less
# with grouped K/V) and gate_up (Phi-3). GPT-2's mlp.c_fc is the FFN up projection (no gate), its
# mlp.c_proj the down projection. A suffix means the same role in every family that has it.
_LLAMA_MATRICES = {"self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v",
                   "self_attn.o_proj": "o", "mlp.gate_proj": "gate", "mlp.up_proj": "up",
                   "mlp.down_proj": "down"}
MATRIX_ROLE_SUFFIXES: dict[str, dict[str, str]] = {
    "llama": _LLAMA_MATRICES, "mistral": _LLAMA_MATRICES, "qwen2": _LLAMA_MATRICES,
    "qwen3": _LLAMA_MATRICES, "gemma": _LLAMA_MATRICES, "gemma2": _LLAMA_MATRICES,
    "phi3": {"self_attn.qkv_proj": "qkv", "self_attn.o_proj": "o", "mlp.gate_up_proj": "gate_up",
             "mlp.down_proj": "down"},
    "gpt2": {"attn.c_attn": "qkv", "attn.c_proj": "o", "mlp.c_fc": "up", "mlp.c_proj": "down"},
    "gpt_neox": {"attention.query_key_value": "qkv", "attention.dense": "o",
                 "mlp.dense_h_to_4h": "up", "mlp.dense_4h_to_h": "down"},
    "opt": {"self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v",
            "self_attn.out_proj": "o", "fc1": "up", "fc2": "down"},
    "falcon": {"self_attention.query_key_value": "qkv", "self_attention.dense": "o",
               "mlp.dense_h_to_4h": "up", "mlp.dense_4h_to_h": "down"},
}
MATRIX_ROLES = ("q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down")


def matrix_role(module_name: str, model_type: str | None = None) -> str | None:
    """The role (``MATRIX_ROLES``) of a linear module from its name's suffix, looked up in the
    family's table, or in every family's when ``model_type`` is None (results carry module names,
    not the family); None for a module no table lists."""
    tables = [MATRIX_ROLE_SUFFIXES.get(model_type, {})] if model_type else MATRIX_ROLE_SUFFIXES.values()
    for table in tables:
        for suffix, role in table.items():
            if module_name == suffix or module_name.endswith("." + suffix):
                return role
    return None

LINEAR_TYPES = (nn.Linear, Conv1D)


def linear_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LINEAR_TYPES)}


def model_type_of(model: nn.Module) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def target_suffixes(model: nn.Module, targets: list[str], method: str | None = None) -> list[str]:
    """Roles (``attn_out``, ``ffn_down``, ``attn_qv``) become the family's module-name suffixes;
    any other target is already a suffix and passes through. ``method`` names the asking method
    in the error for a family gainbench does not know."""
    model_type = model_type_of(model)
    suffixes: list[str] = []
    for target in targets:
        if target not in ROLES:
            suffixes.append(target)
        elif model_type not in ROLE_SUFFIXES:
            prefix = f"method '{method}': " if method else ""
            raise GainbenchError(prefix + _unknown_architecture_message(model_type, linear_modules(model)))
        elif target == "attn_qv":
            suffixes.extend(ATTN_QV_SUFFIXES[model_type])
        else:
            suffixes.append(ROLE_SUFFIXES[model_type][target])
    return suffixes


def resolve_targets(model: nn.Module, targets: list[str]) -> dict[str, nn.Module]:
    """Map target names to the model's linear modules.

    A target is a role (``attn_out``, ``ffn_down``, ``attn_qv``) looked up for the model's family,
    ``block_linear`` (every linear module inside the numbered decoder blocks, i.e. all but the
    LM head), or an explicit module-name suffix such as ``self_attn.o_proj``. Every target must
    match at least one linear module.
    """
    linears = linear_modules(model)
    found: dict[str, nn.Module] = {}
    for target in targets:
        if target == "block_linear":
            found.update({n: m for n, m in linears.items() if any(p.isdigit() for p in n.split("."))})
            continue
        for suffix in target_suffixes(model, [target]):
            matches = {n: m for n, m in linears.items() if n == suffix or n.endswith("." + suffix)}
            if not matches:
                raise GainbenchError(
                    f"target '{target}' (module suffix '{suffix}') matches no linear module of this "
                    f"{model_type_of(model)} model; set method.options.targets to roles "
                    f"({', '.join(ROLES)}) or suffixes of one block's linear modules: "
                    f"{_one_block(linears)}"
                )
            found.update(matches)
    return dict(sorted(found.items(), key=lambda kv: _natural_key(kv[0])))


def block_module_names(model: nn.Module) -> list[str]:
    """The linear modules of the model's first decoder block, named as targets (prefix stripped)."""
    return _one_block(linear_modules(model))


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
        f"and FFN projections; name the method targets explicitly with "
        f"method.options.targets=[<suffix>,...] (or add the family to ROLE_SUFFIXES and "
        f"ATTN_QV_SUFFIXES in gainbench/models/architectures.py), choosing suffixes from one "
        f"block's linear modules: {_one_block(linears)}"
    )


def _natural_key(name: str):
    return [int(p) if p.isdigit() else p for p in name.split(".")]
