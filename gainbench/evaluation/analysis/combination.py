"""Combining two stages' updates on a grid of strengths (the paper's Figure 4).

Additive (any absorbed method: LoRA merged, full FT; task arithmetic)::

    W(a, b) = W_base + a * dW_A + b * dW_B            dW_X = W_after_X - W_base   (task_vector)

Multiplicative (GAIN). A GAIN stage changes a weight as ``W <- diag(s) W`` (output side), so two
stages compose as a product of scales, ``diag(s_B) diag(s_A) W = diag(s_A * s_B) W``, not as a sum
of weight deltas. The natural "a times update A" is therefore ``s_A^a`` (a = 0: identity, a = 1:
the stage, a = 2: the stage twice, a = 1/2: half-way in log space), and the grid is::

    W(a, b) = diag(s_A^a * s_B^b) W_base              (output side; Conv1D [in, out]: columns)
    b(a, b) = s_A^a * s_B^b * b_base                  (output side only; input side leaves b)

so that (1, 1) is exactly "absorb A, then absorb B". (Additive deltas of the two absorbed GAIN
stages would give ``W + (s_A - 1) W + (s_B - 1) W``, missing the cross term ``(s_A-1)(s_B-1) W``.)

Both grids write plain weights in place, call ``evaluate(model) -> rows`` at every point, tag
each row with ``a`` and ``b`` and leave the model holding ``base`` again (also on an exception).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
from torch import Tensor
from transformers.pytorch_utils import Conv1D

from gainbench.evaluation.analysis.interpolation import Evaluate, _check_same, live_tensors, work_dtype


def task_vector(before: dict[str, Tensor], after: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{name: after - before}`` in at least fp32, for the names in ``after``."""
    return {n: after[n].to(work_dtype(after[n].dtype)) - before[n].to(work_dtype(after[n].dtype))
            for n in after}


def _grid(model, base, grid_a, grid_b, evaluate, set_point) -> list[dict]:
    """Shared loop: ``set_point(a, b)`` writes the weights, then rows are tagged; base restored."""
    live = live_tensors(model, base)
    _check_same(live, base=base)
    rows = []
    try:
        for a in grid_a:
            for b in grid_b:
                with torch.no_grad():
                    set_point(live, float(a), float(b))
                rows += [{**row, "a": float(a), "b": float(b)} for row in evaluate(model)]
    finally:
        with torch.no_grad():
            for name, target in live.items():
                target.copy_(base[name])
    return rows


def combine_grid(model: nn.Module, base: dict[str, Tensor], delta_a: dict[str, Tensor],
                 delta_b: dict[str, Tensor], grid_a: Iterable[float], grid_b: Iterable[float],
                 evaluate: Evaluate) -> list[dict]:
    """Evaluate ``base + a * delta_a + b * delta_b`` for every (a, b) in ``grid_a x grid_b``.

    Keys are state_dict names; ``base`` must hold every name of either delta (a name missing from
    one delta counts as a zero delta there; names only in ``base`` are just restored). Sums in at
    least fp32, cast to each tensor's dtype; (0, 0) is exactly ``base``. The model is left
    holding ``base``.
    """
    if set(delta_a) - set(base) or set(delta_b) - set(base):
        raise KeyError(f"deltas name tensors missing from base: "
                       f"{sorted((set(delta_a) | set(delta_b)) - set(base))[:3]}")
    live = live_tensors(model, base)
    _check_same(live, delta_a=delta_a, delta_b=delta_b)

    def set_point(live, a, b):
        for name, target in live.items():
            w = base[name].to(target.device, work_dtype(target.dtype))
            for coeff, delta in ((a, delta_a), (b, delta_b)):
                if name in delta and coeff != 0.0:   # skip: 0 * inf would be nan
                    w = w + coeff * delta[name].to(w.device, w.dtype)
            target.copy_(w)

    return _grid(model, base, grid_a, grid_b, evaluate, set_point)


