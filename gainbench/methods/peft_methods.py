"""LoRA and (IA)^3 through HF PEFT, merged into the weights after every stage."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from gainbench.errors import GainbenchError, first_line
from gainbench.methods.base import Method, register
from gainbench.models.architectures import (ATTN_QV_SUFFIXES, ROLE_SUFFIXES, ROLES, block_module_names,
                                            model_type_of, target_suffixes)


def _get_peft_model(model: nn.Module, config, method: str) -> nn.Module:
    from peft import get_peft_model

    # PeftModel's constructor reads a transformers property that transformers 5 deprecates
    # (is_gradient_checkpointing); the noise would hide real warnings. Silenced here only.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)
        try:
            return get_peft_model(model, config)
        except ValueError as err:  # PEFT's word on targets it cannot find or adapt
            raise GainbenchError(
                f"method '{method}' cannot adapt this {model_type_of(model)} model ({first_line(err)}); "
                f"set method.options.targets to roles ({', '.join(ROLES)}), block_linear or suffixes of "
                f"one block's linear modules: {block_module_names(model)}") from None


def _family_default(model: nn.Module, method: str, peft_defaults: dict) -> list[str] | None:
    """``None`` where PEFT has default modules for the family (PEFT then picks them), else the
    family's attention input projections (``attn_qv``); a family neither knows is refused."""
    model_type = model_type_of(model)
    if model_type in peft_defaults:
        return None
    if model_type in ATTN_QV_SUFFIXES:
        return list(ATTN_QV_SUFFIXES[model_type])
    raise GainbenchError(
        f"method '{method}' has no default modules for model_type '{model_type}' (neither PEFT nor "
        f"gainbench/models/architectures.py knows the family); set method.options.targets=[<suffix>,...] "
        f"from one block's linear modules: {block_module_names(model)}")


def _peft_target_modules(model: nn.Module, targets: list[str], method: str) -> list[str]:
    """``targets`` as the module-name suffixes PEFT matches: roles become the family's suffixes,
    ``block_linear`` every linear module of one decoder block (PEFT then adapts it in every
    block, which is the set gainbench.models.architectures.resolve_targets names), and any other
    target is already a suffix."""
    suffixes: list[str] = []
    for target in targets:
        if target == "block_linear":
            suffixes += [s for s in block_module_names(model) if s not in suffixes]
        else:
            suffixes += [s for s in target_suffixes(model, [target], method) if s not in suffixes]
    return suffixes


def _is_gpt2_conv1d(model: nn.Module) -> bool:
    return model_type_of(model) == "gpt2"  # Conv1D stores [in, out]: PEFT needs fan_in_fan_out


class _PeftMethod(Method):
    def absorb(self, model: nn.Module) -> nn.Module:
        merged = model.merge_and_unload()
        for p in merged.parameters():
            p.requires_grad_(True)
        return merged

    def export_adapter(self, model: nn.Module, folder: Path,
                       state: Mapping[str, torch.Tensor]) -> bool:
        """PEFT's own adapter folder (adapter_config.json, adapter_model.safetensors), for
        ``PeftModel.from_pretrained`` on the weights the stage started from. Written from the
        gathered ``state``, not the live (possibly sharded) tensors."""
        model.save_pretrained(folder, state_dict=dict(state))
        return True


@register("lora")
class LoRA(_PeftMethod):
    """Low-rank ``W + (alpha/r) B A`` on ``targets``: roles, ``block_linear`` or module suffixes;
    null is PEFT's default modules for the family, or the family's ``attn_qv`` projections where
    PEFT has none."""

    use_dora = False

    def __init__(self, r: int = 8, alpha: int = 16, dropout: float = 0.05, targets=None):
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self.targets = list(targets) if targets is not None else None

    def attach(self, model: nn.Module) -> nn.Module:
        from peft import LoraConfig
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        if self.targets is None:
            targets = _family_default(model, self.name, TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)
        else:
            targets = _peft_target_modules(model, self.targets, self.name)
        config = LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
            fan_in_fan_out=_is_gpt2_conv1d(model), task_type="CAUSAL_LM", use_dora=self.use_dora,
        )
        return _get_peft_model(model, config, self.name)


@register("lora_gain_modules")
class LoRAOnGainModules(LoRA):
    """LoRA on the matrices GAIN-FFN scales (attention output and FFN down projection): the
    additive-vs-multiplicative comparison with the adapted modules held equal."""

    def __init__(self, targets=("attn_out", "ffn_down"), **lora_options):
        super().__init__(targets=targets, **lora_options)


@register("lora_all")
class LoRAOnAllLinear(LoRA):
    """LoRA on every linear matrix of every decoder block (all but the LM head)."""

    def __init__(self, targets=("block_linear",), **lora_options):
        super().__init__(targets=targets, **lora_options)


@register("ia3")
class IA3(_PeftMethod):
    """(IA)^3 through PEFT: a ones-initialised vector scaling the outputs of ``targets``.

    With ``targets`` given (default: GAIN's ``attn_out``) it computes exactly what GAIN does,
    an independent cross-check; ``targets: null`` is PEFT's own (IA)^3 recipe for the family
    (keys, values, and the FFN down projection's *input* side), or, where PEFT has none, the same
    recipe on the family's ``attn_qv`` projections and ``ffn_down``.
    """

    exempt_from_weight_decay = True
    # PEFT's (IA)^3 merge assigns ``weight.data``, which a sharded weight does not take (see
    # gainbench.training.parallel.on_sharded_weights); GAIN computes the same and is supported.
    supports_sharded_weights = False

    def __init__(self, targets=("attn_out",)):
        self.targets = list(targets) if targets is not None else None

    def attach(self, model: nn.Module) -> nn.Module:
        from peft import IA3Config
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING

        if self.targets is not None:
            modules = {"target_modules": _peft_target_modules(model, self.targets, self.name),
                       "feedforward_modules": []}
        else:
            attention = _family_default(model, self.name, TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING)
            if attention is None:
                modules = {}  # PEFT's own recipe for the family
            else:  # PEFT's recipe for fused-qkv families: attention outputs, FFN down's input side
                ffn_down = ROLE_SUFFIXES[model_type_of(model)]["ffn_down"]
                modules = {"target_modules": [*attention, ffn_down], "feedforward_modules": [ffn_down]}
        config = IA3Config(**modules, fan_in_fan_out=_is_gpt2_conv1d(model), task_type="CAUSAL_LM")
        return _get_peft_model(model, config, self.name)


@register("ia3_peft")
class IA3PeftDefaults(IA3):
    """PEFT's default (IA)^3 modules for the family."""

    def __init__(self, targets=None):
        super().__init__(targets)
