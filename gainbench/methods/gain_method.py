"""``gain`` / ``gain_ffn``: the paper's method as a protocol method (the math is in gain.py)."""

from __future__ import annotations

import torch.nn as nn

from gainbench.methods.base import Method, register
from gainbench.methods.gain import GainScaled, absorb_gain, apply_gain


@register("gain")
class Gain(Method):
    """Diagonal scales on ``targets`` (roles such as ``attn_out``/``ffn_down`` or module suffixes),
    absorbed into the weights after every stage."""

    exempt_from_weight_decay = True

    def __init__(self, targets=("attn_out",), side: str | dict = "output"):
        self.targets = list(targets)
        self.side = dict(side) if isinstance(side, dict) else side

    def attach(self, model: nn.Module) -> nn.Module:
        apply_gain(model, self.targets, self.side)
        return model

    def absorb(self, model: nn.Module) -> nn.Module:
        absorb_gain(model)
        for p in model.parameters():
            p.requires_grad_(True)  # leave the model as loaded: plain, nothing frozen
        return model

    def trainable_parameters(self, model):
        return {f"{n}.scale": m.scale for n, m in model.named_modules() if isinstance(m, GainScaled)}


# gain_ffn is gain with a different default target list; registering it keeps
# `method=gain_ffn` a name the registry knows even without its YAML.
@register("gain_ffn")
class GainFFN(Gain):
    def __init__(self, targets=("attn_out", "ffn_down"), side="output"):
        super().__init__(targets, side)
