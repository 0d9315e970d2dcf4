"""LoRA and (IA)^3 through HF PEFT, merged into the weights after every stage."""

from __future__ import annotations

import warnings

import torch.nn as nn

from gainbench.methods.base import Method, register
from gainbench.models.architectures import ROLE_SUFFIXES


def _get_peft_model(model: nn.Module, config) -> nn.Module:
    from peft import get_peft_model

    # PeftModel's constructor reads a transformers property that transformers 5 deprecates
    # (is_gradient_checkpointing); the noise would hide real warnings. Silenced here only.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)
        return get_peft_model(model, config)


def _module_suffixes(model: nn.Module, targets):
    """Roles (``attn_out``, ``ffn_down``) become module suffixes; ``None`` keeps PEFT's default."""
    if targets is None:
        return None
    roles = ROLE_SUFFIXES.get(model.config.model_type, {})
    return [roles.get(t, t) for t in targets]


def _is_gpt2_conv1d(model: nn.Module) -> bool:
    return model.config.model_type == "gpt2"  # Conv1D stores [in, out]: PEFT needs fan_in_fan_out


class _PeftMethod(Method):
    def absorb(self, model: nn.Module) -> nn.Module:
        merged = model.merge_and_unload()
        for p in merged.parameters():
            p.requires_grad_(True)
        return merged


@register("lora")
class LoRA(_PeftMethod):
    """Low-rank ``W + (alpha/r) B A`` on ``targets`` (null: PEFT's default modules per family)."""

    use_dora = False

    def __init__(self, r: int = 8, alpha: int = 16, dropout: float = 0.05, targets=None):
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self.targets = list(targets) if targets is not None else None

    def attach(self, model: nn.Module) -> nn.Module:
        from peft import LoraConfig

        config = LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
            target_modules=_module_suffixes(model, self.targets),
            fan_in_fan_out=_is_gpt2_conv1d(model), task_type="CAUSAL_LM", use_dora=self.use_dora,
        )
        return _get_peft_model(model, config)


@register("ia3")
class IA3(_PeftMethod):
    """(IA)^3 through PEFT: a ones-initialised vector scaling the outputs of ``targets``.

    With ``targets`` given (default: GAIN's ``attn_out``) it computes exactly what GAIN does,
    an independent cross-check; ``targets: null`` is PEFT's own (IA)^3 recipe for the family
    (keys, values, and the FFN down projection's *input* side).
    """

    exempt_from_weight_decay = True
    # PEFT's (IA)^3 merge assigns ``weight.data``, which a sharded weight does not take (see
    # gainbench.training.parallel.on_sharded_weights); GAIN computes the same and is supported.
    supports_sharded_weights = False

    def __init__(self, targets=("attn_out",)):
        self.targets = list(targets) if targets is not None else None

    def attach(self, model: nn.Module) -> nn.Module:
        from peft import IA3Config

        suffixes = _module_suffixes(model, self.targets)
        explicit = {} if suffixes is None else {"target_modules": suffixes, "feedforward_modules": []}
        config = IA3Config(**explicit, fan_in_fan_out=_is_gpt2_conv1d(model), task_type="CAUSAL_LM")
        return _get_peft_model(model, config)


@register("ia3_peft")
class IA3PeftDefaults(IA3):
    """PEFT's default (IA)^3 modules for the family."""

    def __init__(self, targets=None):
        super().__init__(targets)
