"""``full_ft``: every parameter trains; nothing to absorb."""

from __future__ import annotations

import torch.nn as nn

from gainbench.methods.base import Method, register


@register("full_ft")
class FullFineTuning(Method):
    state_is_full_model = True

    def attach(self, model: nn.Module) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def absorb(self, model: nn.Module) -> nn.Module:
        return model