def combine_gain_scales(s_a: Tensor, s_b: Tensor, a: float, b: float) -> Tensor:
    """``s_a**a * s_b**b`` (elementwise, fp32 or wider): GAIN's "a times A plus b times B".

    Fractional or negative powers need positive scales (true under ``parametrization: exp``
    and, in practice, for plain scales near 1); a non-positive scale then raises.
    """
    def power(s: Tensor, e: float) -> Tensor:
        s = s.to(work_dtype(s.dtype))
        if e != int(e) or e < 0:
            if (s <= 0).any():
                raise ValueError(f"scale has non-positive entries; s**{e} is undefined")
        return s.pow(e)
    return power(s_a, a) * power(s_b, b)


def scales_from_stage_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{module_name: s}`` from a GAIN stage state (``<module>.scale`` = s, ``<module>.log_scale``
    = log s, as ``Gain.stage_state`` saves them)."""
    scales = {}
    for key, value in state.items():
        module, _, kind = key.rpartition(".")
        if kind == "scale":
            scales[module] = value.float()
        elif kind == "log_scale":
            scales[module] = value.float().exp()
        else:
            raise KeyError(f"{key!r} is not a GAIN scale (<module>.scale or <module>.log_scale)")
    return scales


def gain_grid(model: nn.Module, base: dict[str, Tensor], scales_a: dict[str, Tensor],
              scales_b: dict[str, Tensor], grid_a: Iterable[float], grid_b: Iterable[float],
              evaluate: Evaluate, layout: str | dict[str, str] | None = None,
              side: str | dict[str, str] = "output") -> list[dict]:
    """Evaluate GAIN's multiplicative combination ``diag(s_A^a s_B^b) W_base`` on a grid.

    ``scales_a`` / ``scales_b``: ``{module_name: s}`` (see :func:`scales_from_stage_state`); a
    module missing from one counts as s = 1 there. ``base``: state_dict tensors holding at least
    ``<module>.weight`` of every scaled module, and ``<module>.bias`` where the module has one
    (output side scales it too). ``layout``: ``"linear"`` ([out, in]) or ``"conv1d"`` (GPT-2,
    [in, out]) for all modules, a ``{module: layout}`` dict, or None to read it from the model's
    modules. ``side``: ``"output"`` (default; scale rows of [out, in]) or ``"input"`` (columns;
    bias unchanged), or a ``{module: side}`` dict. The model is left holding ``base``.
    """
    modules = sorted(set(scales_a) | set(scales_b))
    for m in modules:
        if f"{m}.weight" not in base:
            raise KeyError(f"base has no {m}.weight for scaled module {m!r}")

    def layout_of(m: str) -> str:
        if layout is None:
            return "conv1d" if isinstance(model.get_submodule(m), Conv1D) else "linear"
        return layout if isinstance(layout, str) else layout.get(m, "linear")

    def side_of(m: str) -> str:
        return side if isinstance(side, str) else side.get(m, "output")

    # Which dim of the stored weight the scale runs along: output = rows of [out, in].
    dims = {}
    for m in modules:
        if layout_of(m) not in ("linear", "conv1d") or side_of(m) not in ("output", "input"):
            raise ValueError(f"{m}: layout must be linear|conv1d and side output|input")
        out_dim = 0 if layout_of(m) == "linear" else 1
        dims[m] = out_dim if side_of(m) == "output" else 1 - out_dim
        if side_of(m) == "output" and getattr(model.get_submodule(m), "bias", None) is not None \
                and f"{m}.bias" not in base:
            raise KeyError(f"base has no {m}.bias: output-side GAIN scales the bias too")

    def set_point(live, a, b):
        for m in modules:
            w = live[f"{m}.weight"]
            ones = torch.ones(w.shape[dims[m]])
            s = combine_gain_scales(scales_a.get(m, ones), scales_b.get(m, ones), a, b).to(w.device)
            shape = [1, 1]
            shape[dims[m]] = -1
            w.copy_(base[f"{m}.weight"].to(w.device, work_dtype(w.dtype)) * s.view(shape))
            if side_of(m) == "output" and f"{m}.bias" in base:   # b <- s * b, as absorption does
                bias = live[f"{m}.bias"]
                bias.copy_(base[f"{m}.bias"].to(bias.device, work_dtype(bias.dtype)) * s)

    return _grid(model, base, grid_a, grid_b, evaluate, set_point)
