"""Loss along the straight line between the weights before and after a stage (the paper's Figure 3).

For every alpha the changed weights are set to::

    W(alpha) = W_before + alpha * (W_after - W_before)        alpha = 0: before, 1: after

(alpha < 0 or > 1 extrapolates). Since it moves plain weights, it works for every method once the
stage is absorbed (GAIN folded, LoRA merged, full FT as is): the caller passes the tensors that
changed, from two snapshots of the plain model::

    before = snapshot(model)                   # plain model, before the stage
    ...attach, train, absorb...
    after_all = snapshot(model)
    names = changed_tensors(before, after_all)
    rows = interpolate(model, {n: before[n] for n in names}, {n: after_all[n] for n in names},
                       [0, 0.25, 0.5, 0.75, 1], evaluate)

Names are ``model.state_dict()`` keys (parameters and persistent buffers; tied weights appear
under each of their names and are set consistently).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn as nn
from torch import Tensor

Evaluate = Callable[[nn.Module], list[dict]]


def snapshot(model: nn.Module, names: Iterable[str] | None = None,
             device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Copies of ``model.state_dict()`` tensors (all, or ``names``) on ``device``.

    Copies, not references: absorb / merge / the optimiser change the live tensors in place.
    """
    state = model.state_dict()
    keys = state.keys() if names is None else names
    return {n: state[n].detach().to(device, copy=True) for n in keys}


def changed_tensors(before_state: dict[str, Tensor], after_state: dict[str, Tensor]) -> list[str]:
    """Names present in both states whose values differ (bitwise), in ``after_state`` order.

    A shape change raises: interpolation needs matching shapes. Names in only one state are
    ignored (a method that adds or drops tensors is not a weight interpolation).
    """
    names = []
    for name, after in after_state.items():
        if name not in before_state:
            continue
        before = before_state[name]
        if before.shape != after.shape:
            raise ValueError(f"{name}: shape changed {tuple(before.shape)} -> {tuple(after.shape)}")
        if not torch.equal(before, after.to(before.device, before.dtype)):
            names.append(name)
    return names


def live_tensors(model: nn.Module, names: Iterable[str]) -> dict[str, Tensor]:
    """The model's own tensors (parameters / buffers) for ``names``, to write into in place."""
    state = model.state_dict(keep_vars=True)
    missing = [n for n in names if n not in state]
    if missing:
        raise KeyError(f"not in the model's state_dict: {missing[:3]}")
    return {n: state[n] for n in names}


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    # Mix in at least fp32: a bf16 difference of two nearby weights loses most of its bits.
    return torch.promote_types(dtype, torch.float32)


def _check_same(live: dict[str, Tensor], **states: dict[str, Tensor]) -> None:
    for label, state in states.items():
        for name, value in state.items():
            if value.shape != live[name].shape:
                raise ValueError(f"{label}[{name!r}] has shape {tuple(value.shape)}, "
                                 f"the model {tuple(live[name].shape)}")


def interpolate(model: nn.Module, before: dict[str, Tensor], after: dict[str, Tensor],
                alphas: Iterable[float], evaluate: Evaluate) -> list[dict]:
    """Evaluate the model at ``before + alpha * (after - before)`` for every alpha.

    ``before`` / ``after``: the same names (state_dict keys), the tensors that changed; the model
    is assumed to hold ``after`` (it is left holding exactly ``after``, also if ``evaluate``
    raises). ``evaluate(model) -> rows``; every row is returned as a copy with ``"alpha"`` added.
    The mix is ``torch.lerp`` in at least fp32, exact at alpha = 0 and 1, cast to each tensor's
    dtype.
    """
    if set(before) != set(after):
        raise ValueError(f"before and after must name the same tensors; differ on "
                         f"{sorted(set(before) ^ set(after))[:3]}")
    live = live_tensors(model, after)
    _check_same(live, before=before, after=after)
    rows = []
    try:
        for alpha in alphas:
            with torch.no_grad():
                for name, target in live.items():
                    dtype = work_dtype(target.dtype)
                    b = before[name].to(target.device, dtype)
                    a = after[name].to(target.device, dtype)
                    target.copy_(torch.lerp(b, a, float(alpha)))
            rows += [{**row, "alpha": float(alpha)} for row in evaluate(model)]
    finally:
        with torch.no_grad():
            for name, target in live.items():
                target.copy_(after[name])
    return rows
