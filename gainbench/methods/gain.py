"""GAIN: learn a diagonal rescaling ``W_new = diag(s) @ W`` of chosen linear layers, then absorb it.

Usable on its own::

    params = apply_gain(model, targets=["attn_out", "ffn_down"])   # s = 1, only s trains
    ...train...
    absorb_gain(model)              # folds s into W and b; the model is plain HF again

``side="output"`` (default) scales output channels: ``y = s * (W x + b)``, so ``W <- diag(s) W``,
``b <- s * b``. ``side="input"`` scales input channels: ``y = W (s * x) + b``, so ``W <- W diag(s)``.
GPT-2's ``Conv1D`` stores its weight as ``[in, out]``, so its output side is the columns.

``parametrization="plain"`` (default) trains ``s`` itself (parameter ``scale``, init 1);
``"exp"`` trains a log-scale ``u`` (parameter ``log_scale``, init 0) with ``s = exp(u)``, which keeps
``s`` positive and makes steps multiplicative. Either way absorption folds ``s``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from gainbench.models.architectures import resolve_targets

SIDES = ("output", "input")
PARAMETRIZATIONS = ("plain", "exp")


class GainScaled(nn.Module):
    """A frozen linear layer (``nn.Linear`` or GPT-2 ``Conv1D``) times a learned fp32 scale."""

    def __init__(self, base: nn.Module, side: str = "output", parametrization: str = "plain"):
        super().__init__()
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
        self.base = base
        self.side = side
        self.parametrization = parametrization
        n_in, n_out = _in_out_features(base)
        # fp32 whatever the model's dtype: a bf16 scale near 1 cannot resolve small updates.
        # Both start at the identity: s = 1 = exp(0).
        init = torch.ones if parametrization == "plain" else torch.zeros
        param = nn.Parameter(init(n_out if side == "output" else n_in, dtype=torch.float32,
                                  device=base.weight.device))
        setattr(self, self.param_name, param)

    @property
    def param_name(self) -> str:
        return "scale" if self.parametrization == "plain" else "log_scale"

    @property
    def param(self) -> nn.Parameter:
        """The trainable tensor: ``scale`` (plain) or ``log_scale`` (exp)."""
        return getattr(self, self.param_name)

    def gain(self) -> torch.Tensor:
        """The effective scale ``s`` (fp32), differentiable."""
        return self.param if self.parametrization == "plain" else self.param.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gain()
        if self.side == "input":
            return self.base(x * s.to(x.dtype))
        y = self.base(x)
        return y * s.to(y.dtype)

    @torch.no_grad()
    def folded_weight(self) -> torch.Tensor:
        """The base weight with ``s`` folded in, as absorption writes it; the module is unchanged."""
        weight, s = self.base.weight, self.gain()
        out_dim = 0 if isinstance(self.base, nn.Linear) else 1  # Conv1D is [in, out]
        dim = out_dim if self.side == "output" else 1 - out_dim
        shape = [1, 1]
        shape[dim] = -1
        return (weight.float() * s.view(shape)).to(weight.dtype)

    @torch.no_grad()
    def absorbed(self) -> nn.Module:
        """Fold the scale into the base weights (in place) and return the plain base module."""
        bias = self.base.bias
        self.base.weight.copy_(self.folded_weight())
        if bias is not None and self.side == "output":
            bias.copy_((bias.float() * self.gain()).to(bias.dtype))
        return self.base


def effective_weight(module: nn.Module) -> torch.Tensor:
    """A linear module's weight as the model computes with it (GAIN's scale folded in)."""
    return module.folded_weight() if isinstance(module, GainScaled) else module.weight.detach()


def _in_out_features(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        n_in, n_out = module.weight.shape
        return n_in, n_out
    raise TypeError(f"GAIN wraps nn.Linear or Conv1D, not {type(module).__name__}")


def apply_gain(model: nn.Module, targets: list[str], side: str | dict[str, str] = "output",
               parametrization: str = "plain") -> dict[str, nn.Parameter]:
    """Freeze ``model`` and wrap each target module in :class:`GainScaled`.

    ``side`` is one side for every target, or a ``{target: side}`` dict (unlisted targets:
    output). Returns ``{module_name: parameter}``, the only trainable parameters (``s`` itself
    for ``plain``, ``u`` with ``s = exp(u)`` for ``exp``). Works on meta tensors too.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    params = {}
    for target in targets:
        target_side = side.get(target, "output") if isinstance(side, dict) else side
        for name, module in resolve_targets(model, [target]).items():
            wrapped = GainScaled(module, target_side, parametrization)
            _set_submodule(model, name, wrapped)
            params[name] = wrapped.param
    return params


def absorb_gain(model: nn.Module) -> int:
    """Fold every :class:`GainScaled` into its weights and unwrap it. Returns how many."""
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, GainScaled)]
    for name, module in wrapped:
        _set_submodule(model, name, module.absorbed())
    return len(wrapped)


def gain_modules(model: nn.Module) -> dict[str, GainScaled]:
    return {n: m for n, m in model.named_modules() if isinstance(m, GainScaled)}


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
