"""GAIN: learn a diagonal rescaling ``W_new = diag(s) @ W`` of chosen linear layers, then absorb it.

Usable on its own::

    scales = apply_gain(model, targets=["attn_out", "ffn_down"])   # s = 1, only s trains
    ...train...
    absorb_gain(model)              # folds s into W and b; the model is plain HF again

``side="output"`` (default) scales output channels: ``y = s * (W x + b)``, so ``W <- diag(s) W``,
``b <- s * b``. ``side="input"`` scales input channels: ``y = W (s * x) + b``, so ``W <- W diag(s)``.
GPT-2's ``Conv1D`` stores its weight as ``[in, out]``, so its output side is the columns.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from gainbench.models.architectures import resolve_targets


class GainScaled(nn.Module):
    """A frozen linear layer (``nn.Linear`` or GPT-2 ``Conv1D``) times a learned fp32 scale."""

    def __init__(self, base: nn.Module, side: str = "output"):
        super().__init__()
        if side not in ("output", "input"):
            raise ValueError(f"side must be 'output' or 'input', got {side!r}")
        self.base = base
        self.side = side
        n_in, n_out = _in_out_features(base)
        # fp32 whatever the model's dtype: a bf16 scale near 1 cannot resolve small updates.
        self.scale = nn.Parameter(
            torch.ones(n_out if side == "output" else n_in, dtype=torch.float32,
                       device=base.weight.device)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.side == "input":
            return self.base(x * self.scale.to(x.dtype))
        y = self.base(x)
        return y * self.scale.to(y.dtype)

    @torch.no_grad()
    def absorbed(self) -> nn.Module:
        """Fold the scale into the base weights (in place) and return the plain base module."""
        weight, bias, s = self.base.weight, self.base.bias, self.scale
        out_dim = 0 if isinstance(self.base, nn.Linear) else 1  # Conv1D is [in, out]
        dim = out_dim if self.side == "output" else 1 - out_dim
        shape = [1, 1]
        shape[dim] = -1
        weight.copy_((weight.float() * s.view(shape)).to(weight.dtype))
        if bias is not None and self.side == "output":
            bias.copy_((bias.float() * s).to(bias.dtype))
        return self.base


def _in_out_features(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        n_in, n_out = module.weight.shape
        return n_in, n_out
    raise TypeError(f"GAIN wraps nn.Linear or Conv1D, not {type(module).__name__}")


def apply_gain(model: nn.Module, targets: list[str], side: str | dict[str, str] = "output"
               ) -> dict[str, nn.Parameter]:
    """Freeze ``model`` and wrap each target module in :class:`GainScaled`.

    ``side`` is one side for every target, or a ``{target: side}`` dict (unlisted targets:
    output). Returns ``{module_name: scale}``, the only trainable parameters.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    scales = {}
    for target in targets:
        target_side = side.get(target, "output") if isinstance(side, dict) else side
        for name, module in resolve_targets(model, [target]).items():
            wrapped = GainScaled(module, target_side)
            _set_submodule(model, name, wrapped)
            scales[name] = wrapped.scale
    return scales


def absorb_gain(model: nn.Module) -> int:
    """Fold every :class:`GainScaled` into its weights and unwrap it. Returns how many."""
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, GainScaled)]
    for name, module in wrapped:
        _set_submodule(model, name, module.absorbed())
    return len(wrapped)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
