"""``gain`` / ``gain_ffn``: the paper's method as a protocol method (the math is in gain.py).

Options (``method.options`` in YAML, keyword arguments of ``make_method``):

* ``targets``: roles (``attn_out``, ``ffn_down``) or explicit module-name suffixes.
* ``side``: ``output`` | ``input``, or a ``{target: side}`` dict (unlisted targets: output).
* ``parametrization``: ``plain`` (train ``s``, init 1) | ``exp`` (train ``u``, init 0, ``s = exp(u)``).
* ``absorb_each_stage``: true (default) folds ``s`` into the weights after every stage and the
  next stage starts from ``s = 1``; false keeps training one scale across all stages (the model
  stays wrapped between stages, and resume needs only the latest scales).
* ``decay_to_one``: strength of the penalty ``decay_to_one * sum((s - 1)^2)`` over every scale,
  returned by :meth:`Gain.regularization` for the training loop to add to the loss. It replaces
  weight decay, which would pull ``s`` toward 0.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gainbench.errors import GainbenchError
from gainbench.methods.base import Method, register
from gainbench.methods.gain import (PARAMETRIZATIONS, SIDES, absorb_gain, apply_gain, effective_weight,
                                    gain_modules)


@register("gain")
class Gain(Method):
    """Diagonal scales on ``targets``, absorbed into the weights after every stage."""

    exempt_from_weight_decay = True

    def __init__(self, targets=("attn_out",), *, side: str | dict = "output",
                 parametrization: str = "plain", decay_to_one: float = 0.0,
                 absorb_each_stage: bool = True):
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        self.absorb_each_stage = bool(absorb_each_stage)
        self.state_is_full_model = not self.absorb_each_stage  # the latest scales hold every stage
        # Each stage's scales multiply the weights: "a times stage A" is diag(s_A ** a) W. Kept
        # across stages, the saved scales hold every stage at once, and updates are compared as
        # weight differences like any other method's.
        self.update_composition = "multiplicative" if self.absorb_each_stage else "additive"
        self.side = dict(side) if isinstance(side, dict) else side
        self.parametrization = parametrization
        self.decay_to_one = decay_to_one
        self._validate()

    def _validate(self) -> None:
        # Fail at construction, naming the valid values, rather than mid-run (as PEFT's __post_init__).
        def bad(option, value, valid):
            return GainbenchError(f"method '{self.name}': {option}={value!r} is not valid; use one of "
                                  f"{valid} (configs/method/{self.name}.yaml, method.options.{option})")
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise bad("targets", self.targets, "a non-empty list of roles (attn_out, ffn_down) "
                      "or module suffixes")
        sides = self.side.values() if isinstance(self.side, dict) else [self.side]
        if any(s not in SIDES for s in sides):
            raise bad("side", self.side, f"{', '.join(SIDES)} or a {{target: side}} dict")
        if isinstance(self.side, dict) and set(self.side) - set(self.targets):
            # A misspelt key would otherwise silently leave that target on the output side.
            raise bad("side", self.side, f"a dict keyed by the targets {self.targets}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise bad("parametrization", self.parametrization, ", ".join(PARAMETRIZATIONS))
        if isinstance(self.decay_to_one, bool) or not isinstance(self.decay_to_one, (int, float)) \
                or not self.decay_to_one >= 0:
            raise bad("decay_to_one", self.decay_to_one, "a number >= 0 (0 disables the penalty)")

    def attach(self, model: nn.Module) -> nn.Module:
        if self.absorb_each_stage or not gain_modules(model):
            apply_gain(model, self.targets, self.side, self.parametrization)
        return model  # kept across stages: train the same scales further

    def absorb(self, model: nn.Module) -> nn.Module:
        if not self.absorb_each_stage:
            return model  # evaluated through the wrappers: the same function as absorbed
        absorb_gain(model)
        for p in model.parameters():
            p.requires_grad_(True)  # leave the model as loaded: plain, nothing frozen
        return model

    def effective_weight(self, module: nn.Module) -> torch.Tensor:
        return effective_weight(module)  # the scale folded in, while the model is still wrapped

    def trainable_parameters(self, model):
        # Keys "<module>.scale" (plain) or "<module>.log_scale" (exp): a stage saved under one
        # parametrization does not silently replay under the other.
        return {f"{n}.{m.param_name}": m.param for n, m in gain_modules(model).items()}

    def regularization(self, model: nn.Module) -> torch.Tensor | None:
        """``decay_to_one * sum((s - 1)^2)`` over every scale of ``model``, or None when off."""
        if not self.decay_to_one:
            return None
        scales = [m.gain() for m in gain_modules(model).values()]
        if not scales:
            return None
        return self.decay_to_one * sum(((s - 1) ** 2).sum() for s in scales)


# gain_ffn is gain with a different default target list; registering it keeps
# `method=gain_ffn` a name the registry knows even without its YAML.
@register("gain_ffn")
class GainFFN(Gain):
    def __init__(self, targets=("attn_out", "ffn_down"), **options):
        super().__init__(targets, **options)
